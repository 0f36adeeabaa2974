"""Write ``results/test_times.json``, the measured test times the README's commands block shows,
from the JSON that the ``tests/cputime.py`` plugin writes (not a test module).

    for f in tests/test_*.py; do                      # make test, one file at a time
      CPU_TIMES_OUT=build/times/$(basename $f .py).json PYTHONPATH=tests \\
        python -m pytest -q -p cputime $f; done
    CPU_TIMES_OUT=build/times-fast.json PYTHONPATH=tests \\
      python -m pytest -q -p cputime -m "not slow"      # make test-fast, in one run
    python tests/record_times.py --suite build/times/test_*.json --fast build/times-fast.json \\
        --how "..." --date YYYY-MM-DD > results/test_times.json

``suite_s``: CPU seconds of the whole suite, the sum over runs that together hold every test
once (one per file as above, or ``-m slow`` and ``-m "not slow"``; each run's interpreter start
counts once); ``fast_s``: CPU seconds of the fast
lane in one run; ``runs``: CPU seconds per run given to ``--suite``; ``slowest``: the ten tests with the most CPU
seconds; ``*_wall_s``: the wall times of the same runs (on a busy machine, much longer).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def record(files: list[Path], fast: Path, how: str, date: str) -> dict:
    runs = {f.stem: json.loads(f.read_text()) for f in files}
    quick = json.loads(fast.read_text())
    tests = {k: v for r in runs.values() for k, v in r["tests"].items()}
    return {"date": date, "how": how,
            "suite_s": round(sum(r["cpu_s"] for r in runs.values()), 1),
            "fast_s": quick["cpu_s"],
            "suite_tests": len(tests), "fast_tests": len(quick["tests"]),
            "suite_wall_s": round(sum(r["wall_s"] for r in runs.values()), 1),
            "fast_wall_s": quick["wall_s"],
            "runs": {k: r["cpu_s"] for k, r in sorted(runs.items())},
            "slowest": dict(sorted(tests.items(), key=lambda kv: -kv[1])[:10])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", nargs="+", type=Path, required=True)
    ap.add_argument("--fast", type=Path, required=True)
    ap.add_argument("--how", required=True, help="the machine and conditions, in words")
    ap.add_argument("--date", required=True)
    a = ap.parse_args(argv)
    json.dump(record(a.suite, a.fast, a.how, a.date), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
