"""Problem generator throughput: problems per second per core, end to end (sample rules and
answer sets, render 16 panels, write compressed shards), all 7 configurations, I-RAVEN answers.

Baseline: the original Python 2 RAVEN generator's published speed, ~15 problems/s on one core
(70,000 problems in over an hour, as reported with RAVEN, Zhang et al. 2019). It is a stated constant, not
measured here (that code is GPL, Python 2, and not part of this project).

    python -m benchmarks.generator [--quick] [--profile]
    python -m benchmarks.generator --loader [--n 1500]   # memory of the shard loader

``--loader`` writes ``2 x n`` problems at 160 px twice (compressed and ``--mmap`` shards) and
reads the train split of each in a fresh process, one epoch of random batches of 32: peak
anonymous memory (``RssAnon``, what must fit in RAM) and peak RSS (``VmHWM``, which for the
memory-mapped shards includes reclaimable page-cache pages).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import row
from core.config import CONFIGURATIONS
from core.data import RavenDataset
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


def _status() -> dict[str, int]:
    """MiB of this process's VmHWM, VmRSS, RssAnon, RssFile (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) // 1024
    return out


def measure_loader(root: str, batch: int = 32) -> dict:
    """Open the train split of ``root`` and read one epoch of random batches."""
    before = _status()
    t0 = time.perf_counter()
    ds = RavenDataset(root, "train")
    opened = time.perf_counter() - t0
    at_open = _status()
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))
    peak_anon = at_open["RssAnon"]
    t0 = time.perf_counter()
    for i in range(0, len(ds), batch):
        ds.images[perm[i:i + batch]]
        peak_anon = max(peak_anon, _status()["RssAnon"])
    epoch = time.perf_counter() - t0
    return {"n": len(ds), "images": type(ds.images).__name__, "open_s": opened,
            "epoch_s": epoch, "before": before, "after_open": at_open, "end": _status(),
            "peak_anon_mib": peak_anon, "panel_mib": ds.images.shape.numel() // 2**20}


def loader(n: int) -> list[dict]:
    """Peak memory of RavenDataset over compressed vs memory-mapped shards (see module doc)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    rows = []
    try:
        for mmap in (False, True):
            out = tmp / ("mmap" if mmap else "zip")
            generate(out, ["center_single", "distribute_four"], n, size=160, workers=2,
                     progress=False, mmap=mmap)
            res = subprocess.run([sys.executable, "-m", "benchmarks.generator",
                                  "--measure-loader", str(out)],
                                 check=True, capture_output=True, text=True)
            rows.append({"mmap": mmap, **json.loads(res.stdout)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m benchmarks.generator")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile one run instead")
    ap.add_argument("--loader", action="store_true", help="memory of the shard loader instead")
    ap.add_argument("--n", type=int, default=1500, help="--loader: problems per configuration")
    ap.add_argument("--measure-loader", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_loader:
        print(json.dumps(measure_loader(args.measure_loader)))
    elif args.loader:
        for r in loader(args.n):
            print(f"{'mmap' if r['mmap'] else 'compressed'}: {r['n']} train problems "
                  f"({r['panel_mib']} MiB of panels, {r['images']}): open {r['open_s']:.2f} s, "
                  f"epoch {r['epoch_s']:.2f} s; RssAnon {r['before']['RssAnon']} MiB before, "
                  f"peak {r['peak_anon_mib']} MiB; VmHWM {r['end']['VmHWM']} MiB "
                  f"(RssFile {r['end']['RssFile']} MiB at the end)")
    elif args.profile:
        profile()
    else:
        for r in run(args.quick):
            print(f"{r['what']}: {r['ours']:.0f} {r['unit']} ({r['ratio']:.1f}x the baseline "
                  f"{r['baseline']:.0f}); {r['notes']}")
