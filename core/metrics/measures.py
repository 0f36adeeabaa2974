"""The module measures, on masks in memory (no files): sparsity, dispersity and its random-mask
reference, overlap and its chance, shared-weight removal, the alpha-selection rule, the density
plateau and the complement drops.

Definitions follow the original study (Tracking Functional Module Development) and add what it
lacked: the same-task cross-seed overlap and random-mask chance beside every sharing number, a
random-normalised dispersity and alpha chosen on the select split.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from core.tasks import family_of


def _kept(masks: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([int(np.count_nonzero(m)) for m in masks], dtype=np.int64)


def sparsity(masks: Sequence[np.ndarray]) -> float:
    """Percent of zeros over all entries of all tensors of a mask."""
    total = sum(int(np.asarray(m).size) for m in masks)
    if total == 0:
        raise ValueError("sparsity: the mask has no entries")
    return 100.0 * (total - int(_kept(masks).sum())) / total


def tensor_dispersity(mask: np.ndarray) -> float:
    """The original study's per-tensor dispersity: total variance of the (multi-dimensional)
    indices of the kept entries over the squared norm of their mean index; 0 when nothing is
    kept, for 0-d tensors, or when the mean index is the origin (a single entry at index 0)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 0:
        return 0.0
    idx = np.stack(np.nonzero(mask), axis=1).astype(np.float64)
    if idx.shape[0] == 0:
        return 0.0
    mu = idx.mean(axis=0)
    den = float(mu @ mu)
    return float(idx.var(axis=0).sum() / den) if den > 0 else 0.0


def dispersity(masks: Sequence[np.ndarray]) -> float:
    """Mean of :func:`tensor_dispersity` over all tensors of a mask (empty ones count as 0)."""
    if len(masks) == 0:
        raise ValueError("dispersity: the mask has no tensors")
    return float(np.mean([tensor_dispersity(m) for m in masks]))


def _ratio_of_expectations(shape: tuple[int, ...], k: int) -> float:
    """E[total variance] / E[squared mean norm] of the index coordinates of k entries drawn
    uniformly without replacement from a tensor of ``shape`` (an approximation of the expected
    dispersity, good for large k). Over all N positions coordinate j is uniform on 0..s_j-1:
    mean m_j = (s_j-1)/2, variance v_j = (s_j^2-1)/12; E[sample variance] =
    v_j (k-1)/k N/(N-1) and E[mean^2] = m_j^2 + v_j/k (N-k)/(N-1)."""
    n = int(np.prod(shape))
    s = np.asarray(shape, dtype=np.float64)
    m, v = (s - 1) / 2, (s**2 - 1) / 12
    num = float((v * (k - 1) / k * n / (n - 1)).sum())
    den = float((m**2 + v / k * (n - k) / (n - 1)).sum())
    return num / den if den > 0 else 0.0


@functools.lru_cache(maxsize=65536)
def tensor_dispersity_random(shape: tuple[int, ...], kept: int, samples: int = 0,
                             seed: int = 0) -> float:
    """Expected :func:`tensor_dispersity` of a uniformly random mask of ``shape`` with ``kept``
    ones: the mean over ``samples`` random masks (seeded by ``seed``, the shape and ``kept``, so
    independent of call order), or with ``samples`` = 0 the analytic ratio of expectations
    (:func:`_ratio_of_expectations`, biased upwards or downwards by a few percent for small
    ``kept``). Exact without sampling when nothing, one entry or everything is kept."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    k = int(kept)
    if not 0 <= k <= n:
        raise ValueError(f"tensor_dispersity_random: kept={k} outside 0..{n}")
    if not shape or k <= 1 or n == 1:
        return 0.0
    if k == n:
        return tensor_dispersity(np.ones(shape, dtype=bool))
    if samples == 0:
        return _ratio_of_expectations(shape, k)
    rng = np.random.default_rng([seed, k, *shape])
    ratios = []
    batch = max(1, min(samples, 4_000_000 // n))
    for start in range(0, samples, batch):
        b = min(batch, samples - start)
        flat = np.argpartition(rng.random((b, n), dtype=np.float32), k - 1, axis=1)[:, :k]
        coords = [c.astype(np.float64) for c in np.unravel_index(flat, shape)]
        var = sum(c.var(axis=1) for c in coords)
        mu2 = sum(c.mean(axis=1) ** 2 for c in coords)
        ratios.append(np.divide(var, mu2, out=np.zeros_like(var), where=mu2 > 0))
    return float(np.concatenate(ratios).mean())


def dispersity_random(shapes: Sequence[Sequence[int]], kept: Sequence[int], samples: int = 0,
                      seed: int = 0) -> float:
    """Mean of :func:`tensor_dispersity_random` over tensors (the random-mask reference)."""
    if len(shapes) == 0:
        raise ValueError("dispersity_random: no tensors")
    return float(np.mean([tensor_dispersity_random(tuple(s), int(k), samples, seed)
                          for s, k in zip(shapes, kept)]))


def overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(IoMin, IoU) in percent of two flat bool masks; NaN when a mask is empty."""
    a, b = np.asarray(a, bool).ravel(), np.asarray(b, bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"overlap: masks of different sizes {a.size} and {b.size}")
    na, nb, inter = int(a.sum()), int(b.sum()), int(np.count_nonzero(a & b))
    small, union = min(na, nb), na + nb - inter
    return (100.0 * inter / small if small else float("nan"),
            100.0 * inter / union if union else float("nan"))


