"""Train every mask of one network in one process; resume a killed sweep; one HTML report.

    python -m core.sweep --params params.yaml --net 0 --train data/train/net0 \\
        --data data/raven --out data/masks/net0 --report data/reports/masks/net0.html \\
        [--executor inprocess|process|ray] [--workers N]   (or MASKS_EXECUTOR=ray in the environment)

The mask list (:func:`plan`) comes from the configuration: for every checkpoint
(``train.milestones``; only the last for the families in ``masks.families_last``), every task
of ``masks.families`` (``core.tasks``; a task that names a shape only when the shape is in
``masks.tasks``; before the last checkpoint, in ``masks.tasks_early`` when that is set) and
every seed of ``masks.seeds`` at ``masks.alpha``; for the families in
``masks.complement_masks`` also each task's complement and the family's reference set (the
complement protocol; ``seeds[0]`` only); plus the alpha sweep (``masks.alpha_sweep``) of every
task of the families masked at every checkpoint, at the last checkpoint with ``seeds[0]``. Each run is written atomically to
``<out>/<checkpoint>/<set>-a<alpha>-s<seed>.pt`` (``core.formats.masks``).

Every checkpoint and every data split is loaded once per process (no per-mask start-up).
Executors: ``inprocess`` (one run after another), ``process`` (``masks.workers`` spawned
processes, the default when that is > 1) or ``ray`` (each mask run a Ray
task asking for ``masks.threads`` CPUs and, on CUDA, ``masks.gpu_share`` of a GPU; a local Ray
on this machine with ``--workers`` runs at a time, or the cluster at ``RAY_ADDRESS``). A run
is a pure function of its inputs, so both executors write byte-identical files.

Resume: a sweep killed midway and started again keeps every finished mask file whose recorded
``settings`` (mask settings, alpha, seed, sets, checkpoint and data fingerprints, device type,
precision) equal the ones it would use now and trains only the rest; files of other settings,
files no longer in the plan and ``.tmp-*`` litter of interrupted writes are removed. (The DVC
stage declares ``data/masks/net<k>`` with ``persist: true`` so this works under ``dvc repro``.)

After the last mask of a checkpoint, its masks are evaluated (mask, inverted and selective
ablations on every evaluation set of their families, select = ``val`` and report = ``test``
splits; ``core.masking.evaluate_part``, one part per family and seed, in the same pool as the
mask runs) into ``<out>/<checkpoint>/evals.nc`` (``core.masking.merge_parts``: the same bytes
as one ``evaluate_group`` call), kept on resume when its inputs (mask files, evaluation
settings, data) are unchanged.
Inference (final accuracies, evaluations) runs in batches of ``train.eval_batch_size``.

Timing: each run records its compute seconds (training + its final evaluation); the summary
(:meth:`Sweep.run`) has them with the sweep's wall time, and the report shows the overhead share.

``--report`` runs the whole sweep through the mask notebook (``analysis/train_masks.ipynb``,
what the ``masks`` stage runs: one kernel trains the masks, then reads them back into the HTML
report) and writes the timing summary to ``<report>.json`` beside it (outputs in ``<out>`` stay
byte-identical). Without it the sweep runs here, for scripting. Progress: a bar over the masks
and one over the evaluation parts (``core.progress``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from core import maskgroup, masking
from core.config import SHAPES, Config, ConfigError, MaskConfig, load
from core.data import RavenDataset, RavenFileError, to_float
from core.device import DeviceError, resolve_device, resolve_precision, set_deterministic
from core.formats import evals
from core.formats.evals import EVALS
from core.formats.masks import (
    ACCURACY_KEYS,
    FORMAT,
    MASK_FILE,
    MaskError,
    load_mask,
    mask_name,
    mask_record,
)
from core.io import atomic_write_bytes, file_sha256, torch_bytes
from core.lock import LockError, die_with_parent, writer_lock
from core.models import CheckpointError, load_checkpoint
from core.notebook import ParameterError
from core.notebook import run as run_notebook
from core.progress import bar as progress_bar
from core.tasks import FAMILIES
from core.train import data_fingerprint

EXECUTORS = ("inprocess", "process", "ray")
CKPT_DIR = re.compile(r"[a-z][a-z0-9_]*_\d+(p\d+)?")  # config.checkpoint_name: scl_90, scl_2p5
# masks.* keys a run's file does NOT depend on: which runs exist (the run's own alpha, seed and
# set are recorded separately), the Ray GPU share and the group evaluation's settings. Every
# other masks.* key (a new one too) is recorded in each file's settings and compared on resume;
# masks.threads among them: the thread count changes float reduction order (~1e-7 in logits).
NOT_RUN_SETTINGS = ("tasks", "alpha", "alpha_sweep", "seeds", "families", "complement_masks",
                    "families_last", "gpu_share", "degenerate_tol", "degenerate_max", "workers",
                    "eval_n", "tasks_early")
# A run's own final accuracies (the file's ``accuracy``: a quick look for the per-network
# report) are measured on this many problems per set; the study's accuracies are evals.nc's,
# on masks.eval_n problems per split. (All six on 400 problems cost ~7 s of a ~30 s run.)
QUICK_N = 100
EVAL_SETTINGS = ("eval_n", "degenerate_tol", "degenerate_max")
# inference batches (final accuracies, evals.nc): train.eval_batch_size (measured there)


class SweepError(ValueError):
    """A bad sweep input; the message names the file, folder or parameter."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Run:
    """One mask run: trained on ``task`` (of ``family``) at ``checkpoint``; its final
    accuracies compare ``task`` with ``complement`` (None for a family's reference set)."""

    checkpoint: str
    family: str
    task: str
    complement: str | None
    alpha: float
    seed: int

    @property
    def name(self) -> str:
        return mask_name(self.task, self.alpha, self.seed)

    @property
    def relpath(self) -> str:
        return f"{self.checkpoint}/{self.name}.pt"


