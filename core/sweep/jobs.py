"""One mask run and one evaluation part as picklable jobs and the functions that compute them
(:func:`train_one`, :func:`train_chunk`, :func:`evaluate_one`): pure functions of their
inputs, so they give the same bytes in this process, a spawned worker or a Ray task."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core import maskgroup, masking
from core.config import MaskConfig
from core.data import to_float
from core.device import set_deterministic
from core.formats.masks import ACCURACY_KEYS, mask_record
from core.io import torch_bytes
from core.sweep.plan import PlannedMask

# A run's own final accuracies (the file's ``accuracy``: a quick look for the per-network
# report) are measured on this many problems per set; the study's accuracies are evals.nc's,
# on masks.eval_n problems per split. (All six on 400 problems cost ~7 s of a ~30 s run.)
QUICK_N = 100
# inference batches (final accuracies, evals.nc): train.eval_batch_size (measured there)


@dataclass(frozen=True)
class Job:
    """Everything one mask run needs besides the model and the data (picklable)."""

    run: PlannedMask
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
