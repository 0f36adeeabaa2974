"""Train one network to validation-accuracy milestones: checkpoints, training log, resume.

    python -m core.train --params params.yaml --net 0 --data data/raven \\
        --out data/train/net0 --state data/state/train/net0

``--net all`` trains every network of ``train.networks``, ``train.jobs`` processes at a time,
into ``<out>/net<K>`` and ``<state>/net<K>`` (:func:`train_all`). ``--net K`` names one of
``train.networks``; K is the network's seed (weight initialisation and
data order; ``seed`` is the data generation's). ``--data`` is the ``main`` problem folder (or
the folder holding it). With ``train.nproc`` > 1 the same command re-launches itself under
``torchrun`` (gloo on CPU, nccl on CUDA with one GPU per rank); only rank 0 writes.

Milestones. Validation is adaptive (:func:`validation_interval`): after each check the next
one comes after ``FRACTION`` of the steps the recent slope of validation accuracy needs to the
next milestone plus ``train.milestone_tolerance`` (at once when the milestone is within the
tolerance plus twice a check's noise), bounded by ``train.val_min_every`` and
``train.val_every`` steps. A milestone ``m`` is reached at the first validation with accuracy
``>= m``; the checkpoint kept is that model, or the model of the validation before it when the
crossing overshoots by more than the tolerance and that earlier one is closer to m. The achieved
validation accuracy is recorded in the checkpoint (``val_acc``) and in ``training.nc``
(``milestone_val_acc``, ``milestone_error``); a checkpoint still off by more than the
tolerance is recorded as such and warned about (:class:`MilestoneWarning`). Training stops
after the last milestone or after ``train.epochs``; milestones not reached are listed in one
error (the CLI exits 1) after everything reached has been written.

Restarts. A network whose validation accuracy has stayed at chance (below ``100 / 8 +
CHANCE_MARGIN``) for ``train.restart_after`` steps, no milestone reached, is re-initialised
(:func:`restart`): new weights from :func:`init_seed` (derived from its seed and the attempt),
a new optimiser and schedule, step 0 again; at most ``train.max_restarts`` times. SCL's initial
plateau holds some initialisations for good on some CPUs (docs/decisions.md). ``training.nc``
holds the kept attempt's curves, the abandoned attempts' steps and best accuracy
(``restart_steps``, ``restart_best_val_acc``) and the ``init_seed`` / ``restarts``
attributes; a checkpoint of a re-initialised network records its ``init_seed``.

Files. ``--out`` gets the milestone checkpoints ``<arch>_<m>.pt`` and ``training.nc`` (per-step
loss/accuracy/lr, per-validation accuracy, per-milestone step/epoch/achieved val and test
accuracy and the checkpoint's sha256; provenance attributes: network seed, config hashes, data
fingerprint, device, precision). They are written when the run ends; nothing in them depends
on time, so identical runs give identical bytes (:func:`check_training_dir` verifies a folder).
``--state`` (outside the DVC output, which DVC deletes before re-running a stage) holds
``last.pt`` (model, optimiser, scheduler, RNG, data position, logs; every
``train.checkpoint_every`` steps) and the milestone checkpoints reached so far. A killed run
started again with the same command resumes there and ends with the same bytes as an
uninterrupted run; resume state of other parameters or other data is refused with one error.

Devices. ``device`` / ``precision`` (``core.device``): model and batches on the device, forward
passes under bf16 autocast when chosen, everything saved as CPU tensors. A loss or parameter
that becomes non-finite stops the run (:class:`NonFiniteError`, naming step and quantity).

DDP: ``train.batch_size`` is the *global* batch, split evenly over the processes; the data
order, step count, schedule and milestone logic are the same as with one process. BatchNorm
normalises each process's share of the batch with its own statistics; validation uses rank 0's
running statistics (those its checkpoint holds).

Parts (each testable alone; the test seams are their parameters, not :func:`train`'s):
:func:`open_splits` (data, read once, and its fingerprint), :func:`setup_process` (device,
precision, DDP), :func:`setup_run` (model, optimiser, schedule, resume identity),
:func:`start` (fresh or resumed :class:`State`), :func:`train_step`, :func:`validate`
(milestones, :func:`save_checkpoint`), :func:`train_loop` (``evaluate``, ``stop_after``),
:func:`finish` (test accuracy, outputs, cleanup).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.run as torchrun
import torch.nn.functional as F
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from tqdm import tqdm

from core.config import (
    Config,
    ConfigError,
    checkpoint_name,
    config_hash,
    load,
    train_hash,
    train_sections,
)
from core.data import RavenDataset, to_float
from core.device import (
    DeviceError,
    autocast,
    inference,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
    set_deterministic,
    to_cpu,
)
from core.formats import training as training_log
from core.io import atomic_write_bytes, file_sha256, torch_bytes, torch_load
from core.lock import LockError, die_with_parent, writer_lock
from core.models import build_model, checkpoint_dict, predict
from core.models.scl import N_CANDIDATES
from core.progress import bar as progress_bar
from core.raven.store import RavenFileError

LAST = "last.pt"
SPLITS = ("train", "val", "test")
# A network whose best validation accuracy is below chance (100 / N_CANDIDATES) plus this many
# points has not left SCL's initial plateau (loss ln 8); see train.restart_after
CHANCE_MARGIN = 10.0


class MilestonesNotReached(RuntimeError):
    """Training ended (epoch budget spent) before every milestone was reached."""


class DataError(ValueError):
    """A missing or unusable data folder or split; the message names the path."""


class ResumeError(ValueError):
    """Resume state that cannot be used (unreadable, other parameters, other data)."""


class NonFiniteError(RuntimeError):
    """The training loss or a parameter became NaN or infinite; names step and quantity."""


class MilestoneWarning(UserWarning):
    """A kept checkpoint's validation accuracy is off its milestone by more than the tolerance."""