def _shape_selected(task: str, shapes: Sequence[str]) -> bool:
    """A task naming a shape (``circle``, ``rule_not_circle``) is trained only when the shape
    is in ``masks.tasks``; tasks naming no shape (``color_rule``) always."""
    named = set(task.split("_")) & set(SHAPES)
    return named <= set(shapes)


def mask_sets(mc: MaskConfig) -> list[tuple[str, str, str | None, bool]]:
    """(family, set, complement, is_task) of every set masks are trained on, in order."""
    for key in ("complement_masks", "families_last"):  # (a family not in families: no masks)
        extra = [f for f in getattr(mc, key) if f not in FAMILIES]
        if extra:
            raise ConfigError(f"masks.{key}: unknown family {extra[0]!r} (expected one of "
                              f"{', '.join(FAMILIES)})")
    out: dict[str, tuple[str, str, str | None, bool]] = {}
    for fam_name in mc.families:
        if fam_name not in FAMILIES:
            raise ConfigError(f"masks.families: unknown family {fam_name!r} (expected one of "
                              f"{', '.join(FAMILIES)})")
        fam = FAMILIES[fam_name]
        tasks = [t for t in fam.tasks if _shape_selected(t, mc.tasks)]
        for t in tasks:
            out.setdefault(t, (fam_name, t, fam.complement(t), True))
        if fam_name in mc.complement_masks:
            for t in tasks:
                c = fam.complement(t)
                out.setdefault(c, (fam_name, c, t, False))
            if fam.reference is not None:
                out.setdefault(fam.reference, (fam_name, fam.reference, None, False))
    if not out:
        raise ConfigError(f"masks.tasks {list(mc.tasks)} selects no task of masks.families "
                          f"{list(mc.families)}")
    return list(out.values())


