"""The notebook stages' fixed cost: the mask stage run through its notebook (papermill, one
kernel, the report's cells, the HTML) against the same sweep through its command line, both on
a network whose masks are all finished (each sweep then only checks and keeps them), so the
difference is what the notebook adds; its share is of that network's stage time in a run.

    python -m benchmarks.notebook --run . --net 0 --stage-times results/default/stage_times.json

Median of ``--repeats`` runs of each, after one warm-up of each (file cache). Prints one JSON
object (``--out`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.io import atomic_write_text


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(run: Path, net: int, repeats: int) -> dict[str, float]:
    """Median seconds of the mask stage of network ``net`` of the run folder ``run`` through the
    notebook and through the command line (every mask already there)."""
    py = sys.executable
    common = {"params": "params.yaml", "train": f"data/train/net{net}", "data": "data/raven",
              "out": f"data/masks/net{net}"}
    with tempfile.TemporaryDirectory() as tmp:
        notebook = [py, "-m", "core.notebook", "analysis/train_masks.ipynb",
                    "--report", f"{tmp}/report.html", "-p", "params", common["params"],
                    "-p", "network", str(net), "-p", "train_dir", common["train"],
                    "-p", "data", common["data"], "-p", "out", common["out"],
                    "-p", "timing", f"{tmp}/timing.json"]
        cli = [py, "-m", "core.sweep", "--params", common["params"], "--net", str(net),
               "--train", common["train"], "--data", common["data"], "--out", common["out"]]
        times: dict[str, list[float]] = {"notebook": [], "cli": []}
        for i in range(repeats + 1):  # the first of each warms the file cache
            for name, cmd in (("notebook", notebook), ("cli", cli)):
                seconds = _timed(cmd, run)
                if i:
                    times[name].append(seconds)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.notebook",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=".", help="a run's folder (params.yaml, data/)")
    ap.add_argument("--net", type=int, default=0)
    ap.add_argument("--stage-times", required=True,
                    help="stage_times.json of the run (seconds of masks@<net>)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    stages = json.loads(Path(args.stage_times).read_text())
    stage = stages.get(f"masks@{args.net}")
    if stage is None:
        print(f"error: {args.stage_times}: no stage masks@{args.net}", file=sys.stderr)
        return 2
    t = measure(Path(args.run), args.net, args.repeats)
    extra = t["notebook"] - t["cli"]
    result = {"notebook_s": round(t["notebook"], 2), "cli_s": round(t["cli"], 2),
              "overhead_s": round(extra, 2), "stage_s": stage,
              "overhead_share": round(extra / stage, 4), "net": args.net,
              "repeats": args.repeats, "stage_times": args.stage_times}
    text = json.dumps(result, indent=1) + "\n"
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
