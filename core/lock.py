"""One writer per output folder, and stages whose processes die with them.

:func:`writer_lock` guards an output folder (``data/train/net0``, ``data/masks/net0``,
``results/default``) with a lock file beside it, ``.<name>.lock``, that holds the owner's pid
and command. The lock itself is an ``flock`` on that file: the kernel releases it when its
owner dies, however it dies, so a lock left by a killed run is stale by construction (its
pid is dead) and the next run takes it over; a live owner makes a second writer stop with one
:class:`LockError` naming the folder, the pid and the command instead of racing it. A child
of the owner (a ``--net all`` training's per-network processes, torchrun's ranks) writes under
its ancestor's lock.

:func:`die_with_parent` makes a stage process end when the process that started it ends
(Linux ``PR_SET_PDEATHSIG``; DVC's ``kill -9`` would otherwise leave a sweep or a training
writing into the folder the re-run reads); the process pools of a stage set it in their
workers too, so the whole tree goes.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PR_SET_PDEATHSIG = 1


class LockError(RuntimeError):
    """Another live process writes the folder; the message names it."""


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file of ``out``: ``.<name>.lock`` beside it (outside it, so that replacing
    the folder by rename or DVC clearing it leaves the lock in place)."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.lock"


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ancestors() -> set[int]:
    """The pids of this process's parent, its parent, ... (Linux ``/proc``; elsewhere the
    parent only)."""
    out, pid = set(), os.getppid()
    while pid > 1 and pid not in out:
        out.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out


def owner(out: str | os.PathLike[str]) -> dict | None:
    """What the lock file of ``out`` records (pid, command), or None without one."""
    try:
        rec = json.loads(lock_path(out).read_text())
        return rec if isinstance(rec, dict) else None
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def writer_lock(out: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold the lock of ``out`` for the block (see the module docstring). Raises
    :class:`LockError` when a live process other than this one's parent holds it."""
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by children (PEP 446)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            rec = owner(out) or {}
            pid = int(rec.get("pid", 0) or 0)
            if pid and pid in ancestors():  # our parent (or its parent) holds it for us
                yield path
                return
            raise LockError(
                f"{out}: another process is writing this folder (pid {pid or '?'}: "
                f"{rec.get('command', 'unknown command')}; lock {path}); wait for it to "
                f"finish or stop it (kill {pid or '<pid>'}), then run again") from None
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps({"pid": os.getpid(), "command": command}) + "\n").encode())
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):  # the file stays; the next owner rewrites it
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "busybox"}


def _parent_and_name(pid: int) -> tuple[int, str]:
    """(parent pid, command name) of ``pid`` from ``/proc``; (0, "") when unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat.rsplit(")", 1)[1]
        return int(rest.split()[1]), name
    except (OSError, ValueError, IndexError):
        return 0, ""


def _starter() -> int:
    """The process that started this one: the parent, or, when the parent is a shell that
    did not exec the command (``/bin/sh -c`` as DVC runs a stage with SHELL=/bin/sh), the
    first ancestor above the shells."""
    pid = os.getppid()
    while pid > 1:
        parent, name = _parent_and_name(pid)
        if name not in SHELLS or parent <= 1:
            break
        pid = parent
    return pid


def die_with_parent(sig: int = signal.SIGTERM, poll: float = 0.5) -> bool:
    """End this process with ``sig`` when the process that started it ends: the kernel's
    ``PR_SET_PDEATHSIG`` for the parent (Linux) and, when a shell stands between (the
    shell outlives a ``kill -9`` of its parent), a daemon thread that watches the starter
    every ``poll`` seconds. When the parent is already gone (a race at start), end now.
    Returns whether the request was set."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if ok and os.getppid() != parent:  # the parent ended before the request took effect
        print("error: the process that started this one has ended; stopping",
              file=sys.stderr)
        os.kill(os.getpid(), sig)
    starter = _starter()
    if ok and starter != parent:
        def watch() -> None:
            while alive(starter):
                time.sleep(poll)
            os.kill(os.getpid(), sig)

        threading.Thread(target=watch, name="die-with-starter", daemon=True).start()
    return ok