def plan(cfg: Config) -> list[Run]:
    """Every mask run of one network, grouped by checkpoint (see the module docstring)."""
    mc = cfg.masks
    sets = mask_sets(mc)
    runs: dict[str, Run] = {}
    last = cfg.checkpoints[-1]
    for ckpt in cfg.checkpoints:
        for fam, task, comp, is_task in sets:
            if fam in mc.families_last and ckpt != last:
                continue
            if ckpt != last and mc.tasks_early and not _shape_selected(task, mc.tasks_early):
                continue
            for seed in mc.seeds if is_task else mc.seeds[:1]:
                r = Run(ckpt, fam, task, comp, float(mc.alpha), int(seed))
                runs.setdefault(r.relpath, r)
        if ckpt == last:
            for fam, task, comp, is_task in sets:
                if not is_task or fam in mc.families_last:
                    continue
                for alpha in mc.alpha_sweep:
                    r = Run(ckpt, fam, task, comp, float(alpha), int(mc.seeds[0]))
                    runs.setdefault(r.relpath, r)
    return list(runs.values())


def role(r: Run) -> str:
    """``task``, ``complement`` or ``reference``: what the run's set is to its family."""
    fam = FAMILIES[r.family]
    return "task" if r.task in fam.tasks else "reference" if r.task == fam.reference else \
        "complement"


def eval_plan(runs: Sequence[Run], mc: MaskConfig) -> dict[str, dict[str, set[tuple[str, str]]]]:
    """What ``evals.nc`` evaluates for each run (key: the run's name), all on the family's
    task sets (those selected by ``masks.tasks``): a task mask at ``masks.alpha``: the mask
    on its own set (select and report split) and the other tasks' sets (report), the
    selective ablation on every task set (report), the inverted ablation on its own set
    (report) only: with the whole module removed SCL outputs equal logits for all candidates
    (degenerate on 160 of 160 evaluations of the reference run, 100% of problems each), so
    the other sets would cost a fifth of the evaluation and add only degenerate entries (the
    own set still shows the degeneracy); an alpha-sweep mask: the mask on its
    own set (both splits: the selection rule reads select); a complement or reference mask:
    its own set (both splits) and every task set (report; the complement protocol). The
    specificity, sharing and complement numbers read nothing else, so nothing else is paid
    for (measured: evaluating 3 variants x 10 sets x 2 splits per mask cost more than
    training it)."""
    out: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for r in runs:
        tasks = [t for t in FAMILIES[r.family].tasks if _shape_selected(t, mc.tasks)]
        own = {(r.task, "select"), (r.task, "report")}
        report = {(t, "report") for t in tasks}
        if role(r) != "task":
            out[r.name] = {"mask": own | report}
        elif r.alpha == float(mc.alpha):
            out[r.name] = {"mask": own | report, "inverted": {(r.task, "report")},
                           "selective": report}
        else:
            out[r.name] = {"mask": own}
    return out


def eval_sets(runs: Sequence[Run], shapes: Sequence[str]) -> list[str]:
    """Evaluation sets of a checkpoint's masks: their families' task sets (those naming a
    shape only when it is in ``shapes`` = ``masks.tasks``), plus every set a mask was trained
    on (a complement or reference set, for instance)."""
    names = [s for fam in dict.fromkeys(r.family for r in runs) for s in FAMILIES[fam].tasks
             if _shape_selected(s, shapes)]
    return list(dict.fromkeys([*names, *(r.task for r in runs)]))


# --------------------------------------------------------------------------- fingerprints


def _json_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Job:
    """Everything one mask run needs besides the model and the data (picklable)."""

    run: Run
    network: int
    masks: MaskConfig
    settings: dict
    arch: str
    image_size: int
    device: str
    precision: str
    eval_batch: int


Arrays = tuple[np.ndarray, np.ndarray]  # uint8 panels [N, 16, H, W], int64 targets [N]


def _split(arrays: Arrays, name: str, n: int = 0) -> masking.Split:
    images, targets = arrays
    with warnings.catch_warnings():  # Ray hands out read-only arrays; nothing writes to them
        warnings.simplefilter("ignore", UserWarning)
        x, y = torch.from_numpy(images), torch.from_numpy(targets)
    return masking.Split(x, y, to_float, name).head(n)


