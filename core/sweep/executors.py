"""Where the sweep's calls run: one after another here (:class:`InProcess`), in spawned
processes (:class:`Processes`) or as Ray tasks (:class:`RayTasks`); each takes keyed calls
with ``submit`` and hands back ``(key, result)`` with ``next`` (:func:`make_executor`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from core.sweep.errors import SweepError

EXECUTORS = ("inprocess", "process", "ray")


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