# --------------------------------------------------------------------------- data


@dataclass
class Splits:
    """The train/val/test problems (objects with ``images`` uint8 [N, 16, H, W] and
    ``targets``), read once per process, and the fingerprint of the files they came from."""

    train: Any
    val: Any
    test: Any
    fingerprint: str
    source: str = "<memory>"


def main_folder(data_dir: str | Path) -> Path:
    """The problem folder: ``data_dir/main`` if it exists, else ``data_dir``."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found (run `python -m core.raven build`)")
    return data_dir / "main" if (data_dir / "main").is_dir() else data_dir


def data_fingerprint(folder: str | Path) -> str:
    """sha256 over the relative paths and sha256 contents of every file under ``folder``
    (temporary ``.tmp-*`` files excluded): same problems, same fingerprint."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))
    for f in files:
        h.update(f"{f.relative_to(folder).as_posix()}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def open_splits(data_dir: str | Path) -> Splits:
    """Read train, val and test of ``data_dir`` (one :class:`DataError` naming the folder)."""
    folder = main_folder(data_dir)
    parts = []
    for split in SPLITS:
        try:
            ds = RavenDataset(folder, split=split)
        except (RavenFileError, FileNotFoundError, ValueError) as err:
            raise DataError(f"{folder}: cannot read split {split!r}: {err}") from None
        if len(ds.targets) == 0:
            raise DataError(f"{folder}: split {split!r} holds no problems")
        parts.append(ds)
    return Splits(*parts, fingerprint=data_fingerprint(folder), source=str(folder))


def take(images: Any, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Model input of problems ``idx`` on ``device`` (uint8 moved first: 4x less to copy).
    ``images``: a uint8 tensor, ``core.data.ShardImages`` (memory-mapped, read per batch) or a
    numpy array."""
    batch = images[idx.numpy()] if isinstance(images, np.ndarray) else images[idx]
    if not isinstance(batch, torch.Tensor):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    return to_float(batch.to(device, non_blocking=True))


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled problem order of ``epoch``: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def val_indices(cfg: Config, n: int) -> torch.Tensor:
    """The validation problems checked: all, or a fixed subset of ``train.val_n`` drawn from
    the data seed (the same problems for every network)."""
    if cfg.train.val_n == 0 or cfg.train.val_n >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(cfg.seed + 7)
    return torch.randperm(n, generator=g)[:cfg.train.val_n].sort().values


# --------------------------------------------------------------------------- process and run


@dataclass
class Process:
    """Where this process computes: device, precision, DDP rank and world size."""

    device: torch.device
    precision: str
    rank: int = 0
    world: int = 1


def setup_process(cfg: Config) -> Process:
    """Device, precision, deterministic kernels, threads; the DDP group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(cfg.device)
    rank = 0
    if world > 1:
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise DeviceError(f"train.nproc: {world} processes but only "
                                  f"{torch.cuda.device_count()} CUDA device(s) (one per rank)")
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if cfg.train.batch_size % world:
            raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be divisible by "
                              f"the number of processes ({world})")
    set_deterministic(device)
    torch.set_num_threads(cfg.train.threads)
    keep_freed_memory()
    return Process(device, resolve_precision(cfg.precision, device), rank, world)


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    kind = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def make_scheduler(cfg: Config, opt: torch.optim.Optimizer, total: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    t = cfg.train
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, t.warmup_steps, total, t.scheduler))