def train_one(job: Job, model: nn.Module, train: Arrays, val: Arrays,
              complement_val: Arrays | None) -> tuple[bytes, float]:
    """Train and evaluate one mask; return the mask file's bytes and the compute seconds.

    The same function runs in this process or in a Ray worker: it sets the thread count and
    deterministic kernels itself, so the bytes do not depend on where it ran.
    """
    t0 = time.perf_counter()
    mc, r = job.masks, job.run
    torch.set_num_threads(mc.threads)
    dev = torch.device(job.device)
    set_deterministic(dev)
    # the curve (and so the convergence flag) reads masks.curve_n problems of the val split
    result = masking.train_mask(model, mc, _split(train, f"{r.task}/train"),
                                _split(val, f"{r.task}/val", mc.curve_n), alpha=r.alpha,
                                seed=r.seed,
                                steps=mc.steps, device=dev, precision=job.precision)
    return _record(job, model, result, val, complement_val), time.perf_counter() - t0


def train_chunk(jobs: Sequence[Job], model: nn.Module,
                arrays: Sequence[tuple[Arrays, Arrays, Arrays | None]]
                ) -> tuple[list[bytes], float]:
    """:func:`train_one` for several runs of one checkpoint trained in one group
    (``masks.group``, :func:`core.maskgroup.train_group`); ``arrays`` (train, val,
    complement val) per run. The mask files' bytes in ``jobs`` order, the compute seconds."""
    t0 = time.perf_counter()
    mc = jobs[0].masks
    torch.set_num_threads(mc.threads)
    dev = torch.device(jobs[0].device)
    set_deterministic(dev)
    members = [maskgroup.Member(_split(train, f"{j.run.task}/train"),
                                _split(val, f"{j.run.task}/val", mc.curve_n), j.run.alpha,
                                j.run.seed) for j, (train, val, _) in zip(jobs, arrays)]
    results = maskgroup.train_group(model, mc, members, steps=mc.steps, device=dev,
                                    precision=jobs[0].precision)
    return ([_record(j, model, res, val, comp)
             for j, res, (_, val, comp) in zip(jobs, results, arrays)],
            time.perf_counter() - t0)


def _record(job: Job, model: nn.Module, result: masking.MaskResult, val: Arrays,
            complement_val: Arrays | None) -> bytes:
    """The mask file of one trained run: its quick final accuracies and its record."""
    mc, r = job.masks, job.run
    dev = torch.device(job.device)
    task_val = _split(val, f"{r.task}/val", QUICK_N)
    masked = masking.MaskedModel(model, names=result.names, device=dev, precision=job.precision)
    other = task_val if complement_val is None else _split(
        complement_val, f"{r.complement}/val", QUICK_N)
    acc = masking.evaluate(masked, result.mask, task_val, other, job.eval_batch)
    if complement_val is None:  # a reference set has no complement
        acc.update({k: float("nan") for k in ACCURACY_KEYS if k.startswith("not_task")})
    rec = mask_record(result, acc, checkpoint=r.checkpoint, task=r.task, alpha=r.alpha,
                      seed=r.seed, steps=mc.steps, arch=job.arch, image_size=job.image_size,
                      network=job.network, family=r.family, settings=job.settings)
    return torch_bytes(rec)


@dataclass(frozen=True)
class EvalJob:
    """One part of a checkpoint's ``evals.nc`` (picklable): the masks ``only`` on their
    planned pairs, the unmasked model on ``full_sets`` (``core.masking.evaluate_part``)."""

    checkpoint: str
    masks: MaskConfig
    device: str
    precision: str
    eval_batch: int
    info: dict
    plan: dict
    only: tuple[str, ...]
    full_sets: tuple[str, ...]


