"""Problem generator throughput: problems per second per core, end to end (sample rules and
answer sets, render 16 panels, write compressed shards), all 7 configurations, I-RAVEN answers.

Baseline: the original Python 2 RAVEN generator's published speed, ~15 problems/s on one core
(70,000 problems in over an hour; ``shared/reference/raven.md``). It is a stated constant, not
measured here (that code is GPL, Python 2, and not part of this project).

    python -m benchmarks.generator [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import row
from core.config import CONFIGURATIONS
from core.raven.__main__ import generate

BASELINE = 15.0  # problems/s/core of the original RAVEN generator (published)


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (the pool workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _rate(size: int, workers: int, n_per_config: int, repeat: int) -> dict:
    """Best of ``repeat`` runs after one warm-up (which fills the sprite cache; forked workers
    inherit it). Per core: by CPU time (robust to other load on the machine) and by wall time
    divided by the worker count (meaningful on an idle machine only)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    walls, cpus = [], []
    try:
        for i in range(repeat + 1):
            c0, t0 = _cpu(), time.perf_counter()
            generate(tmp / "out", list(CONFIGURATIONS), n_per_config, seed=0, workers=workers,
                     size=size, progress=False, force=True)
            if i:
                walls.append(time.perf_counter() - t0)
                cpus.append(_cpu() - c0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = n_per_config * len(CONFIGURATIONS)
    return {"problems": n, "workers": workers, "wall_s": walls, "cpu_s": cpus,
            "per_core_cpu": n / min(cpus), "per_core_wall": n / min(walls) / workers,
            "total_wall": n / min(walls), "load_avg": os.getloadavg()[0]}


def run(quick: bool = False) -> list[dict]:
    n, repeat = (15, 1) if quick else (60, 3)
    rows = []
    for size in (80, 160):
        for workers in (1, 2):
            r = _rate(size, workers, n, repeat)
            rows.append(row(f"generator {size} px, I-RAVEN, {workers} worker(s)",
                            r["per_core_cpu"], BASELINE, "problems/s/core", ">= 10x",
                            f"per CPU-second (parent + workers); {r['total_wall']:.0f} problems/s "
                            f"wall in total at load {r['load_avg']:.1f}; {r['problems']} problems, "
                            "7 configurations, shards written; baseline: published RAVEN speed "
                            "(constant)", raw=r))
    return rows


def profile(size: int = 160, n_per_config: int = 60, top: int = 12) -> None:
    """Print the top functions by own time of one single-worker generation."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    try:
        prof = cProfile.Profile()
        prof.enable()
        generate(tmp / "out", list(CONFIGURATIONS), n_per_config, size=size, progress=False)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m benchmarks.generator")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile one run instead")
    args = ap.parse_args()
    if args.profile:
        profile()
    else:
        for r in run(args.quick):
            print(f"{r['what']}: {r['ours']:.0f} {r['unit']} ({r['ratio']:.1f}x the baseline "
                  f"{r['baseline']:.0f}); {r['notes']}")
