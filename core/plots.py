"""Training and mask curves as small CSV files for ``dvc plots show/diff`` (declared in dvc.yaml).

    python -m core.plots --params params.yaml --train data/train --masks data/masks --out data/plots

Writes, one row per logged step and series (``series``: ``net<k>`` for training,
``net<k> <checkpoint>`` for masks; the template ``.dvc/plots/by_network.json`` colours by it):

- ``training.csv``: ``series, step, loss`` (training loss, batch mean);
- ``validation.csv``: ``series, step, val_acc`` (percent);
- ``mask_density.csv`` / ``mask_accuracy.csv``: ``series, step, density`` / ``task_acc``
  (percent), the mean over the tasks and seeds of the main runs (``masks.alpha``).

The files are views of ``training.nc`` and the mask files, not inputs of any stage.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import xarray as xr

from core.config import ConfigError, load
from core.io import atomic_write_text
from core.maskfile import MaskError, load_mask


class PlotError(RuntimeError):
    """A missing or unreadable input; the message names the file."""


def _csv(header: tuple[str, ...], rows: list[tuple]) -> str:
    def cell(v: object) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)
    return "\n".join([",".join(header), *(",".join(cell(v) for v in r) for r in rows)]) + "\n"


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


def write(params: str | Path, train: str | Path, masks: str | Path, out: str | Path) -> list[Path]:
    cfg = load(params)
    nets = list(cfg.train.networks)
    loss, val = training_rows(Path(train), nets)
    m = mask_rows(Path(masks), nets, cfg.masks.alpha)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"training.csv": _csv(("series", "step", "loss"), loss),
             "validation.csv": _csv(("series", "step", "val_acc"), val),
             "mask_density.csv": _csv(("series", "step", "density"), m["density"]),
             "mask_accuracy.csv": _csv(("series", "step", "task_acc"), m["task_acc"])}
    return [atomic_write_text(out / name, text) for name, text in files.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.plots", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", default="data/train", help="folder of net<k>/training.nc")
    ap.add_argument("--masks", default="data/masks", help="folder of net<k>/<ckpt>/*.pt")
    ap.add_argument("--out", default="data/plots")
    args = ap.parse_args(argv)
    try:
        paths = write(args.params, args.train, args.masks, args.out)
    except (ConfigError, PlotError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
