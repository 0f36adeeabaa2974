"""Module metrics: mask files and their evaluations -> labelled netCDF datasets + summary.json.

    python -m core.metrics --params P --masks data/masks --train data/train --out data/metrics

The stage (:func:`run`): load the parameters, build the finalised datasets (:func:`build`), the
summary (:func:`core.metrics.summary.summarize`), and write them (:func:`write`); :func:`main`
is its command line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from core import __version__
from core.config import Config, ConfigError, load
from core.formats.metrics import FILES, SchemaError, finalize, metrics_hash, write_summary
from core.io import atomic_path
from core.metrics.datasets import compute
from core.metrics.inputs import MetricsError
from core.metrics.summary import summarize


def source_string() -> str:
    """``modules-avr <version>`` plus ``git describe --always --dirty`` when available."""
    try:
        desc = subprocess.run(["git", "describe", "--always", "--dirty"],
                              cwd=Path(__file__).resolve().parents[2], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        desc = ""
    return f"modules-avr {__version__}" + (f" (git {desc})" if desc else "")


def build(masks: str | Path, train: str | Path, cfg: Config, source: str | None = None,
          progress: bool = True) -> dict[str, xr.Dataset]:
    """Load inputs and return the finalised (annotated, validated) datasets."""
    raw = compute(masks, train, cfg, progress=progress)
    src = source_string() if source is None else source
    m = cfg.metrics
    common = {"profile": cfg.profile, "config_hash": metrics_hash(cfg),
              "metrics_params": f"alpha_tolerance={m.alpha_tolerance:g} "
                                f"alpha_min_seeds={m.alpha_min_seeds} "
                                f"dispersity_samples={m.dispersity_samples} ci={m.ci:g} "
                                f"degenerate_max={cfg.masks.degenerate_max:g}"}
    extra = {"curves": {"snapshot_param": raw["_snapshot_param"]}}
    return {name: finalize(raw[name], name, src, {**common, **extra.get(name, {})})
            for name in FILES}


def write(datasets: Mapping[str, xr.Dataset], out: str | Path,
          summary: Mapping[str, Any] | None = None) -> list[Path]:
    """Write each dataset atomically as ``<out>/<name>.nc`` (netCDF4, fixed encoding) and,
    when given, ``summary.json`` (sorted keys, NaN as null)."""
    paths = []
    for name in FILES:
        path = Path(out) / f"{name}.nc"
        with atomic_path(path) as tmp:
            datasets[name].to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        paths.append(path)
    if summary is not None:
        paths.append(write_summary(out, summary))
    return paths


def run(masks: str | Path, train: str | Path, params: str | Path, out: str | Path,
        profile: str | None = None, progress: bool = True) -> dict[str, Any]:
    """The whole stage: load params, build the datasets and the summary, write them."""
    cfg = load(params, profile)
    datasets = build(masks, train, cfg, progress=progress)
    summary = summarize(datasets, cfg)
    write(datasets, out, summary)
    return {**datasets, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.metrics", description=__doc__.split("\n")[0])
    ap.add_argument("--masks", required=True, help="folder of net<k>/<ckpt>/ mask folders")
    ap.add_argument("--train", required=True, help="folder of net<k>/ training outputs")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--out", required=True, help="folder for the .nc files and summary.json")
    args = ap.parse_args(argv)
    try:
        ds = run(args.masks, args.train, args.params, args.out, args.profile)
    except (MetricsError, ConfigError, SchemaError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_deg = ds["summary"]["degenerate_runs"]
    if n_deg:
        print(f"warning: {n_deg} mask runs never trained (read-out empty or full, logits "
              "unmoved or all equal): flagged not converged and left out of every verdict "
              "(summary.json: degenerate_runs, excluded_degenerate)", file=sys.stderr)
    sel = ds["modules"]["selected_alpha"]
    print(f"{args.out}: {', '.join(f'{n}.nc' for n in FILES)}, summary.json; selected alpha "
          + ", ".join(f"{c}={a:g}" for c, a in zip(sel["checkpoint"].values, sel.values)))
    return 0
