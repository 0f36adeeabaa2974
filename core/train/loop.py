"""The training loop and what it is made of: one optimiser step (:func:`train_step`), the
accuracy of a model on problems of a split (:func:`split_accuracy`, :class:`Evaluator`), the
loop to the milestones (:func:`train_loop`) and the outputs of a run (:func:`finish`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from core.config import checkpoint_name, config_hash
from core.device import autocast, inference
from core.formats import training as training_log
from core.io import atomic_write_bytes, torch_load
from core.models import predict
from core.progress import bar as progress_bar
from core.train.data import epoch_order, take
from core.train.milestones import restart, should_restart, validate
from core.train.setup import Process, Training
from core.train.state import LAST, ResumeError, State, save_state


class NonFiniteError(RuntimeError):
    """The training loss or a parameter became NaN or infinite; names step and quantity."""


# --------------------------------------------------------------------------- one step


def train_step(run: Training, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[float, float]:
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


def split_accuracy(model: nn.Module, split: Any, indices: torch.Tensor, batch_size: int,
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
        return split_accuracy(model, self.split, self.indices, self.batch_size, self.proc)


# --------------------------------------------------------------------------- the loop


# The bar counts steps toward the real bound (train.epochs) and says so: training stops earlier,
# at the last milestone, which no step count predicts; the note says how far the milestones are.
BAR_FORMAT = ("{desc}: {n_fmt}/{total_fmt} steps {percentage:3.0f}%|{bar}| [{elapsed}, "
              "at most {remaining} left (the train.epochs bound), {rate_fmt}{postfix}]")


def progress_note(run: Training, st: State) -> str:
    """The bar's note: milestones reached, the next one, the last validation accuracy."""
    todo = [m for m in run.milestones if m not in st.reached]
    val = f"val {st.val_acc[-1]:.1f}%" if st.val_acc else "not validated yet"
    nxt = f", next {todo[0]:g}%" if todo else ""
    return f"milestones {len(st.reached)}/{len(run.milestones)}{nxt}, {val}"


def train_loop(run: Training, st: State, train_split: Any,
               evaluate: Callable[[nn.Module, int], float], state_dir: Path, *,
               progress: bool = False, stop_after: int | None = None) -> bool:
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


def finish(run: Training, st: State, test: Callable[[nn.Module], float], out_dir: Path,
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


def log_facts(run: Training, st: State) -> dict[str, Any]:
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
