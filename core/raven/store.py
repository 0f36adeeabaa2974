"""Problem files: packed shards and per-problem npz files (the public RAVEN layout).

Packed shard ``<root>/<split>/<configuration>.npz`` (one per split and configuration):

==========  ======================  =================================================
key         dtype / shape           what
==========  ======================  =================================================
image       uint8 [N, 16, H, W]     8 context panels (row-major), then 8 candidates
target      int64 [N]               index of the correct candidate (0..7)
shapes      bool [N, 5]             which types (``core.tasks.SHAPES`` order) occur
                                    in any entity of any of the 16 panels
attrs       int8 [N, 16, 2, 9, 4]   per panel, component, slot: type, size, color,
                                    angle indices; -1 where the slot is empty
rules       int8 [N, 2, 4, 3]       per component and attribute group (number/position,
                                    type, size, color): rule id, parameter, attribute id
configuration  str scalar           the configuration of every problem in the shard
index       int64 [N]               the problem's index in its generated set (its seed)
==========  ======================  =================================================

A per-problem file ``<configuration>/RAVEN_<i>_<split>.npz`` holds the same keys without the
leading ``N`` axis, plus the public fields ``meta_matrix``, ``meta_target`` and ``structure``.
Public RAVEN/I-RAVEN files carry only ``image`` and ``target`` (and their own metadata); they
load with the same reader, and their shapes come from the ``.xml`` file beside them if any.

All writes go through :func:`core.io.atomic_path`: a crash never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.config import CONFIGURATIONS
from core.io import atomic_path
from core.lock import alive
from core.tasks import SHAPES

SPLITS = ("train", "val", "test")
CONFIG_NAMES = set(CONFIGURATIONS)  # per-configuration folders of the public layout
PUBLIC_RE = re.compile(r"^RAVEN_(\d+)_(train|val|test)\.npz$")


class RavenFileError(ValueError):
    """A missing, empty or corrupt problem file or folder; the message names the path."""


def load_npz(path: str | Path, required: tuple[str, ...] = ("image", "target"),
             keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The arrays of one ``.npz`` file (those of ``keys`` that it has; all by default), read
    fully; a corrupt or incomplete file raises :class:`RavenFileError` naming it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files if keys is None or k in keys or k in required}
    except FileNotFoundError:
        raise RavenFileError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as err:
        raise RavenFileError(f"{path}: corrupt or not an npz file ({err})") from None
    missing = [k for k in required if k not in out]
    if missing:
        raise RavenFileError(f"{path}: missing array {missing[0]!r} "
                             f"(expected keys {', '.join(required)})")
    return out


def check_problems(path: Path, image: np.ndarray, target: np.ndarray, batched: bool) -> None:
    """Validate the dtype and shape of ``image`` / ``target``; errors name ``path``."""
    want = 4 if batched else 3
    shape = "[N, 16, H, W]" if batched else "[16, H, W]"
    if image.dtype != np.uint8 or image.ndim != want or image.shape[-3] != 16:
        raise RavenFileError(f"{path}: 'image' must be uint8 {shape}, "
                             f"got {image.dtype} {list(image.shape)}")
    n = image.shape[0] if batched else None
    tshape = (n,) if batched else ()
    if target.shape != tshape or not np.issubdtype(target.dtype, np.integer):
        raise RavenFileError(f"{path}: 'target' must be integer of shape {list(tshape)}, "
                             f"got {target.dtype} {list(target.shape)}")
    if target.size and (target.min() < 0 or target.max() > 7):
        raise RavenFileError(f"{path}: 'target' values must be in 0..7")


def shapes_from_attrs(attrs: np.ndarray) -> np.ndarray:
    """Presence of each shape type in ``attrs`` [..., 16, C, S, 4] -> bool [..., 5]."""
    types = attrs[..., 0].reshape(*attrs.shape[:-4], -1)
    return np.stack([(types == t).any(-1) for t in range(len(SHAPES))], -1)


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


def shapes_from_xml(path: Path) -> np.ndarray:
    """Shape presence from a public RAVEN ``.xml`` file: ``Type`` of every ``Entity``
    (index 1..5 = triangle, square, pentagon, hexagon, circle; 0 is 'none')."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise RavenFileError(f"{path}: unreadable XML ({err})") from None
    out = np.zeros(len(SHAPES), bool)
    for ent in root.iter("Entity"):
        t = int(ent.get("Type", "0"))
        if 1 <= t <= len(SHAPES):
            out[t - 1] = True
    return out


