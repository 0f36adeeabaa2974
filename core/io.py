"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash or a bad input never leaves a half-written output where a later stage would read it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the suffix of ``path`` (libraries such as numpy or netCDF4 look at
    it) and starts with ``.tmp-`` so it is easy to recognise and ignore.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike[str], writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into memory: the same object always gives the same bytes (saving
    to a file would record the file's name inside the zip archive)."""
    import torch  # here, not at the top: writing a text file must not cost importing torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` atomically, bytes independent of the file name."""
    return atomic_write_bytes(path, torch_bytes(obj))


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def torch_load(path: str | os.PathLike[str], what: str, error: type[Exception]) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing, truncated or corrupt file
    raises ``error`` with one message naming the file and ``what`` was expected there."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as err:
        raise error(f"{path}: not a readable {what} (truncated or corrupt?): "
                    f"{type(err).__name__}: {err}") from None


# what a run itself rewrites in the checkout (make repro: params.yaml, dvc.lock; export:
# results/): changes there do not make the code "dirty"
RUN_FILES = ("params.yaml", "dvc.lock", "results")


def git_commit(root: Path) -> str:
    """``HEAD``'s hash, ``-dirty`` when tracked files other than :data:`RUN_FILES` differ from
    it; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", *(f":!{p}" for p in RUN_FILES)],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty.strip() else "")
