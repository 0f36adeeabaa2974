"""Train a model on Raven problems and keep checkpoints at validation-accuracy milestones.

    python -m core.train --profile default --data data/raven --out data/train
    python -m core.train --params active.yaml --data data/raven --out data/train
    torchrun --nproc_per_node 2 -m core.train --profile ci --data ... --out ...

``--data`` is the ``main`` problem folder (or the folder holding it). The model is validated
after every epoch, and every ``train.val_every`` steps while the last validation accuracy is
within ``train.near_margin`` points below the next milestone. The first time validation
accuracy reaches a milestone ``m`` the model is saved as ``<arch>_<m>.pt``
(``core.config.checkpoint_name``; format in docs/architecture.md). Training stops after the
last milestone or after ``train.epochs``; milestones not reached are listed in one error (the
CLI exits 1) after everything reached has been written.

Outputs (rank 0 only, all atomic): the milestone checkpoints, ``training.nc`` (train loss/acc
per step, validation accuracy per validation, step/epoch/val/test accuracy of each milestone;
no timestamps, so identical runs give identical bytes) and, while running, ``last.pt`` every
``train.checkpoint_every`` steps (model, optimiser, scheduler, RNG, data-order position, log).
A killed run restarted with the same command resumes from ``last.pt`` and produces the same
bytes as an uninterrupted run; ``last.pt`` is deleted when the run ends.

Optimiser choice (params.yaml ``train``, reasons in the comments there): the SCL authors'
AdamW 5e-3 setup, because the original study's Adam 1e-4 / batch 16 / 10 epochs on 42k problems
is ~26k steps, an order of magnitude beyond a 25-minute 2-core CPU budget.

DDP: under torchrun (``WORLD_SIZE`` > 1; gloo on CPU, nccl on GPU) ``train.batch_size`` is the
*global* batch, split evenly over the processes; the data order, step count, schedule and
milestone logic are the same as with one process. The one difference is batch composition for
BatchNorm: each process normalises with the statistics of its own share of the batch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import xarray as xr
from torch import nn

from core.config import Config, ConfigError, checkpoint_name, from_dict, load
from core.io import atomic_path, atomic_write_bytes
from core.models import build_model, checkpoint_dict

LAST = "last.pt"
LOG = "training.nc"


class MilestonesNotReached(RuntimeError):
    """Training ended (epoch budget spent) before every milestone was reached."""


class DataError(ValueError):
    """A missing or unusable data folder or split; the message names the path."""


# --------------------------------------------------------------------------- data


def open_split(data_dir: str | Path, split: str) -> Any:
    """The ``split`` of the problem folder ``data_dir`` (or of ``data_dir/main``)."""
    from core.data import RavenDataset

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found (run `python -m core.raven build`)")
    if (data_dir / "main").is_dir():
        data_dir = data_dir / "main"
    try:
        ds = RavenDataset(data_dir, split=split)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{data_dir}: cannot read split {split!r}: {err}") from None
    if len(ds.targets) == 0:
        raise DataError(f"{data_dir}: split {split!r} holds no problems")
    return ds


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 panels (255 = white) -> float in [0, 1] with 1 = ink (core.data's convention)."""
    from core.data import to_float as convert

    return convert(images)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled problem order of ``epoch``: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


# --------------------------------------------------------------------------- pieces


def make_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of ``train.lr`` at ``step``: linear warm-up, then constant or cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def milestones_crossed(acc: float, milestones: list[float], reached: dict) -> list[float]:
    """Milestones not yet in ``reached`` that validation accuracy ``acc`` meets or exceeds."""
    return [m for m in milestones if m not in reached and acc >= m]


def is_near(last_acc: float | None, milestones: list[float], reached: dict,
            margin: float) -> bool:
    """Whether the next unreached milestone is within ``margin`` points above ``last_acc``
    (before the first validation ``last_acc`` counts as 0%)."""
    todo = [m for m in milestones if m not in reached]
    return bool(todo) and (last_acc or 0.0) >= todo[0] - margin


@torch.no_grad()
def accuracy(model: nn.Module, ds: Any, indices: torch.Tensor, batch_size: int,
             rank: int = 0, world: int = 1) -> float:
    """Percent correct on ``ds[indices]`` (eval mode; sharded over DDP ranks, summed)."""
    was_training = model.training
    model.eval()
    mine = indices[rank::world]
    correct = torch.zeros(2, dtype=torch.float64)
    for i in range(0, len(mine), batch_size):
        idx = mine[i:i + batch_size]
        logits = model(to_float(ds.images[idx]))
        correct[0] += (logits.argmax(1) == ds.targets[idx]).sum().item()
        correct[1] += len(idx)
    if world > 1:
        dist.all_reduce(correct)
    model.train(was_training)
    return float(100.0 * correct[0] / correct[1])


