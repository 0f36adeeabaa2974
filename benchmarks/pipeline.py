"""Pipeline stage wall times, read from the logs `make repro` writes, and a no-op `dvc repro`.

`make repro PROFILE=P` pipes `dvc repro` through `benchmarks.timelog` into
`build/repro-P.log`; a stage's time is from its "Running stage" line to the next stage line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import row
from core.results import group, stage_times

ROOT = Path(__file__).resolve().parents[1]
# The stage budgets: ci 5 min (CI), default 45 min (the whole default study on the 2-core
# default machine, every family, control and report included)
BUDGET_S = {"ci": 5 * 60, "default": 45 * 60}


def run(quick: bool = False) -> list[dict[str, Any]]:
    rows = []
    for profile in ("ci", "default"):
        log = ROOT / "build" / f"repro-{profile}.log"
        if not log.exists():
            print(f"pipeline: {log} missing; run `make repro PROFILE={profile}` to time stages",
                  file=sys.stderr)
            continue
        grouped = group(stage_times(log))
        total = sum(s for s, _ in grouped.values())
        budget = BUDGET_S[profile]
        for name, (secs, n) in grouped.items():
            rows.append(row(f"pipeline {profile}: stage {name}" + (f" (x{n})" if n > 1 else ""),
                            secs, total, "s", "share of total",
                            notes=f"from {log.relative_to(ROOT)}"))
        rows.append(row(f"pipeline {profile}: all stages", total, budget, "s",
                        f"<= 1x the {budget // 60} min budget", notes="budget as baseline"))
    dvc = Path(sys.executable).with_name("dvc")
    status = subprocess.run([str(dvc), "status", "-q"], cwd=ROOT, capture_output=True)
    if status.returncode == 0:
        t0 = time.perf_counter()
        subprocess.run([str(dvc), "repro"], cwd=ROOT, check=True, capture_output=True)
        noop = time.perf_counter() - t0
        rows.append(row("pipeline: no-op `dvc repro`", noop, 5.0, "s", "<= 1x (5 s)",
                        notes="budget as baseline"))
    else:
        print("pipeline: `dvc status` not clean; no-op repro not timed", file=sys.stderr)
    return rows


if __name__ == "__main__":
    for r in run("--quick" in sys.argv):
        print(f"{r['what']}: {r['ours']:.1f} {r['unit']} (ratio {r['ratio']:.2f})")
