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
import pstats
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import row, timeit
from core.config import CONFIGURATIONS
from core.raven.__main__ import generate

BASELINE = 15.0  # problems/s/core of the original RAVEN generator (published)


def _rate(size: int, workers: int, n_per_config: int, repeat: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    try:
        def once() -> None:
            generate(tmp / "out", list(CONFIGURATIONS), n_per_config, seed=0, workers=workers,
                     size=size, progress=False, force=True)

        t = timeit(once, repeat=repeat, warmup=1)  # warm-up fills the sprite cache
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = n_per_config * len(CONFIGURATIONS)
    return {"problems": n, "workers": workers, **t, "per_core": n / t["min"] / workers}


def run(quick: bool = False) -> list[dict]:
    n, repeat = (15, 1) if quick else (60, 3)
    rows = []
    for size in (80, 160):
        for workers in (1, 2):
            r = _rate(size, workers, n, repeat)
            rows.append(row(f"generator {size} px, I-RAVEN, {workers} worker(s)", r["per_core"],
                            BASELINE, "problems/s/core", ">= 10x",
                            f"{r['problems']} problems, all 7 configurations, shards written; "
                            f"baseline: published RAVEN generator speed (constant)", raw=r))
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
                  f"{r['baseline']:.0f})")
