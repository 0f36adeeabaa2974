"""``RavenDataset``: RAVEN-style problems as a torch ``Dataset``.

Reads either packed shards (``<root>/<split>/<configuration>.npz``, written by
``python -m core.raven``) or a folder of per-problem files in the public RAVEN layout
(``<root>/<configuration>/RAVEN_<i>_<split>.npz``), with the same API::

    ds = RavenDataset("data/raven/main", split="train")
    ds.images    # uint8 [N, 16, H, W], 255 = white background (as stored)
                 # (a tensor; ShardImages when the shards are memory-mapped)
    ds.targets   # int64 [N]
    x, y = ds[i] # float32 [16, H, W] in [0, 1], 0 = white, 1 = ink; int
    to_float(ds.images[idx])  # the same conversion, batched

Shards written with ``data.mmap`` store their panels uncompressed: their ``image`` arrays are
memory-mapped (:class:`ShardImages`), so a split is never read whole; ``ds.images[idx]`` reads
only the problems ``idx`` (a tensor for a tensor, slice or int index, numpy for a numpy index).
Compressed shards are read into memory.

``task`` keeps a subset by entity type: ``"circle"`` keeps problems whose every entity (all 16
panels) is a circle, ``"not_circle"`` those with no circle. It needs shape metadata (our files
carry it; public files get it from the ``.xml`` beside them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from core.raven.store import (
    SPLITS,
    RavenFileError,
    check_problems,
    load_npz,
    member_shape,
    mmap_member,
    public_files,
    shapes_from_attrs,
    shapes_from_xml,
    task_mask,
)
from core.tasks import SHAPES

__all__ = ["RavenDataset", "RavenFileError", "ShardImages", "to_float", "task_mask"]


def to_float(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 panels (255 = white) -> float32 ink in [0, 1] (0 = white, 1 = black)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float: expected uint8 panels, got {x.dtype}")
    return 1.0 - x.to(torch.float32) / 255.0


class ShardImages:
    """Panels of memory-mapped shards, read on demand: a stand-in for the uint8 tensor
    ``[N, 16, H, W]`` (``len``, ``shape``, ``dtype``, ``ndim``, indexing, ``numpy()``,
    ``float()``). ``rows`` selects and orders problems of the concatenated shards."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, parts: list[np.ndarray], rows: np.ndarray | None = None):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.rows = rows
        n = int(self.starts[-1]) if rows is None else len(rows)
        self.shape = torch.Size((n, *parts[0].shape[1:]))

    def __len__(self) -> int:
        return self.shape[0]

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Problems ``idx`` (int array) as a new uint8 array, read from the shards."""
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} problems")
        idx = idx % max(len(self), 1)
        if self.rows is not None:
            idx = self.rows[idx]
        out = np.empty((len(idx), *self.shape[1:]), np.uint8)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for p in np.unique(which):
            sel = which == p
            out[sel] = self.parts[p][idx[sel] - self.starts[p]]
        return out

    def _index(self, key) -> tuple[np.ndarray, bool]:
        """(row indices, whether ``key`` picks one problem)."""
        if isinstance(key, torch.Tensor):
            key = key.numpy()
        if isinstance(key, (int, np.integer)) or (isinstance(key, np.ndarray) and key.ndim == 0
                                                  and key.dtype != bool):
            return np.array([int(key)]), True
        if isinstance(key, slice):
            return np.arange(*key.indices(len(self))), False
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"boolean index of shape {key.shape} for {len(self)} problems")
            return np.flatnonzero(key), False
        return key.astype(np.int64).reshape(-1), False

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        as_numpy = isinstance(key, np.ndarray)
        idx, single = self._index(key)
        out = self.gather(idx)
        out = out[0] if single else out
        if rest:
            out = out[rest] if single else out[(slice(None), *rest)]
        return out if as_numpy else torch.from_numpy(np.ascontiguousarray(out))

    def select(self, keep: np.ndarray) -> ShardImages:
        """The problems where bool ``keep`` is true (no panel is read)."""
        rows = np.flatnonzero(keep) if self.rows is None else self.rows[keep]
        return ShardImages(self.parts, rows)

    def numpy(self) -> np.ndarray:
        """Every problem as one array (the memory map itself for one unfiltered shard)."""
        if self.rows is None and len(self.parts) == 1:
            return self.parts[0]
        return self.gather(np.arange(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def float(self) -> torch.Tensor:
        return torch.from_numpy(np.array(self.numpy(), np.float32))


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
            _same_size_as_other_splits(root, split, parts[0].shape[-2:])
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
            images = images.select(keep) if isinstance(images, ShardImages) else images[keep]
            targets, shapes, configs = targets[keep], shapes[keep], configs[keep]
        self.images = (images if isinstance(images, ShardImages)
                       else torch.from_numpy(np.ascontiguousarray(images)))
        self.targets = torch.from_numpy(targets.astype(np.int64))
        self.shapes = None if shapes is None else torch.from_numpy(shapes)
        self.configs = configs  # numpy array of configuration names, one per problem

    @staticmethod
    def _read_shards(folder: Path):
        files = shard_files(folder)
        if not files:
            raise RavenFileError(f"{folder}: no .npz shards (expected <configuration>.npz files)")
        images, targets, shapes, configs = [], [], [], []
        for f in files:
            image = mmap_member(f, "image")
            lazy = image is not None  # the panels stay on disk
            z = load_npz(f, ("target",) if lazy else ("image", "target"),
                         keys=("target", "shapes", "configuration", *(() if lazy else ("image",))))
            if "shapes" not in z:
                z.update(load_npz(f, (), keys=("attrs",)))
            image = z["image"] if image is None else image
            check_problems(f, image, z["target"], batched=True)
            images.append(image)
            targets.append(z["target"])
            n = len(z["target"])
            if "shapes" in z:
                if z["shapes"].shape != (n, len(SHAPES)):
                    raise RavenFileError(f"{f}: 'shapes' must be [N, {len(SHAPES)}] = "
                                         f"[{n}, {len(SHAPES)}] (one flag per shape in "
                                         f"{', '.join(SHAPES)}), got {list(z['shapes'].shape)}")
                shapes.append(z["shapes"].astype(bool))
            elif "attrs" in z:
                shapes.append(shapes_from_attrs(z["attrs"]))
            cfg = str(z["configuration"]) if "configuration" in z else f.stem
            configs.append(np.full(n, cfg))
        _same_size(files, images)
        mapped = [isinstance(im, np.memmap) for im in images]
        if all(mapped):
            all_images = ShardImages(images)
        else:
            all_images = np.concatenate([np.asarray(im) for im in images])
        return (all_images, np.concatenate(targets),
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


def shard_files(folder: Path) -> list[Path]:
    """The shards of one split folder (temporary ``.tmp-*`` files left out)."""
    return [f for f in sorted(folder.glob("*.npz")) if not f.name.startswith(".tmp-")]


def _same_size_as_other_splits(root: Path, split: str, size: tuple[int, ...]) -> None:
    """Every shard of the other splits under ``root`` has panels of ``size`` (headers only)."""
    for other in SPLITS:
        if other == split or not (root / other).is_dir():
            continue
        for f in shard_files(root / other):
            shape = member_shape(f, "image")
            if tuple(shape[-2:]) != tuple(size):
                raise RavenFileError(f"{f}: panels of size {list(shape[-2:])}, but split "
                                     f"{split!r} of {root} has {list(size)} (one data set "
                                     f"must have one image size: rebuild it)")


def _same_size(files: list[Path], images: list[np.ndarray]) -> None:
    first = images[0].shape[-2:]
    for f, im in zip(files, images):
        if im.shape[-2:] != first:
            raise RavenFileError(f"{f}: panels of size {list(im.shape[-2:])}, but {files[0]} "
                                 f"has {list(first)} (one data set must have one image size)")