def chance_overlap(kept_a: Sequence[int], kept_b: Sequence[int], sizes: Sequence[int]
                   ) -> tuple[float, float]:
    """Expected (IoMin, IoU) in percent of independent uniformly random masks that keep
    ``kept_a``/``kept_b`` entries of tensors of ``sizes`` (analytic: E|A and B| =
    sum k_a k_b / n; IoU as E|A and B| / (|A| + |B| - E|A and B|)). With a single tensor of
    densities p <= q this is IoMin = 100 q."""
    ka, kb, n = (np.asarray(x, np.float64) for x in (kept_a, kept_b, sizes))
    inter = float((ka * kb / n).sum())
    small, total = min(ka.sum(), kb.sum()), ka.sum() + kb.sum()
    return (100.0 * inter / small if small else float("nan"),
            100.0 * inter / (total - inter) if total - inter > 0 else float("nan"))


def remove_shared(masks: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Shared-weight removal: (``{task: mask AND NOT shared}``, ``shared``) where ``shared`` is
    the AND of all the masks (the weights every module keeps)."""
    if not masks:
        raise ValueError("remove_shared: no masks")
    arrays = [np.asarray(m, bool) for m in masks.values()]
    shared = np.logical_and.reduce(arrays)
    return {t: np.asarray(m, bool) & ~shared for t, m in masks.items()}, shared


def select_alpha(acc: xr.DataArray, full: xr.DataArray, tolerance: float, min_seeds: int,
                 exists: xr.DataArray | None = None) -> tuple[xr.DataArray, xr.DataArray]:
    """The alpha-selection rule on the select split: (``alpha_ok`` (checkpoint, task, alpha),
    ``selected_alpha`` (checkpoint)); inputs have dims :data:`core.metrics.inputs.RUN`.
    ``exists`` marks the runs that exist (default: where ``acc`` is not NaN); an existing run
    whose accuracy is NaN (its masked model is degenerate) fails the tolerance.

    An alpha is ok for a task when every network has at least ``min_seeds`` seeds and the mean
    (over networks and seeds) masked accuracy is at most ``tolerance`` points below the
    unmasked one. Candidates of a checkpoint are the alphas with enough seeds for every task;
    the selected alpha is the largest candidate that is ok for every task (the sparsest
    faithful modules; tasks with no mask at a checkpoint, e.g. ``masks.families_last``, do not
    count there), else the candidate with the best worst-task margin, else (every
    candidate degenerate) the smallest candidate; NaN without candidates.
    """
    exists = acc.notnull() if exists is None else exists
    n = exists.sum("seed").min("network")
    scored = acc.where(~(exists & acc.isnull()), -np.inf)
    margin = (scored.mean(["network", "seed"], skipna=True)
              - full.mean(["network", "seed"], skipna=True) + tolerance)
    enough = n >= min_seeds
    ok = xr.where(exists.any(["network", "seed"]),
                  (enough & (margin >= 0)).astype(np.float64), np.nan)
    present = exists.any(["network", "seed", "alpha"])  # tasks masked at this checkpoint
    candidate = ((enough | ~present).all("task")  # (masks.families_last: absent elsewhere)
                 & present.any("task"))
    worst = margin.where(present, np.inf).min("task", skipna=False)
    selected = []
    for c in acc["checkpoint"].values:
        alphas = acc["alpha"].values[candidate.sel(checkpoint=c).values]
        here = present.sel(checkpoint=c)
        good = alphas[((ok.sel(checkpoint=c, alpha=alphas) == 1) | ~here).all("task").values]
        w = worst.sel(checkpoint=c, alpha=alphas).values
        if good.size:
            selected.append(float(good.max()))
        elif np.isfinite(w).any():
            selected.append(float(alphas[int(np.nanargmax(np.where(np.isnan(w), -np.inf, w)))]))
        else:
            selected.append(float(alphas.min()) if alphas.size else float("nan"))
    sel = xr.DataArray(selected, dims=["checkpoint"],
                       coords={"checkpoint": acc["checkpoint"].values})
    return ok.transpose("checkpoint", "task", "alpha"), sel


def density_change_constant(step: Sequence[float], density: Sequence[float], anneal: float,
                            window: float = 0.2) -> float:
    """How fast the read-out density was still moving when the learning rate began to anneal
    (``masks.lr_anneal``): the change between the last two logged steps at or before the
    anneal's start, scaled to ``window`` of the run (points per 20% of the steps, comparable
    with ``density_change``); with a constant rate (anneal 0), over the run's last two logged
    steps. NaN when fewer than two steps are logged before the anneal.

    The convergence flag looks at the end of the run, where the annealed rate has frozen the
    read-out; this shows whether the masks had reached a plateau before it (the composite
    positive control, ``core.control``, found the default masks far from it)."""
    x, y = np.asarray(step, float), np.asarray(density, float)
    start = (1.0 - anneal) * x[-1] if anneal > 0 else x[-1]
    idx = np.flatnonzero(x <= start + 1e-9)
    if len(idx) < 2:
        return float("nan")
    i, j = idx[-2], idx[-1]
    return float(abs(y[j] - y[i]) * window * x[-1] / (x[j] - x[i]))


def _diag(da: xr.DataArray) -> xr.DataArray:
    """``da`` on the own task set: eval_set == task (NaN where the task is not evaluated)."""
    sets = [str(s) for s in da["eval_set"].values]
    parts = [da.sel(task=t, eval_set=t, drop=True) if t in sets
             else xr.full_like(da.sel(task=t).isel(eval_set=0, drop=True), np.nan)
             for t in da["task"].values]
    return xr.concat(parts, dim=pd.Index(da["task"].values, name="task"))


def complement_drops(ab: xr.DataArray, tasks: Sequence[str]) -> xr.Dataset:
    """The complement protocol (Csordas et al.) from masked report-split accuracies ``ab``
    (dims network, checkpoint, task, alpha, seed, eval_set): for each family task ``t`` with
    its complement mask ``c`` and the family's reference mask ``R`` present, the relative drop
    1 - acc(c on s) / acc(R on s) on ``t`` itself (``complement_drop_own``) and its mean over
    the family's other tasks (``complement_drop_other``)."""
    own, other = [], []
    have_sets = {str(t) for t in ab["task"].values}
    for t in tasks:
        fam = family_of(t)
        c, ref = fam.complements.get(t), fam.reference
        if t not in fam.tasks or c not in have_sets or ref not in have_sets:
            own.append(xr.full_like(ab.isel(task=0, eval_set=0, drop=True), np.nan))
            other.append(own[-1])
            continue
        drop = 1 - ab.sel(task=c, drop=True) / ab.sel(task=ref, drop=True)
        others = [u for u in fam.tasks if u != t and u in ab["eval_set"].values]
        own.append(drop.sel(eval_set=t, drop=True) if t in ab["eval_set"].values
                   else xr.full_like(drop.isel(eval_set=0, drop=True), np.nan))
        other.append(drop.sel(eval_set=others).mean("eval_set") if others
                     else xr.full_like(own[-1], np.nan))
    idx = pd.Index(list(tasks), name="task")
    return xr.Dataset({"complement_drop_own": xr.concat(own, idx),
                       "complement_drop_other": xr.concat(other, idx)})
