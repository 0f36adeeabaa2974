"""What is fixed for one training run: where it computes (:func:`setup_process`: device,
precision, DDP) and the :class:`Training` context (:func:`setup_run`: model, optimiser,
schedule and the identity that resume state must match)."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from core.config import Config, ConfigError, checkpoint_name, train_hash, train_sections
from core.device import (
    DeviceError,
    keep_freed_memory,
    resolve_device,
    resolve_precision,
    set_deterministic,
)
from core.models import build_model
from core.train.data import DataError, Splits, val_indices


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
        opt, lambda s: schedule_factor(s, t.warmup_steps, total, t.scheduler))


def init_seed(network: int, attempt: int) -> int:
    """The seed of network ``network``'s weight initialisation at ``attempt`` (0: the first,
    the network's own seed; later ones after :func:`restart`: 31 bits of a sha256 of both,
    so another network's or attempt's seed comes up only by a 1-in-2^31 chance)."""
    if attempt == 0:
        return network
    digest = hashlib.sha256(f"core.train restart {network} {attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def schedule_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of ``train.lr`` at ``step``: linear warm-up, then constant or cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Training:
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


def setup_run(cfg: Config, network: int, splits: Splits, proc: Process) -> Training:
    """Model (seeded with ``network``), optimiser and schedule on ``proc.device``."""
    if network not in cfg.train.networks:
        raise ConfigError(f"--net {network}: not one of train.networks "
                          f"{list(cfg.train.networks)}")
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
    return Training(cfg, network, proc, size, n, per_epoch, model, net, opt, sched, identity,
                    n_val, init_seed(network, 0))
