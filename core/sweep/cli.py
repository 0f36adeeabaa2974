"""Train every mask of one network in one process; resume a killed sweep; one HTML report.

    python -m core.sweep --params params.yaml --net 0 --train data/train/net0 \\
        --data data/raven --out data/masks/net0 --report data/reports/masks/net0.html \\
        [--executor inprocess|process|ray] [--workers N]   (or MASKS_EXECUTOR=ray in the environment)

``--report`` runs the whole sweep through the mask notebook (``analysis/train_masks.ipynb``,
what the ``masks`` stage runs: one kernel trains the masks, then reads them back into the HTML
report) and writes the timing summary to ``<report>.json`` beside it (outputs in ``<out>`` stay
byte-identical). Without it the sweep runs here (:class:`core.sweep.sweep.Sweep`), for
scripting. What the sweep trains, keeps and evaluates: :mod:`core.sweep`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from core.config import Config, ConfigError, load
from core.data import RavenFileError
from core.device import DeviceError
from core.formats.masks import MaskError
from core.lock import LockError, die_with_parent, writer_lock
from core.models import CheckpointError
from core.notebook import ParameterError
from core.notebook import run as run_notebook
from core.sweep.errors import SweepError
from core.sweep.executors import EXECUTORS
from core.sweep.sweep import Sweep


def process_age() -> float | None:
    """Seconds since this process started (interpreter start and imports included; Linux
    /proc), or None where that is not readable."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - start
    except (OSError, ValueError, IndexError):
        return None


def report(notebook: Path, html: Path, args: argparse.Namespace) -> None:
    """The sweep through the mask notebook (one kernel: it trains the masks, then reads them
    back into the HTML report; the timing JSON beside it), as the masks stage runs it."""
    run_notebook(notebook, html, {
        "params": str(args.params), "profile": args.profile or "", "network": int(args.net),
        "train_dir": str(args.train), "data": str(args.data), "out": str(args.out),
        "executor": args.executor or "", "workers": args.workers or 0,
        "timing": str(html.with_suffix(".json"))})



def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml", help="the parameters file (params.yaml)")
    ap.add_argument("--profile", default=None,
                    help="use this profile (composed from conf/ when the file holds another)")
    ap.add_argument("--net", type=int, required=True, help="network seed (train.networks)")
    ap.add_argument("--train", required=True, help="the network's checkpoints (data/train/netK)")
    ap.add_argument("--data", default="data/raven", help="data folder holding tasks/<set>/")
    ap.add_argument("--out", required=True, help="the network's mask folder (data/masks/netK)")
    ap.add_argument("--report", default=None, help="run the sweep through the mask notebook "
                    "(--notebook) and write its HTML report here (+ timing .json beside it)")
    ap.add_argument("--executor", default=None,
                    help="inprocess, process or ray (default: $MASKS_EXECUTOR, else process "
                    "when masks.workers > 1, else inprocess); the files are byte-identical "
                    "whichever runs them, so DVC need not track it")
    ap.add_argument("--workers", type=int, default=None,
                    help="runs at a time (process executor, local Ray; default masks.workers)")
    ap.add_argument("--notebook", default=str(Path(__file__).resolve().parents[2] /
                                              "analysis" / "train_masks.ipynb"),
                    help="the mask notebook (--report: run through papermill)")
    return ap


def executor_of(args: argparse.Namespace, cfg: Config) -> str:
    """The executor to run (``--executor``, else ``$MASKS_EXECUTOR``, else ``process`` when
    ``--workers`` > 1); sets ``args.workers`` where not given (``masks.workers``)."""
    where = "--executor" if args.executor else "MASKS_EXECUTOR"
    if args.workers is None:
        args.workers = cfg.masks.workers
    executor = (args.executor or os.environ.get("MASKS_EXECUTOR")
                or ("process" if args.workers > 1 else "inprocess"))
    if executor not in EXECUTORS:
        raise SweepError(f"{where}: expected one of {', '.join(EXECUTORS)}, got "
                         f"{executor!r}")
    if args.workers < 1:
        raise SweepError(f"--workers: expected an integer >= 1, got {args.workers}")
    return executor


def run_sweep(args: argparse.Namespace) -> dict:
    """The sweep here, under the mask folder's writer lock; its timing summary."""
    cfg = load(args.params, args.profile)
    if args.net not in cfg.train.networks:
        raise SweepError(f"--net {args.net}: not one of train.networks "
                         f"{cfg.train.networks} in {args.params}")
    executor = executor_of(args, cfg)
    die_with_parent()  # a killed dvc takes the sweep (and so its workers) along
    with writer_lock(args.out, "core.sweep"):  # one writer per mask folder
        sweep = Sweep(cfg, args.net, Path(args.train), Path(args.data), Path(args.out),
                      log=lambda m: print(m, flush=True))
        return sweep.run(executor, args.workers, progress=True)


def print_summary(out: str, summary: dict) -> None:
    share = summary["overhead_share"]
    print(f"{out}: {summary['trained']} trained, {summary['kept']} kept; wall "
          f"{summary['wall_s']:.1f} s, mask compute {summary['compute_s']:.1f} s, group "
          f"evaluation {summary['group_eval_s']:.1f} s" +
          ("" if share is None else f", overhead {100 * share:.1f}% of (compute + "
                                    f"evaluation) / {summary['workers']} workers"))


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parser().parse_args(argv)
    if args.report:
        try:
            report(Path(args.notebook), Path(args.report), args)
        except (ParameterError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        summary = run_sweep(args)
    except (SweepError, MaskError, ConfigError, CheckpointError, RavenFileError,
            DeviceError, LockError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary["process_wall_s"] = time.perf_counter() - t_start  # from main(), imports excluded
    summary["process_age_s"] = process_age()  # from the interpreter's start (before the report)
    print_summary(args.out, summary)
    return 0
