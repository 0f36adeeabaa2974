"""Mask training: the run's result and curve, its convergence, the rate and noise schedules,
the hard concrete sample and the regulariser, and :func:`train_mask` in its steps (shared with
:mod:`core.maskgroup`: :class:`CurveLog`, :func:`optimiser`, :func:`step_range`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.config import MaskConfig
from core.formats.masks import MaskError, degenerate_reason
from core.masking.inert import prune_inert
from core.masking.measure import Split, accuracy
from core.masking.model import (
    MaskedModel,
    Masks,
    check_finite_weights,
    flat_logits,
    snapshot_parameter,
)
from core.progress import bar as progress_bar

TRAIN_CURVE_KEYS = ("step", "loss", "ce", "reg", "task_acc", "density")


@dataclass
class MaskResult:
    """What one mask-training run produced (before the final evaluation); tensors on the CPU."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    fingerprint: str
    logits: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    curve: dict[str, list]
    snapshots: dict[str, Any] = field(default_factory=dict)
    convergence: dict[str, float] = field(default_factory=dict)
    converged: bool = False
    pruned: int = 0  # inert weights dropped from the read-out (masks.prune_n)

    @property
    def degenerate(self) -> str:
        """Why the run never trained (:func:`degenerate_reason`); empty when it did."""
        return degenerate_reason(self.convergence)


def log_steps(steps: int, every: int) -> list[int]:
    """Steps at which the curve is logged: 0, every, 2 * every, ..., and ``steps``."""
    return sorted({*range(0, steps + 1, every), steps})


def snapshot_steps(steps: int, every: int, count: int) -> list[int]:
    """``count`` logged steps evenly spread from 0 to ``steps`` (fewer if fewer are logged)."""
    logged = log_steps(steps, every)
    idx = np.unique(np.round(np.linspace(0, len(logged) - 1, min(count, len(logged)))))
    return [logged[int(i)] for i in idx]


def convergence(curve: dict[str, list], window: float = 0.2, *, moved: float | None = None,
                spread: float | None = None) -> dict[str, float]:
    """How much the read-out density and the masked task accuracy (points) still move over
    the last ``window`` of the run, and whether the run trained at all: ``density_end`` (the
    read-out density at the end, percent) and, when given, ``moved`` (the largest change of
    a logit from ``masks.init``) and ``spread`` (largest minus smallest final logit). A run
    whose curve is flat because nothing moved is not "settled": :func:`degenerate_reason`.

    The window runs from the last logged step at or before ``(1 - window) * steps`` to the
    end (so it holds at least two logged steps); the change is the least-squares trend over
    it, ``|slope| * (window_end - window_start)``: with two points their difference, with
    more a movement estimate that the +-1-problem jitter of a small curve set does not
    dominate (the accuracy of 100 problems moves in steps of 1 point).
    """
    steps = list(curve["step"])
    if len(steps) < 2:
        raise MaskError("convergence: the curve has fewer than 2 logged steps")
    start_at = (1.0 - window) * steps[-1]
    first = max(i for i, s in enumerate(steps) if s <= start_at) if steps[0] <= start_at else 0
    x = np.asarray(steps[first:], float)
    out = {"window_start": float(x[0]), "window_end": float(x[-1])}
    for key, name in (("density", "density_change"), ("task_acc", "acc_change")):
        y = np.asarray(curve[key][first:], float)
        slope = np.polyfit(x, y, 1)[0] if len(x) > 2 else (y[-1] - y[0]) / (x[-1] - x[0])
        out[name] = float(abs(slope) * (x[-1] - x[0]))
    out["density_end"] = float(curve["density"][-1])
    if moved is not None:
        out["moved"] = float(moved)
    if spread is not None:
        out["spread"] = float(spread)
    return out


def is_converged(conv: dict[str, float], cfg: MaskConfig) -> bool:
    """The convergence rule: both changes within ``masks.converge_density`` / ``converge_acc``,
    and the run trained (not :func:`degenerate_reason`: a run that never moved is flat, not
    settled)."""
    return bool(conv["density_change"] <= cfg.converge_density
                and conv["acc_change"] <= cfg.converge_acc
                and not degenerate_reason(conv))


