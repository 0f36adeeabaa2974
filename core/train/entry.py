"""Train one network to validation-accuracy milestones: checkpoints, training log, resume.

    python -m core.train --params params.yaml --net 0 --data data/raven \\
        --out data/train/net0 --state data/state/train/net0

``--net all`` trains every network of ``train.networks``, ``train.jobs`` processes at a time,
into ``<out>/net<K>`` and ``<state>/net<K>`` (:func:`train_all`). ``--net K`` names one of
``train.networks``; K is the network's seed (weight initialisation and
data order; ``seed`` is the data generation's). ``--data`` is the ``main`` problem folder (or
the folder holding it). With ``train.nproc`` > 1 the same command re-launches itself under
``torchrun`` (:func:`launch`; gloo on CPU, nccl on CUDA with one GPU per rank); only rank 0
writes. :func:`train` is the run of one network in this process; :func:`main` the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.run as torchrun
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from core.config import Config, ConfigError, load
from core.device import DeviceError
from core.lock import LockError, die_with_parent, writer_lock
from core.models.scl import N_CANDIDATES
from core.train.data import DataError, open_splits, val_indices
from core.train.loop import Evaluator, NonFiniteError, Result, finish, train_loop
from core.train.milestones import at_chance
from core.train.setup import setup_process, setup_run
from core.train.state import ResumeError, start


class MilestonesNotReached(RuntimeError):
    """Training ended (epoch budget spent) before every milestone was reached."""


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
