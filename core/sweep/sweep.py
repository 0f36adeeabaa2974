"""One network's mask sweep (:class:`Sweep`): its inputs and their fingerprints, the settings
each mask file records, resume, the parts of each checkpoint's ``evals.nc``; :meth:`Sweep.run`
trains what is missing and evaluates (:class:`core.sweep.schedule.Schedule`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import xarray as xr
from torch import nn

from core import masking
from core.config import Config, MaskConfig, keys
from core.data import RavenDataset
from core.device import resolve_device, resolve_precision, set_deterministic
from core.formats import evals
from core.formats.evals import EVALS
from core.formats.masks import FORMAT, MASK_FILE, MaskError, load_mask
from core.io import file_sha256
from core.models import load_checkpoint
from core.sweep.errors import SweepError
from core.sweep.executors import EXECUTORS
from core.sweep.jobs import Arrays, EvalJob, Job
from core.sweep.plan import PlannedMask, eval_plan, eval_sets, plan, role
from core.sweep.schedule import Schedule
from core.train import data_fingerprint

CKPT_DIR = re.compile(r"[a-z][a-z0-9_]*_\d+(p\d+)?")  # config.checkpoint_name: scl_90, scl_2p5
# masks.* keys a run's file does NOT depend on (core.config roles): which runs exist, the run's
# own alpha (recorded with its seed and set), the evaluation's settings and how the work is
# spread. Every other masks.* key (a new one too) is recorded in each file's settings and
# compared on resume; masks.threads among them: the thread count changes float reduction order.
NOT_RUN_SETTINGS = keys(MaskConfig, "plan", "run", "evaluation", "spread")
EVAL_SETTINGS = keys(MaskConfig, "evaluation")


def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


class Sweep:
    """One network's mask sweep: inputs, fingerprints, resume state, group evaluations."""

    def __init__(self, cfg: Config, network: int, train_dir: Path, data_dir: Path,
                 out: Path, log: Callable[[str], None] = print):
        self.cfg, self.network, self.log = cfg, int(network), log
        self.train_dir, self.data_dir, self.out = Path(train_dir), Path(data_dir), Path(out)
        self.tasks_dir = self.data_dir / "tasks"
        self.runs = plan(cfg)
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        self._sha: dict[str, str] = {}
        self._data: dict[tuple[str, str], Arrays] = {}
        self._models: dict[str, tuple[nn.Module, dict]] = {}
        self._eval_hash: dict[str, str] = {}  # checkpoint -> its evals.nc inputs (eval_parts)

    # ----------------------------------------------------------------- inputs
    def checkpoint_path(self, ckpt: str) -> Path:
        return self.train_dir / f"{ckpt}.pt"

    def checkpoint_sha(self, ckpt: str) -> str:
        key = f"ckpt:{ckpt}"
        if key not in self._sha:
            path = self.checkpoint_path(ckpt)
            if not path.is_file():
                raise SweepError(f"{path}: checkpoint not found (train network {self.network} "
                                 "first: python -m core.train)")
            self._sha[key] = file_sha256(path)
        return self._sha[key]

    def data_sha(self, name: str) -> str:
        key = f"data:{name}"
        if key not in self._sha:
            folder = self.tasks_dir / name
            if not folder.is_dir():
                raise SweepError(f"{folder}: task set not found (data.families must build the "
                                 f"sets of masks.families; run python -m core.raven build)")
            if not any(p.is_file() and not p.name.startswith(".tmp-") for p in folder.rglob("*")):
                raise SweepError(f"{folder}: no data files (build the data first: "
                                 "python -m core.raven build)")
            self._sha[key] = data_fingerprint(folder)
        return self._sha[key]

    def model(self, ckpt: str) -> tuple[nn.Module, dict]:
        if ckpt not in self._models:
            self._models[ckpt] = load_checkpoint(self.checkpoint_path(ckpt),
                                                 arch=self.cfg.model.arch)
        return self._models[ckpt]

    def arrays(self, name: str, split: str, image_size: int) -> Arrays:
        key = (name, split)
        if key not in self._data:
            ds = RavenDataset(self.tasks_dir / name, split=split)
            if ds.image_size != image_size:
                raise SweepError(f"{self.tasks_dir / name}: {ds.image_size} px panels, but the "
                                 f"checkpoints were trained on {image_size} px")
            self._data[key] = (ds.images.numpy(), ds.targets.numpy())
        return self._data[key]

    def check_inputs(self) -> None:
        """Every checkpoint and evaluation set checked (and fingerprinted) before any work."""
        for ckpt in self.cfg.checkpoints:
            self.checkpoint_sha(ckpt)
        for name in eval_sets(self.runs, self.cfg.masks.tasks):
            self.data_sha(name)

    # ----------------------------------------------------------------- settings
    def settings(self, r: PlannedMask) -> dict:
        """What the file of ``r`` is made from; equal settings = a reusable file."""
        mc = dataclasses.asdict(self.cfg.masks)
        sets = [r.task] + ([r.complement] if r.complement else [])
        return json.loads(json.dumps({
            "format": FORMAT, "network": self.network, "checkpoint": r.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha(r.checkpoint), "family": r.family,
            "task": r.task, "complement": r.complement, "alpha": r.alpha, "seed": r.seed,
            "masks": {k: v for k, v in mc.items() if k not in NOT_RUN_SETTINGS},
            "eval_batch_size": self.cfg.train.eval_batch_size,
            "data": {s: self.data_sha(s) for s in sets},
            "device": self.device.type, "precision": self.precision}))

    def eval_inputs(self, ckpt: str, runs: Sequence[PlannedMask]) -> str:
        """Hash of everything ``evals.nc`` of ``ckpt`` is computed from."""
        mc = dataclasses.asdict(self.cfg.masks)
        names = eval_sets(runs, self.cfg.masks.tasks)
        return _json_hash({
            "masks": {r.name: file_sha256(self.out / r.relpath) for r in runs},
            "plan": {k: {v: sorted(map(list, p)) for v, p in vs.items()}
                     for k, vs in eval_plan(runs, self.cfg.masks).items()},
            "settings": {k: mc[k] for k in EVAL_SETTINGS},
            "eval_batch_size": self.cfg.train.eval_batch_size,
            "checkpoint_sha256": self.checkpoint_sha(ckpt),
            "data": {s: self.data_sha(s) for s in names},
            "device": self.device.type, "precision": self.precision})

    def jobs(self, chunk: Sequence[PlannedMask]
             ) -> tuple[nn.Module, list[Job], list[tuple[Arrays, Arrays, Arrays | None]]]:
        """The model of the runs in ``chunk`` (one checkpoint), their jobs and their (train,
        val, complement val) data: the arguments of :func:`core.sweep.jobs.train_one` or
        :func:`core.sweep.jobs.train_chunk`."""
        model, meta = self.model(chunk[0].checkpoint)
        size = int(meta["image_size"])
        jobs, arrays = [], []
        for r in chunk:
            jobs.append(Job(r, self.network, self.cfg.masks, self.settings(r),
                            str(meta["arch"]), size, str(self.device), self.precision,
                            self.cfg.train.eval_batch_size))
            arrays.append((self.arrays(r.task, "train", size),
                           self.arrays(r.task, "val", size),
                           None if r.complement is None else
                           self.arrays(r.complement, "val", size)))
        return model, jobs, arrays

    # ----------------------------------------------------------------- resume
    def clean(self) -> None:
        """Remove ``.tmp-*`` litter, mask files and evaluations not in the plan, and empty
        checkpoint folders. Only what the sweep writes is touched (``<ckpt>/<set>-a<alpha>-
        s<seed>.pt``, ``<ckpt>/evals.nc``, ``.tmp-*`` of those); other files are left alone
        and named. A folder holding a git repository or the current directory is refused."""
        if not self.out.exists():
            return
        if not self.out.is_dir():
            raise SweepError(f"{self.out}: not a folder (expected the network's mask folder)")
        if (self.out / ".git").exists() or self.out.resolve() == Path.cwd().resolve():
            raise SweepError(f"{self.out}: refusing to use this folder as a mask folder (the "
                             "current directory or a repository); give data/masks/net<k>")
        wanted = {r.relpath for r in self.runs} | {f"{c}/{EVALS}" for c in self.cfg.checkpoints}
        for d in sorted(p for p in self.out.iterdir() if p.is_dir() and CKPT_DIR.fullmatch(p.name)):
            for p in sorted(d.iterdir()):
                rel = f"{d.name}/{p.name}"
                if not p.is_file():
                    continue
                if p.name.startswith(".tmp-") and (p.suffix in (".pt", ".nc")):
                    p.unlink()
                    self.log(f"removed litter {p}")
                elif (MASK_FILE.fullmatch(p.name) or p.name == EVALS) and rel not in wanted:
                    p.unlink()
                    self.log(f"removed stale {p} (not in the plan of this configuration)")
            if not any(d.iterdir()):
                d.rmdir()
        others = [p for p in self.out.rglob("*") if p.is_file() and
                  p.relative_to(self.out).as_posix() not in wanted]
        if others:
            self.log(f"note: {self.out} holds files the sweep does not know (left alone): "
                     + ", ".join(str(p) for p in others[:5]))

    def is_done(self, r: PlannedMask) -> bool:
        """A finished file with the settings this run would use now (else it is removed)."""
        path = self.out / r.relpath
        if not path.exists():
            return False
        try:
            rec = load_mask(path, expect={"network": self.network, "checkpoint": r.checkpoint,
                                          "task": r.task, "alpha": r.alpha, "seed": r.seed})
        except MaskError as err:
            self.log(f"retraining {path}: {err}")
            path.unlink()
            return False
        if rec["settings"] != self.settings(r):
            self.log(f"retraining {path}: made with other settings")
            path.unlink()
            return False
        return True

    def todo(self) -> list[PlannedMask]:
        """The runs without a reusable file (:meth:`is_done`). The last checkpoint first: it
        has the most masks and the largest evaluation, whose parts then run beside the earlier
        checkpoints' masks."""
        last_first = {c: i for i, c in enumerate(reversed(self.cfg.checkpoints))}
        return sorted((r for r in self.runs if not self.is_done(r)),
                      key=lambda r: last_first[r.checkpoint])

    # ----------------------------------------------------------------- group evaluation
    def eval_parts(self, ckpt: str) -> list[tuple[EvalJob, tuple]] | None:
        """The parts of ``<ckpt>/evals.nc`` as (job, arguments of
        :func:`core.sweep.jobs.evaluate_one`), or None when the file is up to date (a stale or
        unreadable one is removed). One part per (family, seed) of the checkpoint's masks, each
        given only its sets; the unmasked model is evaluated on each set once, in the first part
        that has the set."""
        runs = [r for r in self.runs if r.checkpoint == ckpt]
        path = self.out / ckpt / EVALS
        inputs = self._eval_hash[ckpt] = self.eval_inputs(ckpt, runs)  # (write_evals uses it)
        if path.exists():
            try:
                with xr.open_dataset(path) as old:
                    if old.attrs.get("inputs_sha256") == inputs:
                        return None
            except (OSError, ValueError):
                pass
            path.unlink()
        mc = self.cfg.masks
        model, meta = self.model(ckpt)
        size = int(meta["image_size"])
        masks = {r.name: load_mask(self.out / r.relpath, model)["mask"] for r in runs}
        info = {r.name: {"task": r.task, "family": r.family, "seed": r.seed, "alpha": r.alpha,
                         "role": role(r)} for r in runs}
        plan = eval_plan(runs, mc)
        names = eval_sets(runs, mc.tasks)
        groups: dict[tuple[str, int], list[PlannedMask]] = {}
        for r in runs:
            groups.setdefault((r.family, r.seed), []).append(r)
        parts, given = [], set()
        for i, group in enumerate(groups.values()):
            need = {n for r in group for pairs in plan[r.name].values() for n, _ in pairs}
            if i == len(groups) - 1:  # every set gets its unmasked evaluation somewhere
                need |= set(names) - given
            sets = [n for n in names if n in need]
            full = tuple(n for n in sets if n not in given)
            given |= set(full)
            job = EvalJob(ckpt, mc, str(self.device), self.precision,
                          self.cfg.train.eval_batch_size, info, plan,
                          tuple(r.name for r in group), full)
            arrays = {n: (self.arrays(n, "val", size), self.arrays(n, "test", size))
                      for n in sets}
            parts.append((job, (model, masks, arrays)))
        return parts

    def write_evals(self, ckpt: str, parts: Sequence[dict]) -> None:
        """``<ckpt>/evals.nc`` from its evaluated parts (atomically)."""
        runs = [r for r in self.runs if r.checkpoint == ckpt]
        mc = self.cfg.masks
        ds = masking.merge_parts(parts, [r.name for r in runs], eval_sets(runs, mc.tasks),
                                 tol=mc.degenerate_tol, degenerate_max=mc.degenerate_max)
        ds.attrs.update({"network": self.network, "checkpoint": ckpt,
                         "inputs_sha256": self._eval_hash[ckpt]})
        evals.write(self.out / ckpt / EVALS, ds)

    # ----------------------------------------------------------------- the whole sweep
    def run(self, executor: str = "inprocess", workers: int = 1, progress: bool = False) -> dict:
        """Train what is missing, evaluate every checkpoint; the timing summary. With
        ``progress``: a bar over the masks to train and one over the evaluation parts (instead
        of a log line per mask; ``core.progress``).

        Mask runs and evaluation parts share one pool: a checkpoint's parts are submitted as
        soon as its last mask is written, so no core waits for one process's evaluation (in
        this process it took 443 of the 1250 s of a network's stage at 400 problems per
        split, measured, the pool idle meanwhile)."""
        if executor not in EXECUTORS:
            raise SweepError(f"--executor: expected one of {', '.join(EXECUTORS)}, "
                             f"got {executor!r}")
        t0 = time.perf_counter()
        torch.set_num_threads(self.cfg.masks.threads)
        set_deterministic(self.device)
        self.check_inputs()
        self.clean()
        todo = self.todo()
        self.log(f"network {self.network}: {len(self.runs)} masks, {len(self.runs) - len(todo)} "
                 f"kept, {len(todo)} to train ({executor})")
        schedule = Schedule(self, todo, executor, workers, progress)
        try:
            schedule.submit_runs()
            setup = time.perf_counter() - t0  # checks, fingerprints, resume, models, data
            schedule.drain()
        finally:
            schedule.close()
        return schedule.summary(time.perf_counter() - t0, setup)