def write_npz(path: str | Path, arrays: dict[str, Any], level: int = 1,
              stored: tuple[str, ...] = ()) -> Path:
    """Write ``arrays`` atomically to ``path`` as a deflate-compressed ``.npz`` (the format of
    ``np.savez_compressed``, readable by ``np.load``). Level 1: mostly-white panels compress
    almost as well as at numpy's level 6, several times faster. Arrays named in ``stored`` are
    written uncompressed, so that :func:`mmap_member` can memory-map them in place."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
            for name, value in arrays.items():
                # what ZipFile.open(name, "w") builds (fixed 1980 date: same bytes every run)
                info = zipfile.ZipInfo(f"{name}.npy")
                info.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
                info._compresslevel = level  # type: ignore[attr-defined]  # as ZipFile does
                with zf.open(info, "w", force_zip64=True) as fh:
                    if isinstance(value, list):
                        _write_parts(fh, value)
                    else:
                        np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    return Path(path)


def _write_parts(fh, parts: list[np.ndarray]) -> None:
    """The ``.npy`` of ``np.concatenate(parts)``, written part by part (never concatenated):
    the same bytes as ``np.lib.format.write_array`` of the whole."""
    parts = [np.ascontiguousarray(p) for p in parts]
    head = np.lib.format.header_data_from_array_1_0(parts[0])
    head["shape"] = (sum(len(p) for p in parts), *parts[0].shape[1:])
    if any(p.dtype != parts[0].dtype or p.shape[1:] != parts[0].shape[1:] for p in parts):
        raise ValueError("parts of one array must share dtype and trailing shape")
    np.lib.format.write_array_header_1_0(fh, head)
    for p in parts:
        fh.write(p.tobytes())


def _member_header(path: Path, fh, start: int) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of the ``.npy`` array starting at ``start``."""
    fh.seek(start)
    try:
        version = np.lib.format.read_magic(fh)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(fh)
    except ValueError as err:
        raise RavenFileError(f"{path}: corrupt array header ({err})") from None
    return shape, fortran, dtype, fh.tell()


