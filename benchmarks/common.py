"""Shared helpers: repeated timing after warm-up, and the row format of results.md."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def timeit(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeat`` times; seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"min": min(times), "median": statistics.median(times), "times": times}


def row(what: str, ours: float, baseline: float, unit: str, goal: str = "",
        notes: str = "", raw: dict | None = None) -> dict[str, Any]:
    """One results row; ``ratio`` = ours / baseline (a speed-up for throughputs, an overhead
    for times; ``goal`` says which, e.g. ">= 4x" or "<= 1.5x")."""
    ratio = ours / baseline if baseline else float("nan")
    return {"what": what, "ours": ours, "baseline": baseline, "ratio": ratio, "unit": unit,
            "goal": goal, "notes": notes, "raw": raw or {}}