def init_seed(network: int, attempt: int) -> int:
    """The seed of network ``network``'s weight initialisation at ``attempt`` (0: the first,
    the network's own seed; later ones after :func:`restart`: 31 bits of a sha256 of both,
    so another network's or attempt's seed comes up only by a 1-in-2^31 chance)."""
    if attempt == 0:
        return network
    digest = hashlib.sha256(f"core.train restart {network} {attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of ``train.lr`` at ``step``: linear warm-up, then constant or cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Run:
    """Everything fixed for one training run: settings, model, optimiser, what it depends on."""

    cfg: Config
    network: int
    proc: Process
    image_size: int
    n_train: int
    per_epoch: int
    model: nn.Module
    net: nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    identity: dict[str, Any]  # what resume state must match
    n_val: int = 0  # validation problems per check (for the noise of one check)
    init_seed: int = 0  # the seed the current weights were initialised from (init_seed())

    @property
    def total(self) -> int:
        return self.per_epoch * self.cfg.train.epochs

    @property
    def milestones(self) -> list[float]:
        return [float(m) for m in self.cfg.train.milestones]

    def file_name(self, m: float) -> str:
        return f"{checkpoint_name(self.cfg.model.arch, m)}.pt"

    @property
    def provenance(self) -> dict[str, Any]:
        """Plain facts recorded in every checkpoint and in ``training.nc``."""
        facts = {"network": self.network, "train_hash": self.identity["train_hash"],
                 "data_fingerprint": self.identity["data"]}
        if self.init_seed != self.network:  # re-initialised (restart): the seed it came from
            facts["init_seed"] = self.init_seed
        return facts


def setup_run(cfg: Config, network: int, splits: Splits, proc: Process) -> Run:
    """Model (seeded with ``network``), optimiser and schedule on ``proc.device``."""
    if network not in cfg.train.networks:
        raise ConfigError(f"--net {network}: not one of train.networks "
                          f"{list(cfg.train.networks)}")
    if cfg.train.val_min_every > cfg.train.val_every:
        raise ConfigError(f"train.val_min_every ({cfg.train.val_min_every}) must not exceed "
                          f"train.val_every ({cfg.train.val_every})")
    size = int(splits.train.images.shape[-1])
    if size != cfg.data.image_size:
        raise DataError(f"{splits.source}: panels are {size} px but data.image_size is "
                        f"{cfg.data.image_size}")
    n = len(splits.train.targets)
    per_epoch = n // cfg.train.batch_size
    if per_epoch == 0:
        raise DataError(f"{splits.source}: {n} training problems, fewer than one batch "
                        f"(train.batch_size = {cfg.train.batch_size})")
    torch.manual_seed(network)
    model = build_model(cfg.model, size).to(proc.device)
    net: nn.Module = model
    if proc.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None)
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt, per_epoch * cfg.train.epochs)
    identity = {"network": network, "data": splits.fingerprint,
                "config": train_sections(cfg), "train_hash": train_hash(cfg),
                "device": proc.device.type, "precision_resolved": proc.precision,
                "world": proc.world}
    n_val = len(val_indices(cfg, len(splits.val.targets)))
    return Run(cfg, network, proc, size, n, per_epoch, model, net, opt, sched, identity, n_val,
               init_seed(network, 0))


