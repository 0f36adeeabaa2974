"""Read-time statistics shared by the metrics writer, the figures and the paper.

The metric files keep every network and mask seed; the numbers the study reports are computed
here, always the same way:

* :func:`mean_ci` - mean and Student-t interval (``scipy.stats.t``) over one dim.
* :func:`nested_ci` - the study's interval: average the mask seeds (and any other nested dims)
  within each trained network first, then the mean and t-interval *across networks*. Mask
  seeds measure the mask optimiser's noise; networks are the independent replicates.
* :func:`separated`, :func:`distinct_verdict`, :func:`trend_verdict`,
  :func:`drop_verdict` - verdicts that only say "yes" when the intervals say so.

Every function takes and returns labelled ``xarray`` objects or plain floats; NaN means "no
value" (a run that does not exist or was excluded) and is skipped, never counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr
from scipy import stats

# Chance accuracy of an 8-candidate problem, in percent (a property of the task, not a knob).
CHANCE_ACC = 100.0 / 8


def mean_ci(da: xr.DataArray, dim: str = "seed", level: float = 0.95) -> xr.Dataset:
    """Mean, Student-t confidence interval (``lower``, ``upper``) and count ``n`` of ``da``
    over ``dim`` (NaN ignored); the interval is NaN where fewer than two values exist."""
    n = da.notnull().sum(dim)
    mean = da.mean(dim, skipna=True)
    sem = da.std(dim, ddof=1, skipna=True) / np.sqrt(n.where(n > 1))
    t = xr.apply_ufunc(lambda k: stats.t.ppf((1 + level) / 2, np.maximum(k - 1, 1)), n)
    half = (t * sem).where(n > 1)
    return xr.Dataset({"mean": mean, "lower": mean - half, "upper": mean + half, "n": n},
                      attrs={"level": level, "dim": dim})


def nested_ci(da: xr.DataArray, level: float, inner: Sequence[str] = ("seed",),
              outer: str = "network") -> xr.Dataset:
    """Mean over the ``inner`` dims within each ``outer`` unit (NaN skipped), then
    :func:`mean_ci` across ``outer``: the interval across trained networks with mask seeds
    nested inside. ``n`` counts the networks that have at least one value."""
    inner = [d for d in inner if d in da.dims]
    return mean_ci(da.mean(inner, skipna=True) if inner else da, outer, level)


@dataclass(frozen=True)
class Interval:
    """One summarised number: mean, interval bounds and the count it rests on."""

    mean: float
    lower: float
    upper: float
    n: int

    @classmethod
    def of(cls, ds: xr.Dataset) -> Interval:
        """From a scalar :func:`mean_ci` / :func:`nested_ci` result."""
        return cls(float(ds["mean"]), float(ds["lower"]), float(ds["upper"]), int(ds["n"]))

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.mean, self.lower, self.upper))

    def as_dict(self, digits: int = 3) -> dict[str, float | int | None]:
        """JSON-friendly (NaN -> None), rounded to ``digits`` decimals."""
        def r(v: float) -> float | None:
            return round(v, digits) if math.isfinite(v) else None
        return {"mean": r(self.mean), "lower": r(self.lower), "upper": r(self.upper),
                "n": self.n}


def interval(da: xr.DataArray, level: float, inner: Sequence[str] = ("seed",),
             outer: str = "network") -> Interval:
    """:func:`nested_ci` of ``da`` after averaging every remaining dim except ``outer`` and
    ``inner`` within each (outer, inner) cell; returns one :class:`Interval`."""
    keep = {outer, *inner}
    rest = [d for d in da.dims if d not in keep]
    if rest:
        da = da.mean(rest, skipna=True)
    inner = [d for d in inner if d in da.dims]
    per = (da.mean(inner, skipna=True) if inner else da).transpose(outer)
    return t_interval(np.asarray(per.values, dtype=np.float64), level)


def t_interval(values: np.ndarray, level: float) -> Interval:
    """Mean and Student-t interval of the finite entries of a 1-D array (plain numpy: the
    summaries call this many times)."""
    v = values[np.isfinite(values)]
    n = int(v.size)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(v.mean())
    if n < 2:
        return Interval(m, float("nan"), float("nan"), n)
    half = float(stats.t.ppf((1 + level) / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return Interval(m, m - half, m + half, n)


def separated(low: Interval, high: Interval) -> bool:
    """True when ``low``'s interval lies entirely below ``high``'s (both finite)."""
    return low.finite and high.finite and low.upper < high.lower


def distinct_verdict(cross: Interval, same: Interval) -> str:
    """"Modules are distinct" only when the overlap between different tasks' modules is below
    the overlap between two mask seeds of the same task, with non-overlapping intervals."""
    if not (math.isfinite(cross.mean) and math.isfinite(same.mean)):
        return "not testable (missing values)"
    if not (cross.finite and same.finite):
        few = [f"the {name} overlap rests on {iv.n} network{'s' if iv.n != 1 else ''}"
               for name, iv in (("cross-task", cross), ("same-task", same)) if not iv.finite]
        return f"not testable ({'; '.join(few)}: an interval needs at least two networks)"
    if separated(cross, same):
        return "distinct (cross-task overlap below the same-task overlap)"
    if cross.mean < same.mean:
        return "not shown distinct (cross-task below same-task, intervals overlap)"
    return "not distinct (cross-task overlap as high as the same-task overlap)"


def trend_verdict(change: Interval, spread: float, sign: int) -> str:
    """Did a quantity move in direction ``sign`` (+1 up, -1 down)? ``change`` is the
    across-network interval of the per-network change (last minus first checkpoint);
    ``spread`` the largest between-network range of the quantity at either end. Reported as
    a trend only when the interval of the change excludes 0 in that direction *and* the mean
    change exceeds the spread between networks."""
    if not math.isfinite(change.mean):
        return "not testable (missing values)"
    if sign * change.mean <= 0:
        return "not reproduced"
    if not change.finite:
        return "direction only (an interval needs at least two networks)"
    beyond_zero = change.lower > 0 if sign > 0 else change.upper < 0
    if beyond_zero and abs(change.mean) > spread:
        return "reproduced"
    if beyond_zero:
        return "direction only (change within the spread between networks)"
    return "direction only (interval includes no change)"


def drop_verdict(own: Interval, other: Interval) -> str:
    """Specificity from an ablation: removing the weights costs the task's own set more than
    the other sets, with non-overlapping intervals (``own``/``other`` are drops in points)."""
    if not (math.isfinite(own.mean) and math.isfinite(other.mean)):
        return "not testable (missing or degenerate values)"
    if not (own.finite and other.finite):
        return "not testable (an interval needs at least two networks)"
    if separated(other, own):
        return "specific (own-set drop above other-set drop)"
    if own.mean > other.mean:
        return "not shown specific (own-set drop larger, intervals overlap)"
    return "not specific (own-set drop no larger than other-set drop)"


def between_spread(da: xr.DataArray, outer: str = "network") -> float:
    """Range (max - min) over ``outer`` of ``da`` averaged over every other dim; 0 with one."""
    rest = [d for d in da.dims if d != outer]
    per = da.mean(rest, skipna=True) if rest else da
    v = per.values[np.isfinite(per.values)]
    return float(v.max() - v.min()) if v.size else float("nan")
