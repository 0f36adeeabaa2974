"""``<checkpoint>/evals.nc``: every mask of one checkpoint evaluated (written by
:mod:`core.sweep`, read by :mod:`core.metrics`).

Dims ``mask`` (the mask file's stem, :func:`core.formats.masks.mask_name`), ``variant``
(:data:`VARIANTS`: model x mask, model x (1 - mask), the mask without the weights other tasks'
masks keep), ``eval_set`` (the task sets evaluated) and ``split`` (:data:`SPLITS`: selection
and report problems); accuracy (NaN where degenerate), raw accuracy, degenerate fraction,
problem counts, the weights each variant keeps, and the unmasked model's accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from core.formats.masks import parse_mask_name
from core.io import atomic_path

EVALS = "evals.nc"
VARIANTS = ("mask", "inverted", "selective")
SPLITS = ("select", "report")
DIMS = ("mask", "variant", "eval_set", "split")


class EvalsError(ValueError):
    """An ``evals.nc`` that is missing, malformed or does not match its mask files."""


def dataset(keys: Sequence[str], set_names: Sequence[str], acc: np.ndarray, deg: np.ndarray,
            n_prob: np.ndarray, kept: np.ndarray, full_acc: np.ndarray, full_deg: np.ndarray,
            *, tol: float, degenerate_max: float) -> xr.Dataset:
    """The evaluations as a Dataset: arrays on :data:`DIMS` (``kept`` on mask, variant; the
    unmasked ``full_*`` on eval_set, split)."""
    reported = np.where(deg > degenerate_max, np.nan, acc)
    dims = DIMS
    return xr.Dataset(
        {"accuracy": (dims, reported, {"units": "percent", "long_name":
                      f"accuracy; NaN where degenerate on > {degenerate_max:g} of problems"}),
         "accuracy_raw": (dims, acc, {"units": "percent"}),
         "degenerate": (dims, deg, {"units": "1", "long_name":
                        "fraction of problems whose 8 logits are constant"}),
         "n_problems": (dims, n_prob),
         "kept": (("mask", "variant"), kept, {"units": "percent", "long_name":
                  "masked weights the variant keeps"}),
         "full_accuracy": (("eval_set", "split"), full_acc, {"units": "percent"}),
         "full_degenerate": (("eval_set", "split"), full_deg, {"units": "1"})},
        coords={"mask": list(keys), "variant": list(VARIANTS), "eval_set": list(set_names),
                "split": list(SPLITS)},
        attrs={"degenerate_tol": float(tol), "degenerate_max": float(degenerate_max),
               "selective": "mask AND NOT union(other tasks of the family, same alpha/seed)"})


def write(path: Path, ds: xr.Dataset) -> None:
    """``evals.nc`` at ``path``, atomically."""
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp)


def _fail(path: Path, msg: str) -> EvalsError:
    return EvalsError(f"{path}: {msg}")


def _open(path: Path) -> xr.Dataset:
    if not path.exists():
        raise _fail(path, "file not found (evaluations of the masks of this checkpoint)")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            return ds.load()
    except Exception as err:
        raise _fail(path, f"cannot read as netCDF ({type(err).__name__}: {err})") from None


def _parse_stem(stem: str, where: Path) -> tuple[str, float, int]:
    try:
        return parse_mask_name(stem)
    except ValueError as err:
        raise _fail(where, str(err)) from None


def read(path: Path, stems: Sequence[str]) -> xr.Dataset:
    """One checkpoint's ``evals.nc`` as dims (task, alpha, seed, variant, eval_set, split) plus
    ``full_accuracy`` (eval_set, split); every mask file must have its evaluations (the mask
    coordinate holds the file stems) and no evaluation may lack its file."""
    ev = _open(path)
    for dim in ("mask", "variant", "eval_set", "split"):
        if dim not in ev.dims:
            raise _fail(path, f"dimension {dim!r} missing (expected mask, variant, eval_set, "
                              "split)")
    for var in ("accuracy", "degenerate"):
        if var not in ev.variables:
            raise _fail(path, f"variable {var!r} missing")
    for coord, want in (("variant", VARIANTS), ("split", SPLITS)):
        have = [str(v) for v in ev[coord].values]
        if any(w not in have for w in want):
            raise _fail(path, f"{coord} {have}, expected {list(want)}")
    keys = [str(k) for k in ev["mask"].values]
    missing, extra = sorted(set(stems) - set(keys)), sorted(set(keys) - set(stems))
    if missing:
        raise _fail(path, f"no evaluation of mask {missing[0]!r} (stale evals.nc?)")
    if extra:
        raise _fail(path, f"evaluates mask {extra[0]!r}, which has no mask file")
    if "full_accuracy" in ev.variables:
        full = ev["full_accuracy"]
    elif "full" in [str(v) for v in ev["variant"].values]:
        full = ev["accuracy"].sel(variant="full").isel(mask=0, drop=True)
    else:
        raise _fail(path, "unmasked accuracy missing (variable 'full_accuracy' on (eval_set, "
                          "split) or variant 'full')")
    parsed = [_parse_stem(k, path) for k in keys]
    if "n_problems" not in ev.variables:
        raise _fail(path, "variable 'n_problems' missing")
    ev = ev[["accuracy", "degenerate", "n_problems"]].sel(variant=list(VARIANTS),
                                                         split=list(SPLITS))
    index = pd.MultiIndex.from_tuples(parsed, names=["task", "alpha", "seed"])
    ev = ev.drop_vars("mask").assign_coords(xr.Coordinates.from_pandas_multiindex(index, "mask")
                                            ).unstack("mask")
    full = full.sel(split=list(SPLITS)).transpose("eval_set", "split")
    return ev.assign(full_accuracy=full.drop_vars([c for c in full.coords
                                                   if c not in ("eval_set", "split")]))