def evaluate_one(job: EvalJob, model: nn.Module, masks: dict[str, dict[str, torch.Tensor]],
                 arrays: dict[str, tuple[Arrays, Arrays]]) -> tuple[dict, float]:
    """Evaluate one part; return it (plain arrays) and the compute seconds. Like
    :func:`train_one` it sets threads and deterministic kernels itself."""
    t0 = time.perf_counter()
    mc = job.masks
    torch.set_num_threads(mc.threads)
    dev = torch.device(job.device)
    set_deterministic(dev)
    sets = {s: (_split(val, f"{s}/val", mc.eval_n), _split(test, f"{s}/test", mc.eval_n))
            for s, (val, test) in arrays.items()}
    part = masking.evaluate_part(model, masks, sets, info=job.info, batch_size=job.eval_batch,
                                 tol=mc.degenerate_tol, device=dev, precision=job.precision,
                                 plan=job.plan, only=list(job.only), full_sets=list(job.full_sets))
    return part, time.perf_counter() - t0


# --------------------------------------------------------------------------- executors


class InProcess:
    """One call after another in this process, in submission order."""

    def __init__(self, workers: int = 1):
        self._queue: deque[tuple[Any, Callable[..., Any], tuple]] = deque()

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.append((key, fn, args))

    def __len__(self) -> int:
        return len(self._queue)

    def next(self) -> tuple[Any, Any]:
        key, fn, args = self._queue.popleft()
        return key, fn(*args)

    def close(self) -> None:
        self._queue.clear()


def _die_with_parent() -> None:
    """Process-pool initializer: on Linux, a worker gets SIGTERM when the sweep dies (a killed
    sweep would otherwise leave its idle workers behind)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """``workers`` spawned processes on this machine, one call each at a time (``masks.threads``
    threads per call); results in completion order (ties by key). Two 1-thread runs side by
    side do ~1.7x the steps of one 2-thread run on the default machine (SCL 64 px, batch 8: 172
    vs 103 problems/s, measured), which is what the process executor is for. Models and splits
    are pickled to the worker with each call (~0.1 GB at 64 px: well under a second against
    ~30 s of work)."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=workers,
                                         mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_die_with_parent)
        self._pending: dict[Any, Any] = {}
        self._done: deque[tuple[Any, Any]] = deque()

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        self._pending[self._pool.submit(fn, *args)] = key

    def __len__(self) -> int:
        return len(self._pending) + len(self._done)

    def next(self) -> tuple[Any, Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        if not self._done:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: str(self._pending[f])):
                self._done.append((self._pending.pop(fut), fut))
        key, fut = self._done.popleft()
        return key, fut.result()  # a call's error is raised here, as itself

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _ray_call(fn: Callable[..., Any], job: Any, *args: Any) -> Any:
    def visible(j: Any) -> Any:  # Ray makes the task's GPU the visible one
        return dataclasses.replace(j, device="cuda") if torch.device(
            j.device).type == "cuda" else j
    return fn([visible(j) for j in job] if isinstance(job, list) else visible(job), *args)