# --------------------------------------------------------------------------- state


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


def _rng_state(run: Run) -> dict[str, torch.Tensor]:
    rng = {"cpu": torch.get_rng_state()}
    if run.proc.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.proc.device)
    return rng


def _restore(run: Run, model: dict, optimizer: dict, scheduler: dict, rng: dict) -> None:
    """Model, optimiser, scheduler and RNG back to a saved state (resume or rewind)."""
    run.model.load_state_dict(model)
    run.opt.load_state_dict(optimizer)
    run.sched.load_state_dict(scheduler)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and run.proc.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], run.proc.device)


def save_state(run: Run, st: State, state_dir: Path) -> None:
    """``last.pt`` (rank 0): everything needed to continue bit-identically."""
    if run.proc.rank != 0:
        return
    atomic_write_bytes(state_dir / LAST, torch_bytes(to_cpu({
        "identity": run.identity, "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "rng": _rng_state(run),
        "state": st.to_dict()})))


def start(run: Run, out_dir: Path, state_dir: Path) -> State:
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
    _restore(run, saved["model"], saved["optimizer"], saved["scheduler"], saved["rng"])
    run.init_seed = init_seed(run.network, st.attempt)
    if run.proc.rank == 0:
        print(f"resuming from {last} at step {st.step} (epoch {st.epoch})", flush=True)
    return st


# --------------------------------------------------------------------------- one step


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[float, float]:
    """One optimiser step on batch ``(x, y)``; (mean loss, percent correct) over all ranks.
    Raises :class:`NonFiniteError` naming ``step`` if the loss or a parameter is not finite."""
    with autocast(run.proc.device, run.proc.precision):
        logits = run.net(x)
        loss = F.cross_entropy(logits.float(), y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if run.cfg.train.grad_clip > 0:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
    lr = run.opt.param_groups[0]["lr"]
    run.opt.step()
    run.sched.step()
    stats = torch.stack([loss.detach().double() * len(y),
                         (logits.argmax(1) == y).sum().double(),
                         torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)])
    if run.proc.world > 1:
        dist.all_reduce(stats)
    total, correct, count = stats.tolist()
    if not math.isfinite(total):
        raise NonFiniteError(f"step {step}: training loss is {total / count} (not finite); "
                             f"lr {lr:g} at this step, check train.lr, "
                             "train.weight_decay and the data")
    check_finite(run.model, step)
    return total / count, 100.0 * correct / count


def check_finite(model: nn.Module, step: int) -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite parameter (one fused norm
    over all parameters is the cheap common-case check)."""
    params = [p.detach() for p in model.parameters()]
    if bool(torch.isfinite(nn.utils.get_total_norm(params))):
        return
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise NonFiniteError(f"step {step}: parameter {name} is not finite after the "
                                 "optimiser step")
    raise NonFiniteError(f"step {step}: the parameters' norm is not finite after the "
                         "optimiser step")


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Problems:
    """Problems ``indices`` of a split as :class:`core.models.Batches` (read per batch, so a
    memory-mapped split is never loaded whole)."""

    images: Any
    targets: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, idx: slice, device: torch.device | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.indices[idx]
        return take(self.images, rows, device or torch.device("cpu")), self.targets[rows]


def accuracy(model: nn.Module, split: Any, indices: torch.Tensor, batch_size: int,
             proc: Process) -> float:
    """Percent correct on problems ``indices`` of ``split``: batched eval-mode inference on
    ``proc.device`` in ``proc.precision`` (the one loop, ``core.models.predict``), sharded over
    DDP ranks and summed."""
    mine = indices[proc.rank::proc.world]
    correct = 0
    if len(mine):
        with inference(model, proc.device, proc.precision):
            logits = predict(model, _Problems(split.images, split.targets, mine), batch_size,
                             proc.device)
        correct = int((logits.argmax(1) == split.targets[mine].cpu()).sum())
    counts = torch.tensor([correct, len(mine)], dtype=torch.float64, device=proc.device)
    if proc.world > 1:
        dist.all_reduce(counts)
    return float(100.0 * counts[0] / counts[1])


class Evaluator:
    """``evaluate(model, step) -> percent`` on a fixed set of problems of one split."""

    def __init__(self, split: Any, indices: torch.Tensor, batch_size: int, proc: Process):
        self.split, self.indices, self.batch_size, self.proc = split, indices, batch_size, proc

    def __call__(self, model: nn.Module, step: int | None = None) -> float:
        return accuracy(model, self.split, self.indices, self.batch_size, self.proc)


# --------------------------------------------------------------------------- milestones


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
    few checks; a crossing by noise alone cannot overshoot far), and never sooner than the line needs to
    rise ``tol / 2`` (a slow climb next to a milestone then costs a few checks)."""
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


