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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from core.config import MaskConfig
from core.device import autocast
from core.masking import (
    TRAIN_CURVE_KEYS,
    MaskedModel,
    MaskError,
    MaskResult,
    Split,
    _batches,
    _StraightThrough,
    accuracy,
    check_finite_weights,
    check_settings,
    convergence,
    is_converged,
    log_steps,
    lr_factor,
    noise_factor,
    snapshot_parameter,
    snapshot_steps,
)
from core.progress import bar as progress_bar


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
    if not members:
        raise MaskError("train_group: no members")
    if cfg.estimator != "straight_through" or cfg.prune_n or cfg.clamp:
        raise MaskError("masks.group > 1 trains straight-through masks only (no hard concrete, "
                        "prune_n or clamp yet): set masks.group: 1")
    for m in members:
        check_settings(cfg, m.alpha, steps, len(m.train))
    check_finite_weights(model)
    k = len(members)
    # one masked model per member (its curve evaluations, read-out, snapshots); their logits
    # are rows of one stacked leaf tensor
    masked = [MaskedModel(model, cfg.include, cfg.init, mask_norm=cfg.mask_norm, device=device,
                          precision=precision) for _ in members]
    base = masked[0]
    dev = base.device
    logits = torch.full((k, base.numel), float(cfg.init), device=dev, requires_grad=True)
    for i, mm in enumerate(masked):
        mm.flat = logits[i]
    alphas = torch.tensor([float(m.alpha) for m in members], device=dev)
    snap_name = snapshot_parameter(base.names, base.shapes, cfg.snapshot_param)
    logged, snaps = set(log_steps(steps, cfg.log_every)), snapshot_steps(
        steps, cfg.log_every, cfg.snapshots)
    gens = [torch.Generator().manual_seed(int(m.seed)) for m in members]
    batches = [_batches(len(m.train), cfg.batch_size, g) for m, g in zip(members, gens)]
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, steps, cfg.lr_anneal))
    curves: list[dict[str, list]] = [{key: [] for key in TRAIN_CURVE_KEYS} for _ in members]
    snap_logits: list[list[torch.Tensor]] = [[] for _ in members]

    def log(step: int, ces: Sequence[float]) -> None:
        for i, (mm, m, curve) in enumerate(zip(masked, members, curves)):
            mask = mm.binary(cfg.readout)
            reg = m.alpha * float(mm.flat.detach().double().sum())
            curve["step"].append(step)
            curve["ce"].append(ces[i])
            curve["reg"].append(reg)
            curve["loss"].append(ces[i] + reg)
            curve["task_acc"].append(accuracy(mm.forward_fn(mask), m.curve, cfg.batch_size,
                                              dev))
            curve["density"].append(100.0 * sum(int(v.sum()) for v in mask.values())
                                    / mm.numel)
            if step in snaps:
                snap_logits[i].append(mm.logits[snap_name].to("cpu").clone(
                    memory_format=torch.contiguous_format))

    def forward(eff: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base.net, eff, (x,))

    grouped = vmap(forward) if k > 1 else None
    windows: list[list[float]] = [[] for _ in members]
    bar = range(steps)
    if progress:
        bar = progress_bar(iterable=bar, desc=f"{k} masks", unit="step")
    for t in bar:
        xs, ys = zip(*(m.train.batch(next(b), dev) for m, b in zip(members, batches)))
        opt.zero_grad(set_to_none=True)
        scale = noise_factor(t, steps, cfg.noise_anneal)
        ce = logits.new_zeros(k)
        for c in range(cfg.n_samples):
            xc = torch.stack([x.chunk(cfg.n_samples)[c] for x in xs])
            yc = torch.stack([y.chunk(cfg.n_samples)[c] for y in ys])
            noise = torch.stack([mm.noise(g) for mm, g in zip(masked, gens)])
            hard = _StraightThrough.apply(logits, noise, float(scale), float(cfg.tau))
            eff = base._views(base.flat_weights * hard)
            for n, shift in base.shifts.items():
                eff[n] = eff[n] + shift
            with autocast(dev, precision):
                if grouped is None:
                    out = forward({n: v[0] for n, v in eff.items()}, xc[0]).unsqueeze(0)
                else:
                    out = grouped(eff, xc)
            out = out.float()
            ce = ce + torch.stack([F.cross_entropy(o, y, reduction="sum")
                                   for o, y in zip(out, yc)])
        ce = ce / torch.tensor([len(y) for y in ys], device=dev)
        loss = ce + alphas * logits.sum(1)
        loss.sum().backward()
        ce_values, loss_values = ce.tolist(), loss.tolist()
        for i, (m, value) in enumerate(zip(members, loss_values)):
            if not math.isfinite(value):
                raise MaskError(f"mask training, group member {i} (alpha {m.alpha!r}, seed "
                                f"{m.seed}): non-finite loss at step {t} (cross-entropy "
                                f"{ce_values[i]!r}); check the checkpoint, masks.init, "
                                "masks.lr and alpha")
        if t == 0:
            log(0, ce_values)
        opt.step()
        sched.step()
        finite = torch.isfinite(logits.detach()).all(1).tolist()
        if not all(finite):
            i = finite.index(False)
            raise MaskError(f"mask training, group member {i} (alpha {members[i].alpha!r}, "
                            f"seed {members[i].seed}): non-finite mask logits after step "
                            f"{t + 1} (masks.lr {cfg.lr!r})")
        for w, value in zip(windows, ce_values):
            w.append(value)
        if t + 1 in logged:
            log(t + 1, [float(np.mean(w)) for w in windows])
            windows = [[] for _ in members]
    results = []
    for mm, curve, snap in zip(masked, curves, snap_logits):
        conv = convergence(curve, cfg.converge_window)
        out = {n: s.to("cpu").clone(memory_format=torch.contiguous_format)
               for n, s in mm.logits.items()}
        results.append(MaskResult(mm.names, mm.shapes, mm.fingerprint, out,
                                  mm.binary(cfg.readout), curve,
                                  {"param": snap_name, "steps": snaps,
                                   "logits": torch.stack(snap)},
                                  conv, is_converged(conv, cfg)))
    return results
