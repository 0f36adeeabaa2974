"""Validation-accuracy milestones: when to validate next (:func:`validation_interval`), which
model to keep for a milestone (:func:`keep_for`, :func:`save_checkpoint`), the replay of a check
that jumped past one (:func:`rewind`), one validation (:func:`validate`) and the
re-initialisation of a network stuck at chance (:func:`restart`)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from core.config import Config
from core.device import to_cpu
from core.formats import training as training_log
from core.io import atomic_write_bytes, torch_bytes
from core.models import build_model, checkpoint_dict
from core.models.scl import N_CANDIDATES
from core.train.setup import Training, init_seed, make_optimizer, make_scheduler
from core.train.state import State, restore, rng_state

# A network whose best validation accuracy is below chance (100 / N_CANDIDATES) plus this many
# points has not left SCL's initial plateau (loss ln 8); see train.restart_after
CHANCE_MARGIN = 10.0


class MilestoneWarning(UserWarning):
    """A kept checkpoint's validation accuracy is off its milestone by more than the tolerance."""


# Share of the predicted steps to milestone + tolerance after which the next check comes.
# Simulated (logistic accuracy curve of the default profile's pilot, 0.1 points/step at 50%,
# plateau 89%, binomial validation noise, 200 runs, milestones 50/70/85, val_min_every 10,
# val_every 100): 0.3 with 2000 val problems kept 100/100/100% of checkpoints within +-2
# points (max error 2.0) at ~35 checks per run; with 1000, 95/98/100% (max 3.4). Adopted with
# val_n 2000.
FRACTION = 0.3


def validation_interval(history: Sequence[tuple[int, float]], milestone: float, tol: float,
                        lo: int, hi: int, noise: float = 0.0) -> int:
    """Steps until the next validation, given ``(step, accuracy)`` of the validations so far
    and ``noise``, the standard error of one validation (points).

    A least-squares line through the validations of the last ``2 * hi`` steps (a long
    baseline: over a few steps, measurement noise swamps the slope) gives the current accuracy
    and slope; the next check comes after ``FRACTION`` of the steps the line needs to reach
    ``milestone + tol`` from 2 ``noise`` above the fitted accuracy (the true one may be that
    much higher), within ``[lo, hi]``: ``lo`` with fewer than two validations, ``hi`` while
    the line rises less than ``noise`` in ``hi`` steps (a plateau just below a milestone costs
    few checks; a crossing by noise alone cannot overshoot far), and never sooner than the line
    needs to rise ``tol / 2`` (a slow climb next to a milestone then costs a few checks)."""
    if len(history) < 2:
        return lo
    pts = np.array([p for p in history if p[0] >= history[-1][0] - 2 * hi], dtype=float)
    if len(pts) < 2:
        pts = np.array(history[-2:], dtype=float)
    slope, icept = np.polyfit(pts[:, 0], pts[:, 1], 1)
    if not slope * hi > max(noise, 1e-6):  # rises less than one check's noise in hi steps
        return hi
    now = slope * pts[-1, 0] + icept
    # pessimistic distance: the true accuracy may be 2 standard errors above the fitted one
    steps = FRACTION * max(0.0, milestone + tol - now - 2 * noise) / slope
    # never sooner than the line takes to rise tol / 2: a crossing then overshoots by at most
    # about tol / 2, and a slow climb next to a milestone costs a few checks, not one per lo
    # steps (measured: checks every 10 steps on 2000 problems took 2/3 of a training run's time)
    steps = max(steps, tol / (2 * slope))
    return int(min(hi, max(lo, math.floor(steps))))


def keep_for(m: float, acc: float, previous: dict[str, Any] | None,
             tol: float) -> dict[str, Any] | None:
    """Which validation's model to keep for milestone ``m`` first crossed at accuracy
    ``acc``: None for the current one, or ``previous`` when the crossing overshoots by more
    than ``tol`` and the previous validation is closer to ``m``."""
    if acc - m > tol and previous is not None and m - previous["val_acc"] < acc - m:
        return previous
    return None


