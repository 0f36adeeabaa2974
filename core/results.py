"""Committed results of a reference run: what a reviewer needs to rebuild every figure and the
paper without training (``make figures``).

    python -m core.results export --params params.yaml --out results/default
    python -m core.results check results/default

``results/<profile>/`` holds (a few MB):

- ``params.yaml``: the configuration of the run (as composed from ``conf/``);
- ``dvc.lock``: DVC's record of the run (every stage's command, dependency and output hashes);
- ``metrics/``: every metric netCDF file and ``summary.json`` of ``data/metrics``;
- ``raven/tasks/<set>/<split>/``: the first problem of each task set's first shard, for the
  example-problem figure (``figures.problem_split``);
- ``stage_times.json`` (when the run's ``make repro`` log is given): seconds per stage, the
  stage table of the README;
- ``provenance.json``: the git commit (``-dirty`` when the tree had changes), the profile, the
  config hash and the metrics hash the files were made with, and each file's sha256.

:func:`check` refuses results that the current code cannot use: a ``params.yaml`` the current
validation rejects, files whose sha256 differ from the provenance, metric files that do not match
the current schema or were made from another configuration (through ``figures.inputs``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.config import ConfigError, config_hash, load
from core.data import RavenDataset
from core.io import atomic_write_text
from core.raven.store import RavenFileError, write_shard
from core.schema import FILES, SchemaError, metrics_hash

PROVENANCE = "provenance.json"
N_PROBLEMS = 1  # problems kept per task set (the figure shows the first)
ROW_KEYS = ("image", "target", "shapes", "attrs", "rules", "index")


STAGE_TIMES = "stage_times.json"
STAGE = re.compile(r"^(Running stage|Stage) '([^']+)'")


def stage_times(log: Path) -> dict[str, float]:
    """Seconds per stage that ran, from the log ``make repro`` writes through
    ``benchmarks.timelog`` (a stage: from its "Running stage" line to the next stage line;
    skipped stages are left out)."""
    events: list[tuple[float, str | None]] = []
    for line in Path(log).read_text().splitlines():
        t, _, text = line.partition("\t")
        m = STAGE.match(text)
        if m:
            events.append((float(t), m.group(2) if m.group(1) == "Running stage" else None))
        elif text.startswith(("Updating lock file", "Use `dvc push`", "# end")):
            events.append((float(t), None))
    times: dict[str, float] = {}
    for (t, name), (t_next, _) in zip(events, events[1:]):
        if name is not None:
            times[name] = times.get(name, 0.0) + (t_next - t)
    return times


def group(times: dict[str, float]) -> dict[str, tuple[float, int]]:
    """Sum foreach/matrix expansions (``masks@key``) into their stage: (seconds, count)."""
    out: dict[str, tuple[float, int]] = {}
    for name, t in times.items():
        base = name.split("@")[0]
        s, n = out.get(base, (0.0, 0))
        out[base] = (s + t, n + 1)
    return out


class ResultsError(ValueError):
    """Results that cannot be exported or used; the message names the file."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_commit(root: Path) -> str:
    """``HEAD``'s hash, ``-dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty.strip() else "")


def _sample_shards(raven: Path, out: Path, split: str) -> list[Path]:
    written = []
    sets = sorted(p for p in (raven / "tasks").glob("*") if (p / split).is_dir())
    if not sets:
        raise ResultsError(f"{raven}/tasks: no task set with a {split!r} split")
    for d in sets:
        shard = sorted(f for f in (d / split).glob("*.npz") if not f.name.startswith(".tmp-"))[0]
        with np.load(shard, allow_pickle=False) as z:
            arrays = {k: z[k][:N_PROBLEMS] for k in ROW_KEYS if k in z.files}
            config = str(z["configuration"]) if "configuration" in z.files else shard.stem
        written.append(write_shard(out / "raven" / "tasks" / d.name / split / shard.name,
                                   arrays, config))
    return written


def _stage_order(root: Path) -> dict[str, int]:
    """Stage name -> position in ``dvc.yaml`` (empty when there is none)."""
    try:
        stages = yaml.safe_load((root / "dvc.yaml").read_text()).get("stages", {})
    except (OSError, yaml.YAMLError, AttributeError):
        return {}
    return {name: i for i, name in enumerate(stages)}


def export(params: str | Path, metrics: str | Path, raven: str | Path, out: str | Path,
           root: str | Path = ".", timing: str | Path | Sequence[str | Path] | None = None
           ) -> Path:
    """Copy the small results of a finished run to ``out`` (replacing what it held); with
    ``timing`` (the ``make repro`` log(s) that made the results) also its stage times: with
    several logs (a run that reused stages DVC had cached from an earlier identical run),
    each stage's time comes from the last log in which it ran."""
    cfg = load(params)
    metrics, raven, out = Path(metrics), Path(raven), Path(out)
    needed = [metrics / f"{n}.nc" for n in FILES] + [metrics / "summary.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise ResultsError(f"{missing[0]}: file not found (run the pipeline first: make repro)")
    if out.exists():
        shutil.rmtree(out)
    (out / "metrics").mkdir(parents=True)
    shutil.copyfile(params, out / "params.yaml")
    lock = Path(params).with_name("dvc.lock")
    if lock.is_file():
        shutil.copyfile(lock, out / "dvc.lock")
    for p in needed:
        shutil.copyfile(p, out / "metrics" / p.name)
    _sample_shards(raven, out, cfg.figures.problem_split)
    logs = [] if timing is None else [timing] if isinstance(timing, (str, Path)) else timing
    if logs:
        times: dict[str, float] = {}
        for log in logs:
            ran = stage_times(Path(log))
            if not ran:
                raise ResultsError(f"{log}: no stage ran in this log (expected the log of a "
                                   "`make repro` that made these results)")
            times.update(ran)
        order = _stage_order(Path(root))  # pipeline order, whichever log a stage came from
        times = dict(sorted(times.items(), key=lambda kv: (
            order.get(kv[0].split("@")[0], len(order)), kv[0])))
        (out / STAGE_TIMES).write_text(json.dumps({k: round(v, 1) for k, v in times.items()},
                                                  indent=1) + "\n")
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != PROVENANCE)
    prov = {"commit": git_commit(Path(root)), "profile": cfg.profile,
            "config_hash": config_hash(cfg), "metrics_hash": metrics_hash(cfg),
            "made_by": "python -m core.results export",
            "files": {p.relative_to(out).as_posix(): _sha256(p) for p in files}}
    atomic_write_text(out / PROVENANCE, json.dumps(prov, indent=1, sort_keys=True) + "\n")
    return out