def anneal_factor(step: int, steps: int, anneal: float) -> float:
    """The mask learning rate of ``step`` (0-based) as a fraction of ``masks.lr``: 1, then
    over the last ``anneal`` fraction of the run a cosine from 1 to 0 (after the last step).
    With a constant rate the logits of weights near the read-out threshold keep crossing 0
    (SCL: the read-out task accuracy swings 54-76% between logged steps at steps 200-400);
    annealing lets the read-out settle, the constant part lets weak but consistent
    gradients (harmful weights) act."""
    start = (1.0 - anneal) * steps
    if anneal <= 0 or step < start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - start) / (steps - start)))


def noise_factor(step: int, steps: int, anneal: float) -> float:
    """The scale of the sampling noise at ``step``: 1, then over the last ``anneal`` fraction
    of the run a linear fall to 0, reached at the end of its first half (the rest trains the
    deterministic read-out's mask, so the read-out is what was optimised)."""
    start = (1.0 - anneal) * steps
    if anneal <= 0 or step < start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / (0.5 * anneal * steps))


def endless_batches(n: int, size: int, generator: torch.Generator):
    """Endless batches of indices: a fresh permutation per epoch, the incomplete rest dropped."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - size + 1, size):
            yield perm[i:i + size]


# Louizos et al.'s stretch of the hard concrete distribution (NeuroSurgeon's defaults too)
HC_GAMMA, HC_ZETA = -0.1, 1.1


def sample_hard_concrete(masked: MaskedModel, generator: torch.Generator, tau: float,
                         scale: float = 1.0) -> Masks:
    """One hard concrete mask (Louizos et al., ICLR 2018): ``z = clamp(sigmoid((s + scale *
    l) / tau) * (zeta - gamma) + gamma, 0, 1)`` with logistic noise ``l``: exact zeros and ones
    with a gradient between them (no straight-through estimate). The noise is
    :meth:`MaskedModel.noise` (the same draws on every device)."""
    soft = torch.sigmoid((masked.flat + scale * masked.noise(generator)) / tau)
    z = (soft * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)
    out = Masks(masked.views(z))
    out.flat = z
    return out


def penalty(flat: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """The regulariser per unit alpha: ``sum(s)`` (Csordas, straight-through) or the hard
    concrete's expected number of kept weights, ``sum(sigmoid(s - tau * log(-gamma / zeta)))``."""
    if cfg.estimator == "hard_concrete":
        return torch.sigmoid(flat - cfg.tau * math.log(-HC_GAMMA / HC_ZETA)).sum()
    return flat.sum()


