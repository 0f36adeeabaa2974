"""Training and mask curves as images, and the run's headline numbers, for DVC (dvc.yaml's
top-level ``plots:`` and ``metrics:``).

    python -m core.plots --params params.yaml --train data/train --masks data/masks \
        --summary data/metrics/summary.json --out data/plots --headline data/headline.json

Writes PNG images (matplotlib; byte-stable: no date or version in the file), one line per
network (``net<k>``) or per network and checkpoint (``net<k> <checkpoint>``), which
``dvc plots show`` embeds as images, so its page reads without a network connection:

- ``training.png``: training loss (batch mean) per optimiser step;
- ``validation.png``: validation accuracy (percent), the milestones dashed;
- ``mask_density.png`` / ``mask_accuracy.png``: mask density (percent of weights kept) and
  masked task accuracy (percent) per mask training step, the mean over the tasks and seeds
  of the main runs (``masks.alpha``).

and ``headline.json`` (:func:`headline`): about fifteen numbers of ``summary.json`` in one
flat mapping, the metric ``dvc metrics show`` and ``dvc exp show`` print.

The files are views of ``training.nc``, the mask files and ``summary.json``, inputs of no stage.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from core.config import ConfigError, load
from core.formats.control import ControlError, read_result
from core.formats.masks import MaskError, load_mask
from core.formats.metrics import SchemaError, read_summary
from core.io import atomic_write_bytes, atomic_write_text


class PlotError(RuntimeError):
    """A missing or unreadable input; the message names the file."""


def training_rows(train: Path, networks: list[int]) -> tuple[list[tuple], list[tuple]]:
    loss, val = [], []
    for net in networks:
        path = train / f"net{net}" / "training.nc"
        if not path.exists():
            raise PlotError(f"{path}: file not found (expected the training log of network {net})")
        with xr.open_dataset(path, engine="netcdf4") as ds:
            loss += [(f"net{net}", int(s), float(v))
                     for s, v in zip(ds["step"].values, ds["loss"].values)]
            val += [(f"net{net}", int(s), float(v))
                    for s, v in zip(ds["val_step"].values, ds["val_acc"].values)]
    return loss, val


def mask_rows(masks: Path, networks: list[int], alpha: float) -> dict[str, list[tuple]]:
    """Mean curve of the main-alpha masks per network and checkpoint."""
    acc: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    for net in networks:
        for path in sorted((masks / f"net{net}").glob("*/*.pt")):
            try:
                rec = load_mask(path)
            except MaskError as err:
                raise PlotError(str(err)) from None
            if not np.isclose(rec["alpha"], alpha, rtol=1e-9, atol=0):
                continue
            c = rec["curve"]
            for i, step in enumerate(c["step"]):
                acc[f"net{net} {rec['checkpoint']}", int(step)].append(
                    np.array([c["density"][i], c["task_acc"][i]], float))
    density, task = [], []
    for (series, step), vals in sorted(acc.items()):
        mean = np.mean(vals, axis=0)
        density.append((series, step, float(mean[0])))
        task.append((series, step, float(mean[1])))
    return {"density": density, "task_acc": task}


# short names of the task families in headline keys (the original study's family has none)
FAMILY_KEYS = {"original": "", "shape_rule": "shape.", "control": "ctrl."}


def _mean(iv: Mapping[str, Any] | None) -> float | None:
    m = None if iv is None else iv.get("mean")
    return None if m is None else round(float(m), 1)


def _short(verdict: str | None) -> str | None:
    """A verdict without its explanation: ``not shown distinct (...)`` -> ``not shown distinct``."""
    return None if verdict is None else verdict.split(" (")[0]


def headline(summary: Mapping[str, Any], control: Mapping[str, Any] | None = None
             ) -> dict[str, Any]:
    """The numbers a reader looks at first, from ``summary.json``, flat (one column each in
    ``dvc exp show``), percentages to one decimal; keys carry the milestone (``@80``: checkpoint
    ``scl_80``) and the family (none: the original study's; ``shape.``, ``ctrl.``):

    - ``milestones``: how many milestones every network reached; ``val@M``: the validation
      accuracy at milestone M (mean over networks);
    - ``sparsity@M`` per family and checkpoint with masks (percent of weights removed);
    - ``cross@M`` / ``same@M`` at each family's last checkpoint: IoMin overlap (percent) of two
      tasks' masks vs two seeds of one task's (modules are distinct when cross < same);
    - ``ctrl.sharing``: the control family's sharing verdict there (can the method see modules
      that differ by construction?); ``profile``;
    - ``control``: the composite positive control's verdict (``pass``/``fail``; with
      ``control``, the run's control.json).
    """
    nets = len(summary["networks"])
    cks = summary["checkpoints"]
    out: dict[str, Any] = {"profile": summary["profile"],
                           "milestones": sum(1 for e in cks.values()
                                             if e["val_acc"].get("n") == nets)}
    last: dict[str, tuple[str, Mapping]] = {}
    for ck, entry in cks.items():
        m = ck.rsplit("_", 1)[-1]
        out[f"val@{m}"] = _mean(entry["val_acc"])
        for fam, prefix in FAMILY_KEYS.items():
            f = entry.get("families", {}).get(fam)
            if f and f.get("runs"):
                out[f"{prefix}sparsity@{m}"] = _mean(f["sparsity"])
                last[fam] = (m, f)
    for fam, (m, f) in last.items():
        prefix = FAMILY_KEYS[fam]
        out[f"{prefix}cross@{m}"] = _mean(f["iomin"]["cross_task"])
        out[f"{prefix}same@{m}"] = _mean(f["iomin"]["same_task"])
    if "control" in last:
        out["ctrl.sharing"] = _short(last["control"][1]["iomin"]["verdict"])
    if control is not None:
        out["control"] = "pass" if control["verdict"]["passes"] else "fail"
    return out


def _png(rows: list[tuple], title: str, xlabel: str, ylabel: str,
         hlines: tuple[float, ...] = ()) -> bytes:
    """One line per series of ``rows`` = (series, x, y), as PNG bytes without date or version."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    series: dict[str, list[tuple]] = defaultdict(list)
    for name, x, y in rows:
        series[name].append((x, y))
    for name, pts in sorted(series.items()):
        xs, ys = zip(*sorted(pts))
        ax.plot(xs, ys, label=name, linewidth=1.2)
    for h in hlines:
        ax.axhline(h, color="0.5", linestyle="--", linewidth=0.8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, ncol=2 if len(series) > 4 else 1)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def write(params: str | Path, train: str | Path, masks: str | Path, out: str | Path,
          summary: str | Path | None = None, headline_out: str | Path | None = None,
          control: str | Path | None = None) -> list[Path]:
    cfg = load(params)
    nets = list(cfg.train.networks)
    loss, val = training_rows(Path(train), nets)
    m = mask_rows(Path(masks), nets, cfg.masks.alpha)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = {
        "training.png": _png(loss, "Training loss (batch mean) per network", "optimiser step",
                             "cross-entropy loss"),
        "validation.png": _png(val, "Validation accuracy per network (dashed: milestones)",
                               "optimiser step", "validation accuracy (%)",
                               tuple(cfg.train.milestones)),
        "mask_density.png": _png(m["density"], "Mask density (main runs, mean over tasks and "
                                 "seeds)", "mask training step",
                                 "density (% of weights kept)"),
        "mask_accuracy.png": _png(m["task_acc"], "Masked task accuracy (main runs, mean over "
                                  "tasks and seeds)", "mask training step", "task accuracy (%)"),
    }
    paths = [atomic_write_bytes(out / name, data) for name, data in images.items()]
    if summary is not None and headline_out is not None:
        path = Path(summary)
        try:
            ctl = read_result(control) if control is not None else None
        except ControlError as err:
            raise PlotError(str(err)) from None
        try:
            numbers = headline(read_summary(path), ctl)
        except SchemaError as err:
            raise PlotError(str(err)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise PlotError(f"{path}: not a summary.json of core.metrics ({err!r})") from None
        paths.append(atomic_write_text(Path(headline_out),
                                       json.dumps(numbers, indent=1) + "\n"))
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.plots", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/train", help="folder of net<k>/training.nc")
    ap.add_argument("--masks", default="data/masks", help="folder of net<k>/<ckpt>/*.pt")
    ap.add_argument("--out", default="data/plots", help="folder for the PNG images")
    ap.add_argument("--summary", default=None, help="summary.json of the metrics stage")
    ap.add_argument("--headline", default=None,
                    help="where to write headline.json (with --summary)")
    ap.add_argument("--control", default=None,
                    help="the run's control.json (its verdict joins the headline)")
    args = ap.parse_args(argv)
    if (args.summary is None) != (args.headline is None):
        ap.error("--summary and --headline go together")
    try:
        paths = write(args.params, args.train, args.masks, args.out, args.summary,
                      args.headline, args.control)
    except (ConfigError, PlotError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
