"""Train several masks of one checkpoint in one step (``masks.group`` > 1).

A group of K members, each with its own training split, curve split, alpha and seed, trains
as K :func:`core.masking.train_mask` runs would, in lockstep: one stacked logit tensor
``[K, N]`` under one Adam (element-wise, so each row moves as its own optimiser would move
it), each member's batches and noise from its own seeded generator in the order a single run
draws them, and one forward + backward for all members: :func:`torch.func.vmap` of
``functional_call`` over the stacked masked weights and the stacked batches (torch turns the
convolutions into grouped ones and the linear layers into batched products). Each member's
curve, snapshots, convergence flag and read-out come out as a
:class:`core.masking.MaskResult`, as from ``train_mask``.

Same seeds, same masks: a member's sampled masks and logits equal its sequential run's up to
float rounding (the batched kernels sum in another order; tests/test_maskgroup.py pins it);
K = 1 is the sequential computation itself.

What it is for: one launch per step for K masks where a step is bound by kernel launches (a
GPU). On a CPU the work is the same arithmetic in bigger kernels, and grouped convolutions
are slower there than K ordinary ones (``benchmarks/masking.py`` measures problems/s at
K = 1, 4, 16), so ``masks.group`` is 1 in the CPU profiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from core.config import MaskConfig
from core.device import autocast
from core.formats.masks import MaskError
from core.masking.measure import Split
from core.masking.model import MaskedModel, StraightThrough, check_finite_weights
from core.masking.training import (
    CurveLog,
    MaskResult,
    check_settings,
    convergence,
    endless_batches,
    noise_factor,
    optimiser,
    step_range,
)


@dataclass
class Member:
    """One mask of a group: its training problems, its curve problems, alpha and seed."""

    train: Split
    curve: Split
    alpha: float
    seed: int


def train_group(model: nn.Module, cfg: MaskConfig, members: Sequence[Member], *, steps: int,
                progress: bool = False, device: torch.device | str | None = None,
                precision: str = "fp32") -> list[MaskResult]:
    """Train one mask per member of ``model`` in lockstep; one :class:`MaskResult` each, as
    ``train_mask(model, cfg, m.train, m.curve, alpha=m.alpha, seed=m.seed, steps=steps)``
    would give it (within float rounding; see the module docstring). Errors name the member
    (its index, alpha and seed)."""
    _check_group(model, cfg, members, steps)
    group = _Lockstep(model, cfg, members, device, precision)
    logs = [CurveLog(mm, cfg, m.alpha, m.curve, steps) for mm, m in zip(group.masked, members)]
    gens = [torch.Generator().manual_seed(int(m.seed)) for m in members]
    batches = [endless_batches(len(m.train), cfg.batch_size, g) for m, g in zip(members, gens)]
    opt, sched = optimiser(group.logits, cfg, steps)
    for t in step_range(steps, progress, f"{len(members)} masks"):
        xs, ys = zip(*(m.train.batch(next(b), group.device) for m, b in zip(members, batches)))
        opt.zero_grad(set_to_none=True)
        ces = group.backward(xs, ys, gens, noise_factor(t, steps, cfg.noise_anneal), t)
        if t == 0:
            for log, ce in zip(logs, ces):
                log.log(0, ce)
        opt.step()
        sched.step()
        group.check_finite(t)
        for log, ce in zip(logs, ces):
            log.done(t, ce)
    return [log.result(convergence(log.curve, cfg.converge_window),
                       log.masked.binary(cfg.readout)) for log in logs]


def _check_group(model: nn.Module, cfg: MaskConfig, members: Sequence[Member],
                 steps: int) -> None:
    """One clear error for a group this module cannot train, or a member's settings
    (:func:`core.masking.training.check_settings`), or a non-finite weight of ``model``."""
    if not members:
        raise MaskError("train_group: no members")
    if cfg.estimator != "straight_through" or cfg.prune_n or cfg.clamp:
        raise MaskError("masks.group > 1 trains straight-through masks only (no hard concrete, "
                        "prune_n or clamp yet): set masks.group: 1")
    for m in members:
        check_settings(cfg, m.alpha, steps, len(m.train))
    check_finite_weights(model)


class _Lockstep:
    """The members' masked models (their curve evaluations, read-outs and snapshots), whose
    logits are the rows of one stacked leaf tensor ``logits`` [K, N], and the one forward and
    backward of a step for all members."""

    def __init__(self, model: nn.Module, cfg: MaskConfig, members: Sequence[Member],
                 device: torch.device | str | None, precision: str):
        self.cfg, self.members = cfg, members
        self.masked = [MaskedModel(model, cfg.include, cfg.init, mask_norm=cfg.mask_norm,
                                   device=device, precision=precision) for _ in members]
        self.base = self.masked[0]
        self.device = self.base.device
        k = len(members)
        self.logits = torch.full((k, self.base.numel), float(cfg.init), device=self.device,
                                 requires_grad=True)
        for i, mm in enumerate(self.masked):
            mm.flat = self.logits[i]
        self.alphas = torch.tensor([float(m.alpha) for m in members], device=self.device)
        self.grouped = vmap(self.forward) if k > 1 else None

    def forward(self, eff: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base.net, eff, (x,))

    def outputs(self, xc: torch.Tensor, noise: torch.Tensor, scale: float) -> torch.Tensor:
        """The members' outputs [K, B, ...] on their chunks ``xc`` [K, B, ...], each under its
        straight-through mask sample from its row of ``noise``."""
        base = self.base
        hard = StraightThrough.apply(self.logits, noise, float(scale), float(self.cfg.tau))
        eff = base.views(base.flat_weights * hard)
        for n, shift in base.shifts.items():
            eff[n] = eff[n] + shift
        with autocast(self.device, base.precision):
            if self.grouped is None:
                out = self.forward({n: v[0] for n, v in eff.items()}, xc[0]).unsqueeze(0)
            else:
                out = self.grouped(eff, xc)
        return out.float()

    def backward(self, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor],
                 gens: Sequence[torch.Generator], scale: float, t: int) -> list[float]:
        """The gradient of step ``t``'s losses on the members' batches ``xs, ys`` (each of
        ``masks.n_samples`` chunks under its own samples, noise from the members' ``gens``);
        returns the members' batch-mean cross-entropies."""
        n_samples = self.cfg.n_samples
        ce = self.logits.new_zeros(len(self.members))
        for c in range(n_samples):
            xc = torch.stack([x.chunk(n_samples)[c] for x in xs])
            yc = torch.stack([y.chunk(n_samples)[c] for y in ys])
            noise = torch.stack([mm.noise(g) for mm, g in zip(self.masked, gens)])
            out = self.outputs(xc, noise, scale)
            ce = ce + torch.stack([F.cross_entropy(o, y, reduction="sum")
                                   for o, y in zip(out, yc)])
        ce = ce / torch.tensor([len(y) for y in ys], device=self.device)
        loss = ce + self.alphas * self.logits.sum(1)
        loss.sum().backward()
        ce_values, loss_values = ce.tolist(), loss.tolist()
        for i, (m, value) in enumerate(zip(self.members, loss_values)):
            if not math.isfinite(value):
                raise MaskError(f"mask training, group member {i} (alpha {m.alpha!r}, seed "
                                f"{m.seed}): non-finite loss at step {t} (cross-entropy "
                                f"{ce_values[i]!r}); check the checkpoint, masks.init, "
                                "masks.lr and alpha")
        return ce_values

    def check_finite(self, t: int) -> None:
        """One clear error naming the first member whose logits are non-finite after step
        ``t``'s update."""
        finite = torch.isfinite(self.logits.detach()).all(1).tolist()
        if not all(finite):
            i = finite.index(False)
            m = self.members[i]
            raise MaskError(f"mask training, group member {i} (alpha {m.alpha!r}, "
                            f"seed {m.seed}): non-finite mask logits after step "
                            f"{t + 1} (masks.lr {self.cfg.lr!r})")