def check_settings(cfg: MaskConfig, alpha: float, steps: int, n_train: int) -> None:
    """One clear error for run settings the method cannot use (non-finite numbers included:
    a NaN init would give an empty mask and exit 0)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise MaskError(f"alpha: expected a finite number > 0, got {alpha!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise MaskError(f"steps: expected an integer > 0, got {steps!r}")
    for key in ("init", "lr", "tau", "readout"):
        value = getattr(cfg, key)
        free = key in ("init", "readout")
        if not math.isfinite(value) or (not free and value <= 0):
            raise MaskError(f"masks.{key}: expected a finite number{'' if free else ' > 0'}"
                            f", got {value!r}")
    if not 0.0 <= cfg.noise_anneal <= 1.0:
        raise MaskError(f"masks.noise_anneal: expected a fraction in [0, 1], got "
                        f"{cfg.noise_anneal!r}")
    if n_train < cfg.batch_size:
        raise MaskError(f"masks.batch_size ({cfg.batch_size}) exceeds the {n_train} training "
                        "problems of the task")


class CurveLog:
    """One run's curve (``masks.log_every``) and logit snapshots (``masks.snapshots``), and the
    training cross-entropies since the last logged step: see :func:`train_mask` for what a
    point holds."""

    def __init__(self, masked: MaskedModel, cfg: MaskConfig, alpha: float, data: Split,
                 steps: int):
        self.masked, self.cfg, self.alpha, self.data = masked, cfg, alpha, data
        self.param = snapshot_parameter(masked.names, masked.shapes, cfg.snapshot_param)
        self.logged = set(log_steps(steps, cfg.log_every))
        self.snaps = snapshot_steps(steps, cfg.log_every, cfg.snapshots)
        self.curve: dict[str, list] = {k: [] for k in TRAIN_CURVE_KEYS}
        self.snap_logits: list[torch.Tensor] = []
        self.window: list[float] = []

    def log(self, step: int, ce: float) -> None:
        """The point of ``step`` with the training cross-entropy ``ce``."""
        masked, cfg, curve = self.masked, self.cfg, self.curve
        mask = masked.binary(cfg.readout)
        reg = self.alpha * float(penalty(masked.flat.detach().double(), cfg))
        curve["step"].append(step)
        curve["ce"].append(ce)
        curve["reg"].append(reg)
        curve["loss"].append(ce + reg)
        curve["task_acc"].append(accuracy(masked.forward_fn(mask), self.data, cfg.batch_size,
                                          masked.device))
        curve["density"].append(100.0 * sum(int(m.sum()) for m in mask.values()) / masked.numel)
        if step in self.snaps:
            self.snap_logits.append(masked.logits[self.param].to("cpu").clone(
                memory_format=torch.contiguous_format))

    def done(self, t: int, ce: float) -> None:
        """Step ``t`` (0-based) updated the logits: its cross-entropy joins the window, which
        becomes the point of step ``t + 1`` when that step is logged."""
        self.window.append(ce)
        if t + 1 in self.logged:
            self.log(t + 1, float(np.mean(self.window)))
            self.window = []

    def result(self, conv: dict[str, float], mask: dict[str, torch.Tensor],
               pruned: int = 0) -> MaskResult:
        """The run's :class:`MaskResult`: its final logits (CPU, standard layout), the
        read-out ``mask``, the curve and snapshots, the convergence ``conv`` and its flag."""
        masked = self.masked
        logits = {n: s.to("cpu").clone(memory_format=torch.contiguous_format)
                  for n, s in masked.logits.items()}
        return MaskResult(masked.names, masked.shapes, masked.fingerprint, logits, mask,
                          self.curve, {"param": self.param, "steps": self.snaps,
                                       "logits": torch.stack(self.snap_logits)},
                          conv, is_converged(conv, self.cfg), pruned)


def optimiser(logits: torch.Tensor, cfg: MaskConfig, steps: int
              ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam on the mask logits at ``masks.lr``, scheduled by :func:`anneal_factor`."""
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    return opt, torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: anneal_factor(t, steps, cfg.lr_anneal))


def step_range(steps: int, progress: bool, desc: str) -> Iterable[int]:
    """The steps ``0 .. steps - 1``, as a progress bar with ``progress``."""
    if progress:
        return progress_bar(iterable=range(steps), desc=desc, unit="step")
    return range(steps)


def train_mask(model: nn.Module, cfg: MaskConfig, train: Split, curve_data: Split, *,
               alpha: float, seed: int, steps: int, progress: bool = False,
               device: torch.device | str | None = None, precision: str = "fp32",
               start: MaskResult | None = None) -> MaskResult:
    """Train one mask of ``model`` on ``train``; log the curve on ``curve_data``.

    ``start``: continue that run (its final logits are the initial ones; the continuation
    test of :mod:`core.validate` sets the schedule).

    Loss: ``ce + alpha * penalty(s)``, ``ce`` the batch-mean cross-entropy, the penalty of
    ``masks.estimator`` (:func:`penalty`; :mod:`core.masking` relates alpha to Csordas' beta).

    Deterministic for a given seed (batches and noise come from one seeded CPU generator).
    Curve (``masks.log_every``): ``ce`` = mean training cross-entropy since the previous log
    (step 0: the first batch, before any update), ``reg`` = ``alpha * sum(s)`` at the log
    (unbounded below, so ``loss = ce + reg`` cannot show convergence; ``ce`` and ``density``
    can); ``task_acc`` = percent of ``curve_data`` solved by model * read-out mask (the
    inverted mask is evaluated once, in ``evals.nc``: on the curve it cost ~a quarter of a
    run and nothing read it); ``density`` = percent of masked weights kept
    by the read-out. The result carries :func:`convergence` and the ``converged`` flag.
    Stops with :class:`MaskError` naming the step and the quantity when the loss or the
    logits become non-finite.
    """
    check_settings(cfg, alpha, steps, len(train))
    check_finite_weights(model)
    masked = MaskedModel(model, cfg.include, cfg.init, mask_norm=cfg.mask_norm, device=device,
                         precision=precision, names=None if start is None else start.names)
    if start is not None:
        with torch.no_grad():
            masked.flat.copy_(flat_logits(masked, start.logits))
    log = CurveLog(masked, cfg, alpha, curve_data, steps)
    gen = torch.Generator().manual_seed(int(seed))
    opt, sched = optimiser(masked.flat, cfg, steps)
    batches = endless_batches(len(train), cfg.batch_size, gen)
    sampler = (masked.sample if cfg.estimator == "straight_through" else
               lambda *a: sample_hard_concrete(masked, *a))
    for t in step_range(steps, progress, "mask"):
        x, y = train.batch(next(batches), masked.device)
        opt.zero_grad(set_to_none=True)
        sample = partial(sampler, gen, cfg.tau, noise_factor(t, steps, cfg.noise_anneal))
        ce = _backward(masked, cfg, alpha, sample, x, y, t)
        if t == 0:
            log.log(0, ce)
        _update(masked, cfg, alpha, opt, sched, t)
        log.done(t, ce)
    return _finish(masked, cfg, log, train, seed)