def mmap_member(path: str | Path, name: str) -> np.ndarray | None:
    """Array ``name`` of the ``.npz`` at ``path`` memory-mapped read-only when it is stored
    uncompressed (see :func:`write_npz`); ``None`` when it is compressed (read it with
    :func:`load_npz`). Nothing but the headers is read."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise RavenFileError(f"{path}: corrupt zip entry {name}.npy")
            n_name = int.from_bytes(local[26:28], "little")
            n_extra = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + n_name + n_extra
            shape, fortran, dtype, offset = _member_header(path, fh, start)
        if offset + int(np.prod(shape)) * dtype.itemsize > start + info.file_size:
            raise RavenFileError(f"{path}: array {name!r} is truncated")
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                         order="F" if fortran else "C")
    except FileNotFoundError:
        raise RavenFileError(f"{path}: file not found") from None
    except KeyError:
        raise RavenFileError(f"{path}: missing array {name!r}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise RavenFileError(f"{path}: corrupt or not an npz file ({err})") from None


def member_shape(path: str | Path, name: str) -> tuple[int, ...]:
    """Shape of array ``name`` in the ``.npz`` at ``path``, from its header alone."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            return tuple(reader(fh)[0])
    except FileNotFoundError:
        raise RavenFileError(f"{path}: file not found") from None
    except KeyError:
        raise RavenFileError(f"{path}: missing array {name!r}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as err:
        raise RavenFileError(f"{path}: corrupt or not an npz file ({err})") from None


def public_files(root: Path, split: str) -> list[Path]:
    """Per-problem files of ``split`` under ``root`` (``root/<cfg>/RAVEN_<i>_<split>.npz`` or
    directly in ``root``), ordered by configuration folder then problem index."""
    found = []
    for p in list(root.glob(f"RAVEN_*_{split}.npz")) + list(root.glob(f"*/RAVEN_*_{split}.npz")):
        m = PUBLIC_RE.match(p.name)
        if m:
            found.append((p.parent.name if p.parent != root else "", int(m.group(1)), p))
    return [p for _, _, p in sorted(found)]


class OutDirError(ValueError):
    """An output folder that cannot be written, or is not empty without ``--force``."""


MARKER = ".core-raven"  # written into every folder core.raven builds: --force may replace it
LEGACY_TOP = {"main", "tasks", "train", "val", "test"}  # folders of builds before the marker


def _ours(out: Path) -> bool:
    """Whether ``out`` was made by core.raven: it has the marker, or (older builds) holds only
    problem files (``.npz``, ``.xml``, ``.png``) under the folders a build or generate makes."""
    if (out / MARKER).is_file():
        return True
    top = list(out.iterdir())
    if not top or not all(p.is_dir() and (p.name in LEGACY_TOP or p.name in CONFIG_NAMES)
                          for p in top):
        return False
    return all(f.is_dir() or f.suffix in (".npz", ".xml", ".png") for f in out.rglob("*"))


def check_out_dir(out: str | Path, force: bool, marker: str = MARKER,
                  ours: Callable[[Path], bool] = _ours, tool: str = "core.raven",
                  example: str = "data/raven") -> Path:
    """``out`` must be a writable place for a new folder, empty unless ``force``; with
    ``force`` it may only replace a folder ``tool`` made (``ours``: it holds ``marker``; never
    ``.``, a folder holding the working directory, or a repository root). The rule of every
    command of the project that writes a folder (core.results export uses it too)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out: {out} exists and is not a folder")
    here = Path.cwd().resolve()
    target = out.resolve()
    if target == here or target in here.parents:
        raise OutDirError(f"--out: {out} is the working directory or holds it; give a "
                          f"folder of its own (e.g. {example})")
    if any((target / m).exists() for m in (".git", ".dvc", "pyproject.toml")):
        raise OutDirError(f"--out: {out} is a repository root; give a folder of its own "
                          f"(e.g. {example})")
    if out.is_dir() and any(out.iterdir()):
        if not ours(out):  # first: --force would not help
            raise OutDirError(f"--out: {out} holds files {tool} did not make (no {marker} "
                              f"marker, or files besides those it wrote); --force replaces "
                              f"only folders it made: move them or choose another --out")
        if not force:
            raise OutDirError(f"--out: {out} is not empty (pass --force to replace it)")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutDirError(f"--out: cannot create {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutDirError(f"--out: {out} is not writable (no write permission on {parent})")
    return out


PID_FILE = ".pid"  # in a staging folder: the process that builds it


def clean_stale(out: Path) -> list[Path]:
    """Remove the staging folders (``.tmp-<name>-*``, ``.old-<name>-*``) that a killed build
    of ``out`` left beside it: those whose building process is gone. Returns them."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for pattern in (f".tmp-{out.name}-*", f".old-{out.name}-*"):
        for d in out.parent.glob(pattern):
            if not d.is_dir():
                continue
            try:
                pid = int((d / PID_FILE).read_text())
            except (OSError, ValueError):
                pid = None
            if pid is not None and alive(pid) and pid != os.getpid():
                continue  # another build is running
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


@contextlib.contextmanager
def staged_dir(out: str | Path, force: bool, about: dict | None = None, marker: str = MARKER,
               ours: Callable[[Path], bool] = _ours, tool: str = "core.raven",
               example: str = "data/raven") -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` (by rename), on
    failure it is removed: a crash never leaves a half-built ``out``, and what a killed run
    left is removed by the next one (:func:`clean_stale`). The marker file records ``about``
    (what the folder was made from, as JSON). ``marker``, ``ours``, ``tool``: as in
    :func:`check_out_dir` (another command's folders)."""
    out = check_out_dir(out, force, marker, ours, tool, example)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
        (tmp / PID_FILE).write_text(str(os.getpid()))
    except OSError as err:
        raise OutDirError(f"--out: cannot create {out} ({err})") from None
    try:
        yield tmp
        (tmp / PID_FILE).unlink()
        (tmp / marker).write_text(json.dumps({"made_by": f"python -m {tool}",
                                              "note": "--force may replace this folder",
                                              **(about or {})}, indent=1, sort_keys=True) + "\n")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{out.name}-", dir=out.parent))
            (old / PID_FILE).write_text(str(os.getpid()))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_shard(path: str | Path, arrays: dict[str, np.ndarray], configuration: str,
                mmap: bool = False) -> Path:
    """One packed shard (all problems of one split and configuration); ``mmap``: panels
    stored uncompressed, for loaders that memory-map them (``data.mmap``)."""
    keys = ("image", "target", "shapes", "attrs", "rules", "index")
    out = {k: arrays[k] for k in keys if k in arrays}  # arrays, or lists of parts to stream
    out["configuration"] = np.array(configuration)
    return write_npz(path, out, stored=("image",) if mmap else ())


def write_problems(folder: str | Path, arrays: dict[str, np.ndarray], configuration: str,
                   split: str, public: dict[str, list[np.ndarray]]) -> None:
    """Per-problem files ``<folder>/<configuration>/RAVEN_<index>_<split>.npz``."""
    for j, i in enumerate(arrays["index"]):
        item = {k: arrays[k][j] for k in ("image", "target", "attrs", "rules")}
        item.update({k: v[j] for k, v in public.items()})
        item["configuration"] = np.array(configuration)
        write_npz(Path(folder) / configuration / f"RAVEN_{int(i)}_{split}.npz", item)


def split_ranges(n: int) -> dict[str, tuple[int, int]]:
    """Problem index ranges of the 6/2/2 train/val/test split of ``n`` problems."""
    train, val = n * 6 // 10, n * 2 // 10
    return {"train": (0, train), "val": (train, train + val), "test": (train + val, n)}
