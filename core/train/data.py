"""The data of a training run: the train/val/test problems read once (:func:`open_splits`)
with the fingerprint of their files, a batch on the device (:func:`take`), the shuffled order
of an epoch and the validation problems checked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.config import Config
from core.data import RavenDataset, to_float
from core.io import file_sha256
from core.raven.store import RavenFileError

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A missing or unusable data folder or split; the message names the path."""


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