def snapshot(run: Run, st: State, acc: float) -> dict[str, Any]:
    """Everything needed to continue training from this validation (copies, on the CPU):
    the model (also the fallback checkpoint of :func:`keep_for`), optimiser, scheduler, RNG
    and the position in the data; see :func:`rewind`."""
    return to_cpu({
        "step": st.step, "epoch": st.epoch, "pos": st.pos, "val_acc": acc,
        "n_val": len(st.val_steps), "state_dict": run.model.state_dict(),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "rng": _rng_state(run)}, copy=True)


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


def rewind(run: Run, st: State, acc: float, milestone: float) -> None:
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
    _restore(run, live["state_dict"], live["optimizer"], live["scheduler"], live["rng"])
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


def validate(run: Run, st: State, evaluate: Callable[[nn.Module, int], float],
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


def save_checkpoint(run: Run, m: float, src: dict[str, Any], state_dir: Path) -> dict[str, Any]:
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


def restart(run: Run, st: State) -> None:
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


# --------------------------------------------------------------------------- the loop


# The bar counts steps toward the real bound (train.epochs) and says so: training stops earlier,
# at the last milestone, which no step count predicts; the note says how far the milestones are.
BAR_FORMAT = ("{desc}: {n_fmt}/{total_fmt} steps {percentage:3.0f}%|{bar}| [{elapsed}, "
              "at most {remaining} left (the train.epochs bound), {rate_fmt}{postfix}]")


def progress_note(run: Run, st: State) -> str:
    """The bar's note: milestones reached, the next one, the last validation accuracy."""
    todo = [m for m in run.milestones if m not in st.reached]
    val = f"val {st.val_acc[-1]:.1f}%" if st.val_acc else "not validated yet"
    nxt = f", next {todo[0]:g}%" if todo else ""
    return f"milestones {len(st.reached)}/{len(run.milestones)}{nxt}, {val}"


def train_loop(run: Run, st: State, train_split: Any, evaluate: Callable[[nn.Module, int], float],
               state_dir: Path, *, progress: bool = False, stop_after: int | None = None) -> bool:
    """Train from ``st`` until every milestone is reached or the epochs are spent (True), or
    until ``stop_after`` steps of this call (False: as if killed; ``last.pt`` is what a
    restart continues from)."""
    cfg, proc = run.cfg, run.proc
    bs = cfg.train.batch_size
    bar = progress_bar(total=run.total, initial=st.step, desc=f"train {cfg.model.arch} "
                       f"net{run.network}", unit="step", bar_format=BAR_FORMAT,
                       postfix=progress_note(run, st),
                       **({} if progress and proc.rank == 0 else {"disable": True}))
    show = lambda: bar.set_postfix_str(progress_note(run, st), refresh=False)  # noqa: E731
    done = lambda: len(st.reached) == len(run.milestones)  # noqa: E731
    steps_run = 0
    run.model.train()
    try:
        while st.epoch < cfg.train.epochs and not done():
            order = epoch_order(run.n_train, run.network, st.epoch)
            while st.pos < run.per_epoch and not done():
                if stop_after is not None and steps_run >= stop_after:
                    return False
                idx = order[st.pos * bs:(st.pos + 1) * bs][proc.rank::proc.world]
                x = take(train_split.images, idx, proc.device)
                y = train_split.targets[idx].to(proc.device)
                lr = run.opt.param_groups[0]["lr"]
                loss, acc = train_step(run, x, y, st.step + 1)
                st.step += 1
                st.pos += 1
                steps_run += 1
                st.loss.append(loss)
                st.acc.append(acc)
                st.log_epoch.append(st.epoch)
                st.lr.append(lr)
                bar.update(1)
                final = st.epoch == cfg.train.epochs - 1 and st.pos == run.per_epoch
                if st.step >= st.next_val or final:
                    rewound = validate(run, st, evaluate, state_dir)
                    if not rewound and should_restart(cfg, st):
                        restart(run, st)
                        rewound = True
                    if rewound:  # an earlier step, maybe another epoch
                        # (the rate counts from here: no negative step count, no ETA jump)
                        bar.n = bar.last_print_n = st.step
                        show()
                        bar.refresh()
                        break
                    show()
                if st.step % cfg.train.checkpoint_every == 0:
                    save_state(run, st, state_dir)
            if st.pos == run.per_epoch:
                st.epoch += 1
                st.pos = 0
    finally:
        bar.close()
    return True


# --------------------------------------------------------------------------- outputs


@dataclass
class Result:
    """What a run produced: milestone -> checkpoint facts, the missing ones, step count."""

    reached: dict[float, dict[str, Any]]
    missing: list[float]
    steps: int
    test_acc: dict[float, float]
    seconds: float = 0.0


def finish(run: Run, st: State, test: Callable[[nn.Module], float], out_dir: Path,
           state_dir: Path) -> Result:
    """Test accuracy of each kept checkpoint, then (rank 0) the checkpoints and
    ``training.nc`` into ``out_dir`` and the resume state removed."""
    if run.proc.world > 1:
        dist.barrier()  # rank 0 has written every checkpoint
    test_acc: dict[float, float] = {}
    for m in sorted(st.reached):
        path = state_dir / run.file_name(m)
        ck = torch_load(path, "milestone checkpoint", ResumeError)
        run.model.load_state_dict(ck["state_dict"])
        test_acc[m] = float(test(run.model))
    if run.proc.rank == 0:
        for m in sorted(st.reached):
            atomic_write_bytes(out_dir / run.file_name(m),
                               (state_dir / run.file_name(m)).read_bytes())
        training_log.write(out_dir / training_log.LOG, st, run.milestones,
                           [checkpoint_name(run.cfg.model.arch, m) for m in run.milestones],
                           test_acc, run.cfg.train.milestone_tolerance, log_facts(run, st))
        (state_dir / LAST).unlink(missing_ok=True)
        for m in run.milestones:
            (state_dir / run.file_name(m)).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            state_dir.rmdir()  # only if empty
    if run.proc.world > 1:
        dist.barrier()
    missing = [m for m in run.milestones if m not in st.reached]
    return Result(dict(st.reached), missing, st.step, test_acc)


def log_facts(run: Run, st: State) -> dict[str, Any]:
    """The provenance of ``training.nc`` (its global attrs)."""
    cfg = run.cfg
    return {"arch": cfg.model.arch, "profile": cfg.profile, "network": run.network,
            "network_seed": run.network, "data_seed": cfg.seed, "init_seed": run.init_seed,
            "restarts": len(st.restarts), "config_hash": config_hash(cfg),
            "train_hash": run.identity["train_hash"], "data_fingerprint": run.identity["data"],
            "device": run.proc.device.type, "precision": run.proc.precision,
            "processes": run.proc.world, "optimizer": cfg.train.optimizer, "lr": cfg.train.lr,
            "batch_size": cfg.train.batch_size,
            "milestone_tolerance": cfg.train.milestone_tolerance}


# --------------------------------------------------------------------------- entry points


def not_reached_message(cfg: Config, steps: int, missing: Sequence[float],
                        reached: Sequence[float], best: float, restarts: int = 0) -> str:
    """The error of a run that ended with milestones missing; a run that never left chance
    (the initial plateau, loss ln 8) gets what was measured to get out of it."""
    msg = (f"training ended after {cfg.train.epochs} epochs ({steps} steps) without reaching "
           f"validation-accuracy milestone(s) {', '.join(f'{m:g}%' for m in missing)} (best "
           f"validation accuracy {best:.2f}%); checkpoints written for "
           f"{', '.join(f'{m:g}%' for m in reached) or 'none'}")
    chance = 100.0 / N_CANDIDATES
    if at_chance(best):
        t = cfg.train
        tried = (f" after {restarts} re-initialisation(s) (train.max_restarts)" if restarts
                 else "")
        msg += (f". The network never left chance ({chance:g}%){tried}: the initial plateau, "
                "which some initialisations on some CPUs do not leave (measured: network 1 of "
                "the default profile stayed at loss 2.08 for 3000 steps on one machine and left "
                "it by step ~650 on another; train.warmup_steps=300 left it at step ~320 on "
                "the first). Try a longer train.warmup_steps, "
                + ("more train.max_restarts" if t.restart_after else
                   "train.restart_after / train.max_restarts (re-initialise a stuck network)")
                + " or another seed in train.networks")
    return msg


def train(cfg: Config, network: int, data_dir: str | Path, out_dir: str | Path,
          state_dir: str | Path, *, progress: bool = True, strict: bool = True) -> Result:
    """Train network ``network`` of ``cfg`` on ``data_dir``: outputs to ``out_dir``, resume
    state in ``state_dir``. With ``strict`` a run that ends with milestones missing raises
    :class:`MilestonesNotReached` after writing its outputs."""
    t0 = time.perf_counter()
    out, state_dir = Path(out_dir), Path(state_dir)
    splits = open_splits(data_dir)
    proc = setup_process(cfg)
    run = setup_run(cfg, network, splits, proc)
    st = start(run, out, state_dir)
    bs = cfg.train.eval_batch_size
    evaluate = Evaluator(splits.val, val_indices(cfg, len(splits.val.targets)), bs, proc)
    test = Evaluator(splits.test, torch.arange(len(splits.test.targets)), bs, proc)
    first = st.step
    train_loop(run, st, splits.train, evaluate, state_dir, progress=progress)
    result = finish(run, st, test, out, state_dir)
    result.seconds = time.perf_counter() - t0
    if proc.rank == 0:
        for m, r in sorted(result.reached.items()):
            print(f"{run.file_name(m)}: step {r['step']} epoch {r['epoch']} val "
                  f"{r['val_acc']:.2f}% test {result.test_acc[m]:.2f}%")
        print(f"{st.step} steps in {result.seconds:.0f} s ({st.step - first} this run, "
              f"{proc.world} process(es) x {cfg.train.threads} thread(s), {proc.device}, "
              f"{proc.precision})", flush=True)
    if result.missing and strict:
        raise MilestonesNotReached(not_reached_message(
            cfg, st.step, result.missing, sorted(result.reached),
            max(st.val_acc, default=float("nan")), st.attempt))
    return result


def launch(nproc: int, argv: list[str]) -> int:
    """Run this command in ``nproc`` processes under torchrun (this process is the launcher;
    each worker prints its own errors)."""
    args = torchrun.parse_args(["--standalone", f"--nproc_per_node={nproc}", "-m",
                                "core.train", *argv])
    try:
        torchrun.run(args)
    except ChildFailedError as err:
        print(f"error: {len(err.failures)} of {nproc} training processes failed (their errors "
              "are above)", file=sys.stderr)
        return 1
    return 0


def train_all(params: str | Path, profile: str | None, cfg: Config, data: str | Path,
              out: str | Path, state: str | Path, *, progress: bool = True) -> int:
    """Every network of ``train.networks``, ``train.jobs`` at a time, each in its own process
    (``python -m core.train --net K``, outputs ``out/net<K>``, state ``state/net<K>``). A
    process per network: two 1-thread processes train ~1.3x more problems/s than one 2-thread
    process on the default machine (SCL 64 px, batch 32: 154 vs 115 problems/s, measured). The
    bytes of a network do not depend on ``jobs``. A failed network does not stop the others;
    the return code names every failure."""
    nets = list(cfg.train.networks)
    cmd = lambda k: [sys.executable, "-m", "core.train", "--params", str(params),  # noqa: E731
                     *(["--profile", profile] if profile else []), "--net", str(k),
                     "--data", str(data), "--out", str(Path(out) / f"net{k}"),
                     "--state", str(Path(state) / f"net{k}"),
                     *([] if progress else ["--no-progress"])]
    running: dict[int, subprocess.Popen] = {}
    line: dict[int, int] = {}  # network -> its progress line on a terminal (TQDM_POSITION)
    failed: list[int] = []
    todo = list(nets)
    try:
        while todo or running:
            while todo and len(running) < cfg.train.jobs:
                k = todo.pop(0)
                line[k] = min(set(range(cfg.train.jobs)) - {line[j] for j in running})
                running[k] = subprocess.Popen(cmd(k), env={**os.environ,
                                                           "TQDM_POSITION": str(line[k])})
            time.sleep(0.5)
            for k, p in list(running.items()):
                if p.poll() is not None:
                    del running[k]
                    if p.returncode:
                        failed.append(k)
    finally:
        for p in running.values():  # interrupted: stop the others (their state resumes)
            p.terminate()
        for p in running.values():
            p.wait()
    if failed:
        print(f"error: training failed for network(s) {', '.join(map(str, failed))} "
              f"(see above); the others finished", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml", help="parameters file (params.yaml)")
    ap.add_argument("--profile", default=None,
                    help="profile to use (composed from conf/ if the file holds another)")
    ap.add_argument("--net", required=True,
                    help="network seed, one of train.networks; 'all': every network, "
                         "train.jobs at a time, into <out>/net<K> and <state>/net<K>")
    ap.add_argument("--data", required=True, help="problem folder (data/raven or data/raven/main)")
    ap.add_argument("--out", required=True, help="output folder (checkpoints, training.nc)")
    ap.add_argument("--state", required=True,
                    help="resume-state folder, outside the DVC output (data/state/train/netK)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = ap.parse_args(argv)
    die_with_parent()  # a killed dvc takes its training (and the networks' processes) along
    # one writer per network (core.lock): the lock sits beside its state folder, outside the
    # DVC output (data/train), and a network's processes (--net all, torchrun) share it
    locks = contextlib.ExitStack()
    try:
        cfg = load(args.params, args.profile)
        if args.net == "all":
            for k in cfg.train.networks:
                locks.enter_context(writer_lock(Path(args.state) / f"net{k}",
                                                f"core.train --out {args.out}/net{k}"))
            return train_all(args.params, args.profile, cfg, args.data, args.out, args.state,
                             progress=not args.no_progress)
        locks.enter_context(writer_lock(args.state, f"core.train --out {args.out}"))
        try:
            args.net = int(args.net)
        except ValueError:
            raise ConfigError(f"--net: expected a network seed or 'all', got {args.net!r}"
                              ) from None
        if args.net not in cfg.train.networks:
            raise ConfigError(f"--net {args.net}: not one of train.networks "
                              f"{list(cfg.train.networks)} of {args.params}")
        if cfg.train.nproc > 1 and "LOCAL_RANK" not in os.environ:
            return launch(cfg.train.nproc, argv if argv is not None else sys.argv[1:])
        train(cfg, args.net, args.data, args.out, args.state, progress=not args.no_progress)
    except (ConfigError, DataError, DeviceError, ResumeError, NonFiniteError,
            MilestonesNotReached, LockError) as err:
        if not isinstance(err, MilestonesNotReached) or os.environ.get("RANK", "0") == "0":
            print(f"error: {err}", file=sys.stderr)  # (the milestone summary: rank 0 only)
        return 1
    finally:
        locks.close()
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