def val_indices(cfg: Config, n: int) -> torch.Tensor:
    """The validation problems checked: all, or a fixed seeded subset of ``train.val_n``."""
    if cfg.train.val_n == 0 or cfg.train.val_n >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(cfg.seed + 7)
    return torch.randperm(n, generator=g)[:cfg.train.val_n].sort().values


# --------------------------------------------------------------------------- state / files


def _fingerprint(cfg: Config, n_train: int, n_val: int) -> dict[str, Any]:
    """What must match for ``last.pt`` to be resumed (everything that shapes the run)."""
    d = cfg.to_dict()
    return {"seed": d["seed"], "model": d["model"], "train": d["train"],
            "image_size": d["data"]["image_size"], "n_train": n_train, "n_val": n_val}


def _save(obj: Any, path: Path) -> None:
    """``torch.save`` atomically. Serialised in memory first: saving to the temporary file
    would record its random name inside the zip archive and break byte-identity."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def write_log(path: Path, st: dict[str, Any], cfg: Config, test: dict[float, float]) -> None:
    """``training.nc``: per-step train loss/acc, per-validation accuracy, per-milestone facts."""
    ms = list(cfg.train.milestones)
    reached = st["reached"]

    def per_m(key: str, fill: float) -> np.ndarray:
        return np.array([reached[m][key] if m in reached else fill for m in ms], dtype=float)

    ds = xr.Dataset(
        {
            "loss": ("step", np.array(st["loss"], dtype=np.float32),
                     {"units": "1", "long_name": "training cross-entropy loss (batch mean)"}),
            "acc": ("step", np.array(st["acc"], dtype=np.float32),
                    {"units": "percent", "long_name": "training batch accuracy"}),
            "epoch": ("step", np.array(st["log_epoch"], dtype=np.int32),
                      {"units": "1", "long_name": "epoch of the training step (from 0)"}),
            "lr": ("step", np.array(st["lr"], dtype=np.float32),
                   {"units": "1", "long_name": "learning rate"}),
            "val_acc": ("val_step", np.array(st["val_acc"], dtype=np.float32),
                        {"units": "percent", "long_name": "validation accuracy"}),
            "val_epoch": ("val_step", np.array(st["val_epoch"], dtype=np.int32),
                          {"units": "1", "long_name": "epoch of the validation (from 0)"}),
            "milestone_step": ("milestone", per_m("step", -1).astype(np.int64),
                               {"units": "1", "long_name": "step the milestone was first "
                                "reached (-1: not reached)"}),
            "milestone_epoch": ("milestone", per_m("epoch", -1).astype(np.int64),
                                {"units": "1", "long_name": "epoch the milestone was reached "
                                 "(-1: not reached)"}),
            "milestone_val_acc": ("milestone", per_m("val_acc", np.nan),
                                  {"units": "percent",
                                   "long_name": "validation accuracy of the checkpoint"}),
            "milestone_test_acc": ("milestone", np.array([test.get(m, np.nan) for m in ms]),
                                   {"units": "percent",
                                    "long_name": "test accuracy of the checkpoint"}),
        },
        coords={
            "step": ("step", np.arange(1, len(st["loss"]) + 1, dtype=np.int64),
                     {"units": "1", "long_name": "optimiser step"}),
            "val_step": ("val_step", np.array(st["val_steps"], dtype=np.int64),
                         {"units": "1", "long_name": "optimiser step of the validation"}),
            "milestone": ("milestone", np.array(ms, dtype=float),
                          {"units": "percent", "long_name": "validation-accuracy milestone"}),
            "checkpoint": ("milestone", [checkpoint_name(cfg.model.arch, m) for m in ms],
                           {"long_name": "checkpoint name"}),
        },
        attrs={"Conventions": "CF-1.8", "title": "Training log of the model",
               "source": "core.train", "arch": cfg.model.arch, "profile": cfg.profile,
               "optimizer": cfg.train.optimizer, "lr": cfg.train.lr,
               "batch_size": cfg.train.batch_size, "seed": cfg.seed,
               "references": "Wu et al. 2020, The Scattering Compositional Learner"},
    )
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")


# --------------------------------------------------------------------------- training


@dataclasses.dataclass
class Result:
    """What a run produced: milestone -> checkpoint facts, the missing ones, step count."""

    reached: dict[float, dict[str, Any]]
    missing: list[float]
    steps: int
    test_acc: dict[float, float]
    seconds: float


def _dist_setup(cfg: Config) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if cfg.train.batch_size % world:
        raise ConfigError(f"train.batch_size ({cfg.train.batch_size}) must be divisible by "
                          f"the number of processes ({world})")
    return dist.get_rank(), world


def train(cfg: Config, data_dir: str | Path, out_dir: str | Path, *,
          datasets: tuple[Any, Any, Any] | None = None,
          evaluate: Callable[[nn.Module, int], float] | None = None,
          progress: bool = True, strict: bool = True,
          stop_after: int | None = None) -> Result:
    """Train ``cfg.model`` with ``cfg.train`` on ``data_dir``; write outputs to ``out_dir``.

    ``datasets`` (train, val, test objects with ``images``/``targets``) replaces reading
    ``data_dir``; ``evaluate(model, step) -> percent`` replaces validation (tests use both).
    ``stop_after`` ends the process's work after that many steps *without* finishing the run
    (as if killed; tests use it to simulate an interruption). With ``strict`` a run that ends
    with milestones missing raises :class:`MilestonesNotReached` after writing its outputs.
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    rank, world = _dist_setup(cfg)
    torch.set_num_threads(cfg.train.threads)
    torch.use_deterministic_algorithms(True)
    if datasets is None:
        datasets = (open_split(data_dir, "train"), open_split(data_dir, "val"),
                    open_split(data_dir, "test"))
    train_ds, val_ds, test_ds = datasets
    size = int(train_ds.images.shape[-1])
    if size != cfg.data.image_size:
        raise DataError(f"{data_dir}: panels are {size} px but data.image_size is "
                        f"{cfg.data.image_size}")
    n = len(train_ds.targets)
    bs = cfg.train.batch_size
    per_epoch = n // bs
    if per_epoch == 0:
        raise DataError(f"{data_dir}: {n} training problems, fewer than one batch "
                        f"(train.batch_size = {bs})")
    total = per_epoch * cfg.train.epochs
    vidx = val_indices(cfg, len(val_ds.targets))
    eval_bs = 4 * bs

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, size)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)
    opt = make_optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.train.warmup_steps, total, cfg.train.scheduler))
    fp = _fingerprint(cfg, n, len(val_ds.targets))
    st: dict[str, Any] = {"step": 0, "epoch": 0, "pos": 0, "reached": {}, "loss": [], "acc": [],
                          "log_epoch": [], "lr": [], "val_steps": [], "val_acc": [],
                          "val_epoch": [], "last_val": None}
    last = out / LAST
    if last.exists():
        try:
            saved = torch.load(last, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
            raise DataError(f"{last}: unreadable resume state ({type(err).__name__}); "
                            "delete it to start over") from None
        if saved.get("fingerprint") != fp:
            raise ConfigError(f"{last}: resume state of a run with other parameters or data; "
                              "delete it to start over")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        st = saved["state"]
        st["reached"] = {float(k): v for k, v in st["reached"].items()}
        if rank == 0:
            print(f"resuming from {last} at step {st['step']} (epoch {st['epoch']})",
                  flush=True)

    milestones = list(cfg.train.milestones)
    if st["step"] == 0 and rank == 0:  # a fresh run: no stale outputs of an earlier run remain
        for m in milestones:
            (out / f"{checkpoint_name(cfg.model.arch, m)}.pt").unlink(missing_ok=True)
        (out / LOG).unlink(missing_ok=True)
    loss_fn = nn.CrossEntropyLoss()

    def validate() -> None:
        acc = evaluate(model, st["step"]) if evaluate else accuracy(
            model, val_ds, vidx, eval_bs, rank, world)
        st["val_steps"].append(st["step"])
        st["val_acc"].append(acc)
        st["val_epoch"].append(st["epoch"])
        st["last_val"] = acc
        if rank == 0 and not progress:
            print(f"step {st['step']} epoch {st['epoch']}: val acc {acc:.2f}%", flush=True)
        for m in milestones_crossed(acc, milestones, st["reached"]):
            st["reached"][m] = {"step": st["step"], "epoch": st["epoch"], "val_acc": acc}
            if rank == 0:
                _save(checkpoint_dict(model, cfg.model, size, m, st["step"], st["epoch"], acc),
                      out / f"{checkpoint_name(cfg.model.arch, m)}.pt")
                tqdm_write(f"milestone {m:g}%: val acc {acc:.2f}% at step {st['step']} "
                           f"(epoch {st['epoch']}) -> {checkpoint_name(cfg.model.arch, m)}.pt")

    def save_last() -> None:
        if rank == 0:
            _save({"fingerprint": fp, "model": model.state_dict(), "optimizer": opt.state_dict(),
                   "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
                   "state": st}, last)

    def done() -> bool:
        return len(st["reached"]) == len(milestones)

    from tqdm import tqdm  # tqdm.auto warns in papermill kernels (no ipywidgets)

    bar = tqdm(total=total, initial=st["step"], disable=not progress or rank != 0,
               desc=f"train {cfg.model.arch}", mininterval=2.0, file=sys.stderr)

    def tqdm_write(msg: str) -> None:
        tqdm.write(msg, file=sys.stdout)

    model.train()
    steps_run = 0
    while st["epoch"] < cfg.train.epochs and not done():
        order = epoch_order(n, cfg.seed, st["epoch"])
        while st["pos"] < per_epoch and not done():
            if stop_after is not None and steps_run >= stop_after:
                bar.close()
                return Result(dict(st["reached"]), [], st["step"], {},
                              time.perf_counter() - t_start)
            idx = order[st["pos"] * bs:(st["pos"] + 1) * bs][rank::world]
            x, y = to_float(train_ds.images[idx]), train_ds.targets[idx]
            logits = net(x)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            stats = torch.tensor([loss.item() * len(idx),
                                  (logits.argmax(1) == y).sum().item(), len(idx)],
                                 dtype=torch.float64)
            if world > 1:
                dist.all_reduce(stats)
            st["step"] += 1
            st["pos"] += 1
            steps_run += 1
            st["loss"].append(float(stats[0] / stats[2]))
            st["acc"].append(float(100 * stats[1] / stats[2]))
            st["log_epoch"].append(st["epoch"])
            st["lr"].append(lr_now)
            bar.update(1)
            if st["step"] % 20 == 0:
                bar.set_postfix(loss=f"{st['loss'][-1]:.3f}", val=st["last_val"])
            if (st["step"] % cfg.train.val_every == 0 and st["pos"] < per_epoch
                    and is_near(st["last_val"], milestones, st["reached"],
                                cfg.train.near_margin)):
                validate()
            if st["step"] % cfg.train.checkpoint_every == 0:
                save_last()
        if not done():
            validate()  # end of epoch
        st["epoch"] += 1
        st["pos"] = 0
    bar.close()

    test_acc: dict[float, float] = {}
    if evaluate is None:
        tidx = torch.arange(len(test_ds.targets))
        for m in sorted(st["reached"]):
            path = out / f"{checkpoint_name(cfg.model.arch, m)}.pt"
            if rank == 0 and not path.exists():
                raise DataError(f"{path}: milestone checkpoint missing (was {out} changed "
                                "during the run?)")
            if world > 1:
                dist.barrier()
            ck = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(ck["state_dict"])
            test_acc[m] = accuracy(model, test_ds, tidx, eval_bs, rank, world)
    missing = [m for m in milestones if m not in st["reached"]]
    if rank == 0:
        write_log(out / LOG, st, cfg, test_acc)
        last.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    seconds = time.perf_counter() - t_start
    result = Result(dict(st["reached"]), missing, st["step"], test_acc, seconds)
    if rank == 0:
        for m, r in sorted(st["reached"].items()):
            print(f"{checkpoint_name(cfg.model.arch, m)}: step {r['step']} epoch {r['epoch']} "
                  f"val {r['val_acc']:.2f}% test {test_acc.get(m, float('nan')):.2f}%")
        print(f"{st['step']} steps in {seconds:.0f} s ({steps_run} this run, "
              f"{world} process(es) x {cfg.train.threads} thread(s))", flush=True)
    if missing and strict:
        best = max(st["val_acc"], default=float("nan"))
        raise MilestonesNotReached(
            f"training ended after {cfg.train.epochs} epochs ({st['step']} steps) without "
            f"reaching validation-accuracy milestone(s) {', '.join(f'{m:g}%' for m in missing)}"
            f" (best validation accuracy {best:.2f}%); checkpoints written for "
            f"{', '.join(f'{m:g}%' for m in sorted(st['reached'])) or 'none'}")
    return result


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.train", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml", help="params.yaml or active.yaml")
    ap.add_argument("--profile", default=None, help="profile of params.yaml (ci/default/paper)")
    ap.add_argument("--data", required=True, help="problem folder (data/raven or data/raven/main)")
    ap.add_argument("--out", required=True, help="output folder (checkpoints, training.nc)")
    ap.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.params, args.profile)
        if cfg.train.nproc > 1 and "WORLD_SIZE" not in os.environ:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={cfg.train.nproc}", "-m", "core.train",
                   *(argv if argv is not None else sys.argv[1:])]
            os.execv(sys.executable, cmd)
        train(cfg, args.data, args.out, progress=not args.no_progress)
    except (ConfigError, DataError, MilestonesNotReached) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
    return 0


def config_from_dict(values: dict[str, Any]) -> Config:
    """A :class:`Config` from a resolved dict (tests build variants of a profile this way)."""
    return from_dict(values, "<dict>")


if __name__ == "__main__":
    raise SystemExit(main())