def check(results: str | Path) -> dict[str, Any]:
    """Validate ``results`` against the current code; returns its provenance."""
    from figures.inputs import Inputs  # figures imports core: keep core importable alone
    from figures.style import FigureError

    results = Path(results)
    path = results / PROVENANCE
    if not path.is_file():
        raise ResultsError(f"{path}: file not found (expected results written by "
                           "`python -m core.results export`)")
    try:
        prov = json.loads(path.read_text())
    except ValueError as err:
        raise ResultsError(f"{path}: not valid JSON: {err}") from None
    for rel, digest in sorted(prov.get("files", {}).items()):
        f = results / rel
        if not f.is_file():
            raise ResultsError(f"{f}: file not found (listed in {path})")
        if _sha256(f) != digest:
            raise ResultsError(f"{f}: sha256 differs from {path} (edited after export?)")
    try:
        cfg = load(results / "params.yaml")
    except ConfigError as err:
        raise ResultsError(f"{err} (the current code does not accept these results' "
                           "configuration: re-export them from a new run)") from None
    if config_hash(cfg) != prov.get("config_hash") or cfg.profile != prov.get("profile"):
        raise ResultsError(f"{results / 'params.yaml'}: not the configuration recorded in {path}")
    inp = Inputs(results / "metrics", results / "raven", cfg)
    try:
        for name in FILES:
            _ = inp[name]
        _ = inp.summary
        split = cfg.figures.problem_split
        for d in sorted((results / "raven" / "tasks").glob("*")):
            RavenDataset(d, split=split)
    except (FigureError, SchemaError, RavenFileError) as err:
        raise ResultsError(str(err)) from None
    return prov


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.results", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="copy a finished run's small results for committing")
    e.add_argument("--params", default="params.yaml")
    e.add_argument("--metrics", default="data/metrics")
    e.add_argument("--raven", default="data/raven")
    e.add_argument("--out", required=True, help="e.g. results/default")
    e.add_argument("--timing", action="append", default=None,
                   help="the run's `make repro` log (build/repro-<profile>.log): stage times; "
                        "repeat for the earlier runs whose cached stages it reused (each "
                        "stage's time from the last log in which it ran)")
    c = sub.add_parser("check", help="check results against the current code")
    c.add_argument("results")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "export":
            out = export(args.params, args.metrics, args.raven, args.out, timing=args.timing)
            prov = json.loads((out / PROVENANCE).read_text())
            print(f"{out}: {len(prov['files'])} files, profile {prov['profile']}, "
                  f"commit {prov['commit'][:12]}")
        else:
            prov = check(args.results)
            print(f"{args.results}: ok (profile {prov['profile']}, commit {prov['commit'][:12]}, "
                  f"{len(prov['files'])} files)")
    except (ResultsError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