def _backward(masked: MaskedModel, cfg: MaskConfig, alpha: float, sample: Callable[[], Masks],
              x: torch.Tensor, y: torch.Tensor, t: int) -> float:
    """The gradient of step ``t``'s loss on the batch ``x, y``, each of its ``masks.n_samples``
    chunks under its own ``sample()``; returns the batch-mean cross-entropy."""
    ce = x.new_zeros((), dtype=torch.float32)
    for xc, yc in zip(x.chunk(cfg.n_samples), y.chunk(cfg.n_samples)):
        out = masked(xc, sample())
        ce = ce + F.cross_entropy(out, yc, reduction="sum")
    ce = ce / len(y)
    loss = ce + alpha * penalty(masked.flat, cfg)
    loss.backward()
    ce_value, loss_value = ce.item(), loss.item()
    if not math.isfinite(loss_value):
        raise MaskError(f"mask training: non-finite loss at step {t} (cross-entropy "
                        f"{ce_value!r}, regulariser {alpha * float(penalty(masked.flat.detach(), cfg))!r}); "
                        "check the checkpoint, masks.init, masks.lr and alpha")
    return ce_value


def _update(masked: MaskedModel, cfg: MaskConfig, alpha: float, opt: torch.optim.Adam,
            sched: torch.optim.lr_scheduler.LambdaLR, t: int) -> None:
    """Step ``t``'s update of the logits (then checked finite and, with ``masks.clamp``,
    clamped) and of the learning rate."""
    try:
        opt.step()
    except RuntimeError as err:  # e.g. a rate torch cannot hold in float32
        raise MaskError(f"mask training: the optimiser step {t} failed with masks.lr "
                        f"{cfg.lr!r} ({err}); use a masks.lr in its plausible range "
                        "(core/config/sections.py)") from None
    sched.step()
    if not bool(torch.isfinite(masked.flat).all()):
        raise MaskError(f"mask training: non-finite mask logits after step {t + 1} "
                        f"(masks.lr {cfg.lr!r}, alpha {alpha!r})")
    if cfg.clamp > 0:
        with torch.no_grad():
            masked.flat.clamp_(-cfg.clamp, cfg.clamp)


def _finish(masked: MaskedModel, cfg: MaskConfig, log: CurveLog, train: Split,
            seed: int) -> MaskResult:
    """The trained run's result: the convergence of its curve (with how far the logits moved
    from ``masks.init`` and how far they spread), the read-out less its inert weights
    (``masks.prune_n``)."""
    final = masked.flat.detach()
    conv = convergence(log.curve, cfg.converge_window, spread=float(final.max() - final.min()),
                       moved=float((final - cfg.init).abs().max()))
    mask = masked.binary(cfg.readout)
    pruned = 0
    if cfg.prune_n > 0:
        mask, pruned = prune_inert(masked, mask, train.head(cfg.prune_n), batch_size=64,
                                   seed=seed)
    return log.result(conv, mask, pruned)
