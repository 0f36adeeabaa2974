"""``RavenDataset``: RAVEN-style problems as a torch ``Dataset``, all in memory.

Reads either packed shards (``<root>/<split>/<configuration>.npz``, written by
``python -m core.raven``) or a folder of per-problem files in the public RAVEN layout
(``<root>/<configuration>/RAVEN_<i>_<split>.npz``), with the same API::

    ds = RavenDataset("data/raven/main", split="train")
    ds.images    # uint8 [N, 16, H, W], 255 = white background (as stored)
    ds.targets   # int64 [N]
    x, y = ds[i] # float32 [16, H, W] in [0, 1], 0 = white, 1 = ink; int
    to_float(ds.images[idx])  # the same conversion, batched

``task`` keeps a subset by entity type: ``"circle"`` keeps problems whose every entity (all 16
panels) is a circle, ``"not_circle"`` those with no circle. It needs shape metadata (our files
carry it; public files get it from the ``.xml`` beside them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from core.config import SHAPES
from core.raven.store import (
    SPLITS,
    RavenFileError,
    check_problems,
    load_npz,
    public_files,
    shapes_from_attrs,
    shapes_from_xml,
)

__all__ = ["RavenDataset", "RavenFileError", "to_float", "task_mask"]


def to_float(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 panels (255 = white) -> float32 ink in [0, 1] (0 = white, 1 = black)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float: expected uint8 panels, got {x.dtype}")
    return 1.0 - x.to(torch.float32) / 255.0


def task_mask(shapes: np.ndarray, task: str) -> np.ndarray:
    """Which problems (rows of bool ``shapes`` [N, 5]) belong to ``task``: a shape name
    (every entity of that shape) or ``not_<shape>`` (no entity of that shape)."""
    name = task.removeprefix("not_")
    if name not in SHAPES:
        allowed = ", ".join([*SHAPES, *(f"not_{s}" for s in SHAPES)])
        raise ValueError(f"task: unknown task {task!r} (expected one of {allowed})")
    k = SHAPES.index(name)
    if task.startswith("not_"):
        return ~shapes[:, k]
    only = np.zeros(len(SHAPES), bool)
    only[k] = True
    return (shapes == only).all(1)


class RavenDataset(Dataset):
    """Problems of one split under ``root`` (packed shards or public per-problem files)."""

    def __init__(self, root: str | Path, split: str, task: str | None = None):
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        if not root.is_dir():
            raise RavenFileError(f"{root}: no such folder (expected problems of split {split!r})")
        shard_dir = root / split
        if shard_dir.is_dir():
            parts = self._read_shards(shard_dir)
        else:
            parts = self._read_public(root, split)
        images, targets, shapes, configs = parts
        self.root, self.split, self.task = root, split, task
        if task is not None:
            if shapes is None:
                raise RavenFileError(f"{root}: split {split!r} has no shape metadata "
                                     f"(needed for task {task!r})")
            keep = task_mask(shapes, task)
            if not keep.any():
                raise RavenFileError(f"{root}: split {split!r} has no problem of task {task!r}")
            images, targets, shapes = images[keep], targets[keep], shapes[keep]
            configs = configs[keep]
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.targets = torch.from_numpy(targets.astype(np.int64))
        self.shapes = None if shapes is None else torch.from_numpy(shapes)
        self.configs = configs  # numpy array of configuration names, one per problem

    @staticmethod
    def _read_shards(folder: Path):
        files = sorted(folder.glob("*.npz"))
        files = [f for f in files if not f.name.startswith(".tmp-")]
        if not files:
            raise RavenFileError(f"{folder}: no .npz shards (expected <configuration>.npz files)")
        images, targets, shapes, configs = [], [], [], []
        for f in files:
            z = load_npz(f)
            check_problems(f, z["image"], z["target"], batched=True)
            images.append(z["image"])
            targets.append(z["target"])
            if "shapes" in z:
                shapes.append(z["shapes"].astype(bool))
            elif "attrs" in z:
                shapes.append(shapes_from_attrs(z["attrs"]))
            cfg = str(z["configuration"]) if "configuration" in z else f.stem
            configs.append(np.full(len(z["target"]), cfg))
        _same_size(files, images)
        return (np.concatenate(images), np.concatenate(targets),
                np.concatenate(shapes) if len(shapes) == len(files) else None,
                np.concatenate(configs))

    @staticmethod
    def _read_public(root: Path, split: str):
        files = public_files(root, split)
        if not files:
            raise RavenFileError(
                f"{root}: no problems of split {split!r} (expected {root}/{split}/<configuration>"
                f".npz shards or {root}/<configuration>/RAVEN_<i>_{split}.npz files)")
        images, targets, shapes, configs = [], [], [], []
        for f in files:
            z = load_npz(f)
            check_problems(f, z["image"], z["target"], batched=False)
            images.append(z["image"])
            targets.append(np.int64(z["target"]))
            if "attrs" in z:
                shapes.append(shapes_from_attrs(z["attrs"]))
            elif f.with_suffix(".xml").exists():
                shapes.append(shapes_from_xml(f.with_suffix(".xml")))
            configs.append(f.parent.name if f.parent != root else "")
        _same_size(files, images)
        return (np.stack(images), np.array(targets, np.int64),
                np.stack(shapes) if len(shapes) == len(files) else None, np.array(configs))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_float(self.images[i]), int(self.targets[i])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])


def _same_size(files: list[Path], images: list[np.ndarray]) -> None:
    first = images[0].shape[-2:]
    for f, im in zip(files, images):
        if im.shape[-2:] != first:
            raise RavenFileError(f"{f}: panels of size {list(im.shape[-2:])}, but {files[0]} "
                                 f"has {list(first)} (one data set must have one image size)")
