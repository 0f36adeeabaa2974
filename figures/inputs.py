"""What the figures read: the four metric files (validated against ``core.schema``) and the
generated problems, plus the read-time statistics shared by figures and paper.

The metric files keep every seed; means and confidence intervals are computed here with
:func:`core.metrics.mean_ci` (Student t over seeds) at the level ``metrics.ci`` of the config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from core.config import Config
from core.metrics import mean_ci
from core.schema import SchemaError, open_metrics
from figures.style import FigureError

__all__ = ["Inputs", "mean_ci", "at_selected", "ci_over_seeds"]


class Inputs:
    """Lazily opened inputs of the figures: ``metrics/<name>.nc`` and the ``raven`` folder."""

    def __init__(self, metrics: str | Path, raven: str | Path, cfg: Config):
        self.metrics, self.raven, self.cfg = Path(metrics), Path(raven), cfg
        self._cache: dict[str, xr.Dataset] = {}

    def __getitem__(self, name: str) -> xr.Dataset:
        """The validated dataset ``<metrics>/<name>.nc``; a missing file or variable raises
        :class:`FigureError` naming the path and what is missing."""
        if name not in self._cache:
            try:
                self._cache[name] = open_metrics(str(self.metrics), name)
            except SchemaError as err:
                raise FigureError(str(err)) from None
        return self._cache[name]

    @property
    def level(self) -> float:
        return self.cfg.metrics.ci


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


def ci_over_seeds(da: xr.DataArray, level: float, average: tuple[str, ...] = ()
                  ) -> xr.Dataset:
    """Mean and ``level`` CI over seeds of ``da`` after averaging ``average`` dims per seed."""
    if average:
        da = da.mean(list(average), skipna=True)
    return mean_ci(da, "seed", level)


def require_data(da: xr.DataArray, where: str) -> xr.DataArray:
    """Raise :class:`FigureError` naming ``where`` when ``da`` holds no finite value."""
    if not bool(np.isfinite(da.values).any()):
        raise FigureError(f"{where}: no finite values (every run missing?)")
    return da