def snapshot(run: Training, st: State, acc: float) -> dict[str, Any]:
    """Everything needed to continue training from this validation (copies, on the CPU):
    the model (also the fallback checkpoint of :func:`keep_for`), optimiser, scheduler, RNG
    and the position in the data; see :func:`rewind`."""
    return to_cpu({
        "step": st.step, "epoch": st.epoch, "pos": st.pos, "val_acc": acc,
        "n_val": len(st.val_steps), "state_dict": run.model.state_dict(),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "rng": rng_state(run)}, copy=True)


def should_rewind(crossed: Sequence[float], acc: float, previous: dict[str, Any] | None,
                  step: int, tol: float) -> bool:
    """Whether a check at ``step`` with accuracy ``acc`` that crossed milestones ``crossed``
    should be replayed from ``previous`` (the last validation) with denser checks: some
    milestone is overshot by more than ``tol`` while the previous validation is more than
    ``tol`` below it (neither is an acceptable checkpoint), and more than one step lies
    between the two checks (a jump within one step cannot be resolved)."""
    if previous is None or "optimizer" not in previous or step - previous["step"] <= 1:
        return False
    return any(acc - m > tol and m - previous["val_acc"] > tol for m in crossed)


def rewind(run: Training, st: State, acc: float, milestone: float) -> None:
    """Go back to the last validation's state (:func:`snapshot`) and validate every fifth of
    the gap until the overshooting check's step. Training is deterministic, so the replay
    retraces the same steps and the dense checks find the crossing; the replaced check is
    recorded in ``st.rewinds`` (``training.nc``: ``rewind_*``) with ``milestone``, the lowest
    one it overshot."""
    prev = st.previous
    assert prev is not None
    gap = st.step - prev["step"]
    st.rewinds.append([st.step, acc, prev["step"], float(milestone)])
    live = to_cpu(prev, copy=True)  # optimizer.load_state_dict may alias the tensors it gets
    restore(run, live["state_dict"], live["optimizer"], live["scheduler"], live["rng"])
    st.fine_until = st.step
    st.step, st.epoch, st.pos = prev["step"], prev["epoch"], prev["pos"]
    for per_step in (st.loss, st.acc, st.log_epoch, st.lr):
        del per_step[st.step:]
    for per_check in (st.val_steps, st.val_acc, st.val_epoch):
        del per_check[prev["n_val"]:]
    st.fine_every = max(1, gap // 5)
    st.next_val = st.step + st.fine_every
    if run.proc.rank == 0:
        tqdm.write(f"validation at step {st.fine_until} ({acc:.2f}%) jumped past a milestone "
                   f"from {prev['val_acc']:.2f}% at step {st.step}: replaying from step "
                   f"{st.step} with checks every {st.fine_every} steps", file=sys.stdout)


def validate(run: Training, st: State, evaluate: Callable[[nn.Module, int], float],
             state_dir: Path) -> bool:
    """Validate, keep checkpoints of the milestones crossed, schedule the next check. True
    when the check jumped past a milestone and training was rewound (:func:`rewind`): the
    caller continues from ``st`` (an earlier step, possibly an earlier epoch)."""
    if run.proc.world > 1:  # BatchNorm statistics of rank 0 (what its checkpoint holds)
        for buf in run.model.buffers():
            dist.broadcast(buf, 0)
    acc = float(evaluate(run.model, st.step))
    tol = run.cfg.train.milestone_tolerance
    crossed = [m for m in run.milestones if m not in st.reached and acc >= m]
    if should_rewind(crossed, acc, st.previous, st.step, tol):
        rewind(run, st, acc, crossed[0])
        return True
    st.val_steps.append(st.step)
    st.val_acc.append(acc)
    st.val_epoch.append(st.epoch)
    for m in crossed:
        prev = keep_for(m, acc, st.previous, tol)
        src = prev or {"step": st.step, "epoch": st.epoch, "val_acc": acc,
                       "state_dict": run.model.state_dict()}
        st.reached[m] = save_checkpoint(run, m, src, state_dir)
        r = st.reached[m]
        msg = (f"milestone {m:g}%: val acc {r['val_acc']:.2f}% at step {r['step']} "
               f"(epoch {r['epoch']}) -> {run.file_name(m)}")
        if run.proc.rank == 0:
            tqdm.write(msg + (" (the validation before the crossing)" if prev else ""),
                       file=sys.stdout)
            if abs(r["val_acc"] - m) > tol:
                warnings.warn(MilestoneWarning(
                    f"{msg}: {r['val_acc'] - m:+.2f} points off the milestone, beyond "
                    f"train.milestone_tolerance {tol:g} (recorded in {training_log.LOG}); lower "
                    "train.val_min_every / train.val_every to validate more often"),
                    stacklevel=2)
    todo = [m for m in run.milestones if m not in st.reached]
    if st.fine_every and st.step >= st.fine_until:
        st.fine_every = st.fine_until = 0  # the replay has passed the replaced check
    if todo and st.fine_every:
        st.next_val = st.step + st.fine_every
    elif todo:
        history = list(zip(st.val_steps, st.val_acc))
        p = min(max(acc / 100, 0.01), 0.99)
        noise = 100 * math.sqrt(p * (1 - p) / max(run.n_val, 1))  # binomial SE of one check
        st.next_val = st.step + validation_interval(
            history, todo[0], tol, run.cfg.train.val_min_every, run.cfg.train.val_every, noise)
    st.previous = snapshot(run, st, acc) if todo else None
    return False


def save_checkpoint(run: Training, m: float, src: dict[str, Any], state_dir: Path
                    ) -> dict[str, Any]:
    """Write the checkpoint of milestone ``m`` (weights of ``src``) into ``state_dir`` (rank
    0); its facts, sha256 of the bytes included."""
    data = torch_bytes(checkpoint_dict(src["state_dict"], run.cfg.model, run.image_size, m,
                                       src["step"], src["epoch"], src["val_acc"],
                                       extra=run.provenance))
    if run.proc.rank == 0:
        atomic_write_bytes(state_dir / run.file_name(m), data)
    return {"step": int(src["step"]), "epoch": int(src["epoch"]),
            "val_acc": float(src["val_acc"]), "sha256": hashlib.sha256(data).hexdigest()}


def at_chance(acc: float) -> bool:
    """Whether a (best) validation accuracy has not left chance: below ``100 / N_CANDIDATES
    + CHANCE_MARGIN`` points (NaN, no validation yet, counts as at chance)."""
    return not acc >= 100.0 / N_CANDIDATES + CHANCE_MARGIN


def should_restart(cfg: Config, st: State) -> bool:
    """Whether the run in ``st`` is stuck on the initial plateau: ``train.restart_after``
    steps in without a milestone and every validation at chance, and restarts left."""
    t = cfg.train
    return (t.restart_after > 0 and st.attempt < t.max_restarts and not st.reached
            and st.step >= t.restart_after and at_chance(max(st.val_acc, default=math.nan)))


def restart(run: Training, st: State) -> None:
    """Start the run again from new weights (seed :func:`init_seed` of the next attempt), a new
    optimiser and schedule, step 0 and epoch 0; ``st`` keeps only the attempt count and the
    record of the abandoned attempts (their steps and best validation accuracy)."""
    cfg = run.cfg
    best = max(st.val_acc, default=math.nan)
    record = [*st.restarts, [st.step, best]]
    attempt = st.attempt + 1
    run.init_seed = init_seed(run.network, attempt)
    torch.manual_seed(run.init_seed)
    fresh = build_model(cfg.model, run.image_size).to(run.proc.device)
    run.model.load_state_dict(fresh.state_dict())
    run.opt = make_optimizer(cfg, run.model)
    run.sched = make_scheduler(cfg, run.opt, run.total)
    new = State(next_val=cfg.train.val_min_every, attempt=attempt, restarts=record)
    for f in dataclasses.fields(State):
        setattr(st, f.name, getattr(new, f.name))
    if run.proc.rank == 0:
        tqdm.write(f"network {run.network}: best validation accuracy {best:.2f}% after "
                   f"{record[-1][0]:.0f} steps, still at chance (the initial plateau): "
                   f"re-initialised from seed {run.init_seed} (restart {attempt} of at most "
                   f"{cfg.train.max_restarts}, train.restart_after)", file=sys.stdout)
