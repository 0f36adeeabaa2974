"""Committed results of a reference run: what a reviewer needs to rebuild every figure and the
paper without training (``make figures``).

    python -m core.results export --params params.yaml --out results/default [--force]
    python -m core.results check results/default

``results/<profile>/`` holds (a few MB):

- ``params.yaml``: the configuration of the run (as composed from ``conf/``);
- ``dvc.lock``: DVC's record of the run (every stage's command, dependency and output hashes);
- ``metrics/``: every metric netCDF file and ``summary.json`` of ``data/metrics``;
- ``raven/tasks/<set>/<split>/``: the first problem of each task set's first shard, for the
  example-problem figure (``figures.problem_split``);
- ``modules/``: the run's milestone checkpoints and every mask's read-out, bit-packed
  (:mod:`core.readouts`: a reviewer loads a module without training), when the run has masks;
- ``control.json``: the run's composite positive control (``data/control/control.json``, the
  pipeline's ``control`` stage), when the run made one;
- ``stage_times.json`` (when the run's ``make repro`` log is given): seconds per stage, the
  stage table of the README;
- ``provenance.json``: the git commit, the profile, the config hash and the metrics hash the
  files were made with, and each file's sha256;
- ``.core-results``: the marker of a folder export made (``--force`` replaces only such a
  folder, and only when it holds nothing besides what its provenance lists).

Export validates every input before it writes anything (the metric files' schema and config
hash against the params, the timing logs, the example problems, the commit), then writes the
bundle into a temporary folder that replaces ``--out`` with one rename, under the folder's
writer lock (:mod:`core.lock`). It refuses a checkout whose code differs from ``HEAD`` and
metric files whose ``source`` names another commit than ``HEAD``: every record of an export
names one commit (``--no-commit-check`` for scratch exports).

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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.config import ConfigError, config_hash, load, load_yaml
from core.data import RavenDataset
from core.formats.metrics import (
    FILES,
    SUMMARY,
    SchemaError,
    metrics_hash,
    open_metrics,
    read_summary,
)
from core.io import RUN_FILES, atomic_write_text, git_commit  # noqa: F401 (re-exported)
from core.lock import LockError, writer_lock
from core.raven.store import (
    PID_FILE,
    OutDirError,
    RavenFileError,
    check_out_dir,
    staged_dir,
    write_shard,
)

PROVENANCE = "provenance.json"
N_PROBLEMS = 1  # problems kept per task set (the figure shows the first)
ROW_KEYS = ("image", "target", "shapes", "attrs", "rules", "index")


STAGE_TIMES = "stage_times.json"
CONTROL = "control.json"
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


MARKER = ".core-results"  # written into every folder export makes: only such folders are replaced


SOURCE_COMMIT = re.compile(r"\(git (?:.*-g)?([0-9a-f]{7,40})(-dirty)?\)")


def metrics_commit(source: str) -> str | None:
    """The commit a metric file's ``source`` attribute names (``modules-avr 0.1 (git
    abc1234-dirty)``: ``abc1234``); None when it names none."""
    m = SOURCE_COMMIT.search(source)
    return m.group(1) if m else None


def _exported(out: Path) -> bool:
    """Whether ``out`` is a folder export made and nobody added to: it holds the marker (or,
    for exports made before the marker, a provenance.json written by export) and no file
    besides those its provenance lists."""
    try:
        prov = json.loads((out / PROVENANCE).read_text())
        listed = set(prov["files"]) | {PROVENANCE, MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (out / MARKER).is_file() and prov.get("made_by") != "python -m core.results export":
        return False
    return all(p.relative_to(out).as_posix() in listed for p in out.rglob("*") if p.is_file())


def _validate_inputs(cfg: Any, metrics: Path, raven: Path, logs: Sequence[str | Path],
                     root: Path, check_commit: bool) -> tuple[dict[str, float], str]:
    """Everything export reads, checked before anything is written or replaced: the metric
    files exist, match the schema and were made from these params (config hash and profile),
    the timing logs exist and record stages, the example problems exist, and the checkout is
    at one clean commit that the metric files name too. Returns (stage times, commit)."""
    needed = [metrics / f"{n}.nc" for n in FILES] + [metrics / "summary.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise ResultsError(f"{missing[0]}: file not found (run the pipeline first: make repro)")
    want = metrics_hash(cfg)
    sources = {}
    for name in FILES:
        try:
            ds = open_metrics(metrics, name, want)
        except SchemaError as err:
            raise ResultsError(f"{err} (export refuses metrics that the params, profile "
                               f"{cfg.profile}, did not make)") from None
        sources[name] = str(ds.attrs.get("source", ""))
    try:
        summary = read_summary(metrics / SUMMARY)
    except SchemaError as err:
        raise ResultsError(str(err)) from None
    if summary.get("config_hash") != want or summary.get("profile") != cfg.profile:
        raise ResultsError(f"{metrics / 'summary.json'}: written for another configuration "
                           f"(profile {summary.get('profile')!r}, config_hash "
                           f"{str(summary.get('config_hash'))[:12]}; the params, profile "
                           f"{cfg.profile}, hash to {want[:12]})")
    split = cfg.figures.problem_split
    if not any((d / split).is_dir() for d in (raven / "tasks").glob("*")):
        raise ResultsError(f"{raven}/tasks: no task set with a {split!r} split (expected the "
                           "run's data, data/raven)")
    times: dict[str, float] = {}
    for log in logs:
        if not Path(log).is_file():
            raise ResultsError(f"{log}: timing log not found (expected the `make repro` log "
                               "that made these results, build/repro-<profile>.log)")
        ran = stage_times(Path(log))
        if not ran:
            raise ResultsError(f"{log}: no stage ran in this log (expected the log of a "
                               "`make repro` that made these results)")
        times.update(ran)
    commit = git_commit(root)
    if check_commit:
        if commit == "unknown" or commit.endswith("-dirty"):
            raise ResultsError(
                f"{root}: the checkout is {'not a git repository' if commit == 'unknown' else 'dirty (code differs from HEAD)'}"
                "; commit first: the provenance must name the commit that made these results")
        for name, src in sources.items():
            made = metrics_commit(src)
            if made is None or not commit.startswith(made):
                raise ResultsError(
                    f"{metrics / (name + '.nc')}: made at commit {made or '(none recorded)'}, "
                    f"but the checkout is at {commit[:12]}: the provenance would name two "
                    "commits; re-run the pipeline at this commit (dvc repro --force metrics)")
    return times, commit


def _check_control(path: Path, cfg: Any) -> None:
    """A control.json of this profile, made at its mask settings, or one ResultsError."""
    from core.formats.control import ControlError, read_result
    try:
        result = read_result(path)
    except ControlError as err:
        raise ResultsError(str(err)) from None
    if result.get("profile") != cfg.profile:
        raise ResultsError(f"{path}: a control of profile {result.get('profile')!r}, not of "
                           f"{cfg.profile!r} (expected the run's data/control/control.json)")


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
        stages = load_yaml((root / "dvc.yaml").read_text(), root / "dvc.yaml").get("stages", {})
    except (OSError, ConfigError, AttributeError):
        return {}
    return {name: i for i, name in enumerate(stages)}


def export(params: str | Path, metrics: str | Path, raven: str | Path, out: str | Path,
           root: str | Path = ".", timing: str | Path | Sequence[str | Path] | None = None,
           force: bool = False, check_commit: bool = True,
           control: str | Path | None = None, train: str | Path | None = None,
           masks: str | Path | None = None) -> Path:
    """Copy the small results of a finished run to ``out``; with ``timing`` (the ``make
    repro`` log(s) that made the results) also its stage times: with several logs (a run that
    reused stages DVC had cached from an earlier identical run), each stage's time comes from
    the last log in which it ran.

    Every input is validated first (:func:`_validate_inputs`); the bundle is written to a
    temporary folder beside ``out`` that then replaces it with one rename (the rule of
    ``core.raven build --force``, :func:`core.raven.store.staged_dir`): a non-empty ``out``
    is replaced only with ``force`` and only when export made it and nothing was added (no
    foreign file is ever deleted). ``check_commit`` False (tests, scratch exports): the
    checkout may be dirty or at another commit than the metrics; the provenance says so.
    ``control``: the run's ``control.json`` (copied when the file exists); ``train`` and
    ``masks``: the run's networks and masks (``modules/``, when both folders exist)."""
    cfg = load(params)
    metrics, raven, out, root = Path(metrics), Path(raven), Path(out), Path(root)
    logs = [] if timing is None else [timing] if isinstance(timing, (str, Path)) else timing
    check_out_dir(out, force, MARKER, _exported, "core.results export", "results/default")
    times, commit = _validate_inputs(cfg, metrics, raven, logs, root, check_commit)
    about = {"profile": cfg.profile, "config_hash": config_hash(cfg)}
    with writer_lock(out, "python -m core.results export"), \
            staged_dir(out, force, about, MARKER, _exported, "core.results export",
                       "results/default") as tmp:
        (tmp / "metrics").mkdir(parents=True)
        shutil.copyfile(params, tmp / "params.yaml")
        lock = Path(params).with_name("dvc.lock")
        if lock.is_file():
            shutil.copyfile(lock, tmp / "dvc.lock")
        for p in [metrics / f"{n}.nc" for n in FILES] + [metrics / "summary.json"]:
            shutil.copyfile(p, tmp / "metrics" / p.name)
        _sample_shards(raven, tmp, cfg.figures.problem_split)
        if train is not None and masks is not None and Path(train).is_dir() \
                and Path(masks).is_dir():
            from core.readouts import ReadoutError
            from core.readouts import export as export_modules
            try:
                export_modules(params, train, masks, tmp / "modules")
            except (ReadoutError, OSError) as err:
                raise ResultsError(f"modules: {err}") from None
        if control is not None and Path(control).is_file():
            _check_control(Path(control), cfg)
            shutil.copyfile(control, tmp / CONTROL)
        if logs:
            order = _stage_order(root)  # pipeline order, whichever log a stage came from
            times = dict(sorted(times.items(), key=lambda kv: (
                order.get(kv[0].split("@")[0], len(order)), kv[0])))
            (tmp / STAGE_TIMES).write_text(json.dumps({k: round(v, 1) for k, v in times.items()},
                                                      indent=1) + "\n")
        files = sorted(p for p in tmp.rglob("*") if p.is_file()
                       and p.name not in (PROVENANCE, PID_FILE))
        prov = {"commit": commit, "profile": cfg.profile,
                "config_hash": config_hash(cfg), "metrics_hash": metrics_hash(cfg),
                "made_by": "python -m core.results export",
                "files": {p.relative_to(tmp).as_posix(): _sha256(p) for p in files}}
        atomic_write_text(tmp / PROVENANCE, json.dumps(prov, indent=1, sort_keys=True) + "\n")
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
    e.add_argument("--force", action="store_true",
                   help="replace a non-empty --out (only a folder export made, holding "
                        "nothing else)")
    e.add_argument("--no-commit-check", action="store_true",
                   help="export from a dirty checkout or metrics of another commit (scratch "
                        "exports; the provenance then names a -dirty commit)")
    e.add_argument("--train", default="data/train", help="the run's networks (modules/)")
    e.add_argument("--masks", default="data/masks", help="the run's masks (modules/)")
    e.add_argument("--control", default="data/control/control.json",
                   help="the run's composite control result (copied when it exists)")
    e.add_argument("--timing", action="append", default=None,
                   help="the run's `make repro` log (build/repro-<profile>.log): stage times; "
                        "repeat for the earlier runs whose cached stages it reused (each "
                        "stage's time from the last log in which it ran)")
    c = sub.add_parser("check", help="check results against the current code")
    c.add_argument("results")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "export":
            out = export(args.params, args.metrics, args.raven, args.out, timing=args.timing,
                         force=args.force, check_commit=not args.no_commit_check,
                         control=args.control, train=args.train, masks=args.masks)
            prov = json.loads((out / PROVENANCE).read_text())
            print(f"{out}: {len(prov['files'])} files, profile {prov['profile']}, "
                  f"commit {prov['commit'][:12]}")
        else:
            prov = check(args.results)
            print(f"{args.results}: ok (profile {prov['profile']}, commit {prov['commit'][:12]}, "
                  f"{len(prov['files'])} files)")
    except (ResultsError, ConfigError, OutDirError, LockError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
