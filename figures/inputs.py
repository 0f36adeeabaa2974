"""What the figures read: the metric files (validated against ``core.formats.metrics`` and refused when
written for another configuration) and the generated problems, plus small helpers shared by
the figure modules. Statistics come from :mod:`core.stats` (intervals across networks with
mask seeds nested inside, level ``metrics.ci``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from core import stats
from core.config import Config
from core.formats.metrics import (
    SUMMARY,
    SchemaError,
    check_provenance,
    metrics_hash,
    open_metrics,
    read_summary,
)
from core.tasks import FAMILIES
from figures.style import FigureError


class Inputs:
    """Lazily opened inputs of the figures: ``metrics/<name>.nc``, ``metrics/summary.json``
    and the ``raven`` folder. Every file must come from the configuration ``cfg``."""

    def __init__(self, metrics: str | Path, raven: str | Path, cfg: Config):
        self.metrics, self.raven, self.cfg = Path(metrics), Path(raven), cfg
        self.config_hash = metrics_hash(cfg)
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> xr.Dataset:
        """The validated dataset ``<metrics>/<name>.nc``; a missing file or variable or a file
        of another configuration raises :class:`FigureError` naming the path."""
        if name not in self._cache:
            try:
                self._cache[name] = open_metrics(self.metrics, name, self.config_hash)
            except SchemaError as err:
                raise FigureError(str(err)) from None
        return self._cache[name]

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` of core.metrics (checked like the netCDF files)."""
        if "summary" not in self._cache:
            path = self.metrics / SUMMARY
            try:
                data = read_summary(path)
                check_provenance(data, self.config_hash, path)
            except SchemaError as err:
                raise FigureError(f"{path}: {err}" if str(path) not in str(err) else str(err)
                                  ) from None
            self._cache["summary"] = data
        return self._cache["summary"]

    @property
    def level(self) -> float:
        return self.cfg.metrics.ci

    def families(self) -> list[str]:
        """Task families with masks in modules.nc, in core.tasks order."""
        have = {str(t) for t in self["modules"]["task"].values}
        return [f for f, fam in FAMILIES.items() if any(t in have for t in fam.tasks)]

    def tasks(self, family: str) -> list[str]:
        """The family's tasks that have masks."""
        have = {str(t) for t in self["modules"]["task"].values}
        return [t for t in FAMILIES[family].tasks if t in have]


def at_selected(da: xr.DataArray, modules: xr.Dataset, where: str) -> xr.DataArray:
    """``da`` (with an ``alpha`` dim) at each checkpoint's ``selected_alpha`` of modules.nc;
    the result has no ``alpha`` dim. Raises naming ``where`` when no selected alpha exists."""
    sel = modules["selected_alpha"]
    if bool(sel.isnull().any()):
        bad = [str(c) for c in sel["checkpoint"].values[sel.isnull().values]]
        raise FigureError(f"{where}: modules.nc selected_alpha is NaN at checkpoint(s) "
                          f"{', '.join(bad)} (expected an alpha chosen by core.metrics)")
    alphas = da["alpha"].values
    idx = []
    for ck in da["checkpoint"].values:
        a = float(sel.sel(checkpoint=ck))
        k = int(np.argmin(np.abs(np.log(alphas) - np.log(a))))
        if not np.isclose(alphas[k], a, rtol=1e-6):
            raise FigureError(f"{where}: selected alpha {a:g} of checkpoint {ck} is not on the "
                              f"alpha axis {list(map(float, alphas))}")
        idx.append(k)
    return da.isel(alpha=xr.DataArray(idx, dims="checkpoint")).drop_vars("alpha")


def converged(da: xr.DataArray, modules: xr.Dataset) -> xr.DataArray:
    """``da`` at the selected alpha with unconverged runs set to NaN (verdicts and the
    figures use converged runs only)."""
    ok = at_selected(modules["converged"], modules, "modules.nc converged") == 1
    return at_selected(da, modules, f"{da.name}").where(ok)


def across_networks(da: xr.DataArray, level: float, over: tuple[str, ...] = ()
                    ) -> xr.Dataset:
    """Mean and interval across networks of ``da`` after averaging ``over`` and the mask
    seeds within each network (:func:`core.stats.nested_ci`)."""
    if over:
        da = da.mean(list(over), skipna=True)
    return stats.nested_ci(da, level, ("seed",), "network")


def errorbars(st: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(mean, 2 x n asymmetric error) of a 1-D interval dataset; NaN bounds draw no bar."""
    m = np.asarray(st["mean"].values, float)
    err = np.abs(np.stack([m - st["lower"].values, st["upper"].values - m]))
    return m, np.nan_to_num(err)


def require_data(da: xr.DataArray, where: str) -> xr.DataArray:
    """``da``; when it holds no finite value (e.g. no mask of the run converged, or every one
    kept no weight), a warning naming ``where`` on stderr: the figure is drawn with empty
    panels rather than failing the stage, so a settings sweep (``dvc exp run``) finishes and
    the report states the verdicts as not testable."""
    if not bool(np.isfinite(da.values).any()):
        print(f"warning: {where}: no finite values (no converged mask?): its panels are empty",
              file=sys.stderr)
    return da
