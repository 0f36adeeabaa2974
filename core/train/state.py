"""What changes during a run (:class:`State`) and its resume file ``last.pt``:
:func:`save_state` writes it, :func:`start` continues from it (or starts afresh) and refuses
resume state of other parameters or other data (:class:`ResumeError`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.device import to_cpu
from core.formats import training as training_log
from core.io import atomic_write_bytes, file_sha256, torch_bytes, torch_load
from core.train.setup import Training, init_seed

LAST = "last.pt"


class ResumeError(ValueError):
    """Resume state that cannot be used (unreadable, other parameters, other data)."""


@dataclass
class State:
    """What changes during a run (all of it goes into ``last.pt``)."""

    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches of the current epoch done
    next_val: int = 0  # step of the next validation
    reached: dict[float, dict[str, Any]] = field(default_factory=dict)
    loss: list[float] = field(default_factory=list)
    acc: list[float] = field(default_factory=list)
    log_epoch: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    val_epoch: list[int] = field(default_factory=list)
    previous: dict[str, Any] | None = None  # the last validation's full state (see snapshot)
    fine_every: int = 0  # > 0 while replaying after a rewind: validate every this many steps
    fine_until: int = 0  # ... until this step (the overshooting check), then adaptive again
    rewinds: list[list[float]] = field(default_factory=list)  # [from step, acc, to step, m]
    attempt: int = 0  # re-initialisations so far (restart)
    restarts: list[list[float]] = field(default_factory=list)  # [steps run, best val acc]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> State:
        st = cls(**d)
        st.reached = {float(k): v for k, v in st.reached.items()}
        return st


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _difference(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first entry that differs, as ``key: saved -> now`` (None if identical)."""
    a, b = _flat(saved), _flat(now)
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            what = "data fingerprint (the data changed)" if key == "data" else key
            return f"{what}: {a.get(key, '<absent>')!r} in the saved state, " \
                   f"{b.get(key, '<absent>')!r} now"
    return None


def rng_state(run: Training) -> dict[str, torch.Tensor]:
    rng = {"cpu": torch.get_rng_state()}
    if run.proc.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.proc.device)
    return rng


def restore(run: Training, model: dict, optimizer: dict, scheduler: dict, rng: dict) -> None:
    """Model, optimiser, scheduler and RNG back to a saved state (resume or rewind)."""
    run.model.load_state_dict(model)
    run.opt.load_state_dict(optimizer)
    run.sched.load_state_dict(scheduler)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and run.proc.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], run.proc.device)


def save_state(run: Training, st: State, state_dir: Path) -> None:
    """``last.pt`` (rank 0): everything needed to continue bit-identically."""
    if run.proc.rank != 0:
        return
    atomic_write_bytes(state_dir / LAST, torch_bytes(to_cpu({
        "identity": run.identity, "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "rng": rng_state(run),
        "state": st.to_dict()})))


def start(run: Training, out_dir: Path, state_dir: Path) -> State:
    """The state to continue from: ``state_dir/last.pt`` if present and of this run (else a
    :class:`ResumeError`), or a fresh state (stale outputs of an earlier run removed).
    Temporary ``.tmp-*`` files left by a killed write are removed either way."""
    last = state_dir / LAST
    if run.proc.rank == 0:  # temporary files of a killed write (atomic_path) go first
        for folder in (out_dir, state_dir):
            for tmp in folder.glob(".tmp-*") if folder.is_dir() else ():
                tmp.unlink(missing_ok=True)
    if not last.exists():
        if run.proc.rank == 0:
            for m in run.milestones:
                (out_dir / run.file_name(m)).unlink(missing_ok=True)
                (state_dir / run.file_name(m)).unlink(missing_ok=True)
            (out_dir / training_log.LOG).unlink(missing_ok=True)
        return State(next_val=run.cfg.train.val_min_every)
    saved = torch_load(last, "resume state", ResumeError)
    if not isinstance(saved, dict) or "identity" not in saved:
        raise ResumeError(f"{last}: not resume state of core.train; delete it to start over")
    diff = _difference(saved["identity"], run.identity)
    if diff:
        raise ResumeError(f"{last}: resume state of another run ({diff}); delete {state_dir} "
                          "to start over, or restore the parameters and data it was made with")
    st = State.from_dict(saved["state"])
    for m, r in st.reached.items():
        path = state_dir / run.file_name(m)
        if not path.exists() or file_sha256(path) != r["sha256"]:
            raise ResumeError(f"{path}: milestone checkpoint of the resume state missing or "
                              f"changed; delete {state_dir} to start over")
    restore(run, saved["model"], saved["optimizer"], saved["scheduler"], saved["rng"])
    run.init_seed = init_seed(run.network, st.attempt)
    if run.proc.rank == 0:
        print(f"resuming from {last} at step {st.step} (epoch {st.epoch})", flush=True)
    return st