class RayTasks:
    """Each call a Ray task (``masks.threads`` CPUs, ``masks.gpu_share`` GPU on CUDA); models
    and data go to the object store once. Local Ray with ``workers`` calls at a time, or the
    cluster at ``RAY_ADDRESS``. Results come back in completion order."""

    def __init__(self, workers: int, threads: int):
        try:
            import ray
        except ImportError:
            raise SweepError("--executor ray: ray is not installed (pip install -e '.[ray]')"
                             ) from None
        self._ray, self._started = ray, False
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS")
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=max(1, workers) * threads, **kw)
            self._started = True
        self._refs: dict[int, Any] = {}
        self._keep: list[Any] = []  # the objects behind _refs stay alive (ids stay unique)
        self._pending: dict[Any, Any] = {}
        self._remote = ray.remote(_ray_call)

    def _put(self, obj: Any) -> Any:
        if obj is None or isinstance(obj, (str, int, float)):
            return obj
        if id(obj) not in self._refs:
            self._refs[id(obj)] = self._ray.put(obj)
            self._keep.append(obj)
        return self._refs[id(obj)]

    def submit(self, key: Any, fn: Callable[..., Any], job: Any, *args: Any) -> None:
        first = job[0] if isinstance(job, list) else job  # a group's jobs share the settings
        gpu = first.masks.gpu_share if torch.device(first.device).type == "cuda" else 0
        fut = self._remote.options(num_cpus=first.masks.threads, num_gpus=gpu, max_retries=0
                                   ).remote(fn, job, *(self._put(a) for a in args))
        self._pending[fut] = key

    def __len__(self) -> int:
        return len(self._pending)

    def next(self) -> tuple[Any, Any]:
        done, _ = self._ray.wait(list(self._pending), num_returns=1)
        key = self._pending.pop(done[0])
        try:
            return key, self._ray.get(done[0])
        except self._ray.exceptions.RayTaskError as err:  # the call's own error, not Ray's
            cause = getattr(err, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def make_executor(executor: str, workers: int, threads: int) -> InProcess | Processes | RayTasks:
    """The executor by name (``process`` with one worker runs in this process)."""
    if executor == "ray":
        return RayTasks(workers, threads)
    if executor == "process" and workers > 1:
        return Processes(workers)
    return InProcess(workers)


# --------------------------------------------------------------------------- the sweep


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

    # ----------------------------------------------------------------- settings
    def settings(self, r: Run) -> dict:
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

    def eval_inputs(self, ckpt: str, runs: Sequence[Run]) -> str:
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

    def is_done(self, r: Run) -> bool:
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

    # ----------------------------------------------------------------- group evaluation
    def eval_parts(self, ckpt: str) -> list[tuple[EvalJob, tuple]] | None:
        """The parts of ``<ckpt>/evals.nc`` as (job, arguments of :func:`evaluate_one`), or
        None when the file is up to date (a stale or unreadable one is removed). One part per
        (family, seed) of the checkpoint's masks, each given only its sets; the unmasked model
        is evaluated on each set once, in the first part that has the set."""
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
        groups: dict[tuple[str, int], list[Run]] = {}
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
        for ckpt in self.cfg.checkpoints:  # every input checked (and fingerprinted) first
            self.checkpoint_sha(ckpt)
        for name in eval_sets(self.runs, self.cfg.masks.tasks):
            self.data_sha(name)
        self.clean()
        # The last checkpoint first: it has the most masks and the largest evaluation, whose
        # parts then run beside the earlier checkpoints' masks.
        last_first = {c: i for i, c in enumerate(reversed(self.cfg.checkpoints))}
        todo = sorted((r for r in self.runs if not self.is_done(r)),
                      key=lambda r: last_first[r.checkpoint])
        kept = len(self.runs) - len(todo)
        self.log(f"network {self.network}: {len(self.runs)} masks, {kept} kept, "
                 f"{len(todo)} to train ({executor})")
        pool = make_executor(executor, workers, self.cfg.masks.threads)
        timings: list[dict] = []
        eval_seconds: dict[str, float] = {}
        parts: dict[str, list[dict]] = {}
        n_parts: dict[str, int] = {}
        remaining = {c: sum(r.checkpoint == c for r in todo) for c in self.cfg.checkpoints}
        off = {} if progress else {"disable": True}
        mask_bar = progress_bar(total=len(todo), desc=f"masks net{self.network}", unit="mask",
                                **off)
        # one evaluation part per (family, seed) of a checkpoint's masks (eval_parts)
        expected = {c: len({(r.family, r.seed) for r in self.runs if r.checkpoint == c})
                    for c in self.cfg.checkpoints}
        eval_bar = progress_bar(total=sum(expected.values()), unit="part", position=1,
                                desc=f"evaluate net{self.network}", **off)

        def evaluate(ckpt: str) -> None:
            todo_parts = self.eval_parts(ckpt)
            if todo_parts is None:
                self.log(f"{self.out / ckpt / EVALS}: up to date")
                eval_bar.total -= expected[ckpt]
                eval_bar.refresh()
                return
            if eval_bar.n == 0 and not eval_seconds:  # the first parts: the bar's clock starts now
                eval_bar.reset(total=eval_bar.total)
            eval_bar.total += len(todo_parts) - expected[ckpt]
            parts[ckpt], n_parts[ckpt], eval_seconds[ckpt] = [], len(todo_parts), 0.0
            for i, (job, args) in enumerate(todo_parts):
                pool.submit(("eval", ckpt, i), evaluate_one, job, *args)

        try:
            # masks.group > 1: runs of one checkpoint in chunks of that many, one call each
            chunks: list[list[Run]] = []
            for r in todo:
                if (chunks and chunks[-1][0].checkpoint == r.checkpoint
                        and len(chunks[-1]) < self.cfg.masks.group):
                    chunks[-1].append(r)
                else:
                    chunks.append([r])
            for chunk in chunks:
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
                if len(chunk) == 1:
                    pool.submit(("run", chunk[0].relpath), train_one, jobs[0], model,
                                *arrays[0])
                else:
                    pool.submit(("run", tuple(r.relpath for r in chunk)), train_chunk, jobs,
                                model, arrays)
            setup = time.perf_counter() - t0  # checks, fingerprints, resume, models, data
            for ckpt in self.cfg.checkpoints:
                if remaining[ckpt] == 0:
                    evaluate(ckpt)
            by_path = {r.relpath: r for r in todo}
            while len(pool):
                key, (result, seconds) = pool.next()
                if key[0] == "run":
                    done = ([(key[1], result)] if isinstance(key[1], str) else
                            list(zip(key[1], result)))
                    for relpath, data in done:  # a group's seconds shared by its masks
                        r = by_path[relpath]
                        atomic_write_bytes(self.out / r.relpath, data)
                        timings.append({"mask": r.relpath, "compute_s": seconds / len(done)})
                        mask_bar.update(1)
                        if mask_bar.n == mask_bar.total:
                            mask_bar.close()  # (no more refreshes while the evaluations finish)
                        if not progress:
                            self.log(f"{self.out / r.relpath}: {seconds / len(done):.1f} s "
                                     f"({len(timings)}/{len(todo)})")
                        remaining[r.checkpoint] -= 1
                        if remaining[r.checkpoint] == 0:
                            evaluate(r.checkpoint)
                else:
                    ckpt = key[1]
                    parts[ckpt].append(result)
                    eval_seconds[ckpt] += seconds
                    eval_bar.update(1)
                    if len(parts[ckpt]) == n_parts[ckpt]:
                        self.write_evals(ckpt, parts[ckpt])
                        self.log(f"{self.out / ckpt / EVALS}: written ({n_parts[ckpt]} parts, "
                                 f"{eval_seconds[ckpt]:.1f} s)")
        finally:
            mask_bar.close()
            eval_bar.close()
            pool.close()
        wall = time.perf_counter() - t0
        compute = sum(t["compute_s"] for t in timings)
        eval_s = sum(eval_seconds.values())
        # the work spread over the lanes that ran it (one after another in process: 1 lane);
        # overhead = wall time not explained by that work: loading, resume checks, writing,
        # and, with a pool, a worker idling (e.g. waiting for the last run of a checkpoint)
        lanes = 1 if executor == "inprocess" else max(1, workers)
        busy = (compute + eval_s) / lanes
        return {"network": self.network, "executor": executor, "workers": workers,
                "masks": len(self.runs), "kept": kept, "trained": len(todo),
                "wall_s": wall, "setup_s": setup, "compute_s": compute, "group_eval_s": eval_s,
                "overhead_s": wall - busy,
                "overhead_share": (wall - busy) / busy if busy > 0 else None,
                "speedup": (compute + eval_s) / wall if wall > 0 else None,
                "pool_efficiency": (busy / wall if wall > 0 and executor != "inprocess"
                                    else None),
                "runs": timings, "device": str(self.device), "precision": self.precision}


def process_age() -> float | None:
    """Seconds since this process started (interpreter start and imports included; Linux
    /proc), or None where that is not readable."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - start
    except (OSError, ValueError, IndexError):
        return None


def report(notebook: Path, html: Path, args: argparse.Namespace) -> None:
    """The sweep through the mask notebook (one kernel: it trains the masks, then reads them
    back into the HTML report; the timing JSON beside it), as the masks stage runs it."""
    run_notebook(notebook, html, {
        "params": str(args.params), "profile": args.profile or "", "network": int(args.net),
        "train_dir": str(args.train), "data": str(args.data), "out": str(args.out),
        "executor": args.executor or "", "workers": args.workers or 0,
        "timing": str(html.with_suffix(".json"))})


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(prog="python -m core.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml", help="the parameters file (params.yaml)")
    ap.add_argument("--profile", default=None,
                    help="use this profile (composed from conf/ when the file holds another)")
    ap.add_argument("--net", type=int, required=True, help="network seed (train.networks)")
    ap.add_argument("--train", required=True, help="the network's checkpoints (data/train/netK)")
    ap.add_argument("--data", default="data/raven", help="data folder holding tasks/<set>/")
    ap.add_argument("--out", required=True, help="the network's mask folder (data/masks/netK)")
    ap.add_argument("--report", default=None, help="run the sweep through the mask notebook "
                    "(--notebook) and write its HTML report here (+ timing .json beside it)")
    ap.add_argument("--executor", default=None,
                    help="inprocess, process or ray (default: $MASKS_EXECUTOR, else process "
                    "when masks.workers > 1, else inprocess); the files are byte-identical "
                    "whichever runs them, so DVC need not track it")
    ap.add_argument("--workers", type=int, default=None,
                    help="runs at a time (process executor, local Ray; default masks.workers)")
    ap.add_argument("--notebook", default=str(Path(__file__).resolve().parents[1] /
                                              "analysis" / "train_masks.ipynb"),
                    help="the mask notebook (--report: run through papermill)")
    args = ap.parse_args(argv)
    if args.report:
        try:
            report(Path(args.notebook), Path(args.report), args)
        except (ParameterError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        cfg = load(args.params, args.profile)
        if args.net not in cfg.train.networks:
            raise SweepError(f"--net {args.net}: not one of train.networks "
                             f"{cfg.train.networks} in {args.params}")
        where = "--executor" if args.executor else "MASKS_EXECUTOR"
        if args.workers is None:
            args.workers = cfg.masks.workers
        executor = (args.executor or os.environ.get("MASKS_EXECUTOR")
                    or ("process" if args.workers > 1 else "inprocess"))
        if executor not in EXECUTORS:
            raise SweepError(f"{where}: expected one of {', '.join(EXECUTORS)}, got "
                             f"{executor!r}")
        if args.workers < 1:
            raise SweepError(f"--workers: expected an integer >= 1, got {args.workers}")
        die_with_parent()  # a killed dvc takes the sweep (and so its workers) along
        with writer_lock(args.out, "core.sweep"):  # one writer per mask folder
            sweep = Sweep(cfg, args.net, Path(args.train), Path(args.data), Path(args.out),
                          log=lambda m: print(m, flush=True))
            summary = sweep.run(executor, args.workers, progress=True)
    except (SweepError, MaskError, ConfigError, CheckpointError, RavenFileError,
            DeviceError, LockError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary["process_wall_s"] = time.perf_counter() - t_start  # from main(), imports excluded
    summary["process_age_s"] = process_age()  # from the interpreter's start (before the report)
    share = summary["overhead_share"]
    print(f"{args.out}: {summary['trained']} trained, {summary['kept']} kept; wall "
          f"{summary['wall_s']:.1f} s, mask compute {summary['compute_s']:.1f} s, group "
          f"evaluation {summary['group_eval_s']:.1f} s" +
          ("" if share is None else f", overhead {100 * share:.1f}% of (compute + "
                                    f"evaluation) / {summary['workers']} workers"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
