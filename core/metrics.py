"""Module metrics: mask files and their evaluations -> labelled netCDF datasets + summary.json.

    python -m core.metrics --params P --masks data/masks --train data/train --out data/metrics

Inputs (layout in docs/architecture.md): for every network ``k`` of
``train.networks`` and checkpoint of ``train.milestones``, the mask files
``<masks>/net<k>/<ckpt>/<set>-a<alpha>-s<seed>.pt`` (read with :mod:`core.formats.masks`), that
folder's ``evals.nc`` (masked / inverted / selective ablations on every evaluated set, select
and report splits) and the network's training log ``<train>/net<k>/training.nc`` (checked
against the checkpoint files beside it).

Every mask run becomes a record keyed by (network, checkpoint, task, alpha, seed); records
become ``xarray`` datasets (a run that does not exist is NaN), written as ``modules``,
``layers``, ``sharing``, ``ablation`` and ``curves``.nc (schema: :mod:`core.formats.metrics`) and
summarised in ``summary.json`` (:func:`summarize`: per checkpoint and task family, intervals
across networks with mask seeds nested inside, converged runs only, and the verdicts).

Definitions follow the original study (Tracking Functional Module Development) and add what it
lacked: the same-task cross-seed overlap and random-mask chance beside every sharing number,
a random-normalised dispersity, convergence and degeneracy filters, alpha chosen on the select
split and every accuracy reported on the report split.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from core import __version__, stats
from core.config import SUBNETS, Config, ConfigError, load
from core.formats import evals as evals_file
from core.formats import training as training_log
from core.formats.evals import EVALS, SPLITS, VARIANTS, EvalsError
from core.formats.masks import MaskError, degenerate_reason, load_mask, mask_name, parse_mask_name
from core.formats.metrics import FILES, SchemaError, finalize, metrics_hash
from core.io import atomic_path, atomic_write_text
from core.tasks import FAMILIES, family_of

RUN = ("network", "checkpoint", "task", "alpha", "seed")
MODULE_COLUMNS = ("sparsity", "n_kept", "dispersity", "dispersity_random", "dispersity_norm",
                  "n_kept_specific", "sparsity_specific", "dispersity_specific_norm",
                  "converged", "density_change", "acc_change", "density_change_constant")
PAIR_COLUMNS = ("iomin", "iou", "iomin_chance", "iou_chance", "iomin_specific")


class MetricsError(ValueError):
    """Bad input to the metrics: the message names the file and what was expected."""


# =========================================================================== metric functions


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
    ``selected_alpha`` (checkpoint)); inputs have dims :data:`RUN`. ``exists`` marks the runs
    that exist (default: where ``acc`` is not NaN); an existing run whose accuracy is NaN
    (its masked model is degenerate) fails the tolerance.

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


# =========================================================================== inputs


@dataclass
class Run:
    """One mask file, validated; ``flat`` is the read-out mask of all tensors concatenated."""

    path: Path
    network: int
    checkpoint: str
    task: str
    alpha: float
    seed: int
    names: list[str]
    shapes: list[tuple[int, ...]]
    flat: np.ndarray
    converged: bool
    convergence: dict[str, float]
    curve: dict[str, np.ndarray]
    snapshots: dict[str, Any]
    degenerate: str = ""  # why the run never trained (core.formats.masks.degenerate_reason), or ""

    @property
    def label(self) -> dict[str, Any]:
        return {"network": self.network, "checkpoint": self.checkpoint, "task": self.task,
                "alpha": self.alpha, "seed": self.seed}

    @property
    def sizes(self) -> np.ndarray:
        return np.array([int(np.prod(s)) for s in self.shapes], dtype=np.int64)

    def split(self, flat: np.ndarray | None = None) -> list[np.ndarray]:
        """The per-tensor masks (of ``flat``, default the run's own) in model order."""
        flat = self.flat if flat is None else flat
        parts = np.split(flat, np.cumsum(self.sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, self.shapes)]

    def counts(self, flat: np.ndarray | None = None) -> np.ndarray:
        """Kept entries per tensor."""
        flat = self.flat if flat is None else flat
        return np.add.reduceat(flat.astype(np.int64), np.r_[0, np.cumsum(self.sizes)[:-1]])


def _fail(path: Path, msg: str) -> MetricsError:
    return MetricsError(f"{path}: {msg}")


def read_run(path: Path, network: int, checkpoint: str) -> Run:
    """Load one mask file (:func:`core.formats.masks.load_mask`) and check it against its place:
    folder ``net<network>/<checkpoint>``, name ``<task>-a<alpha>-s<seed>.pt``."""
    try:
        rec = load_mask(path)
    except MaskError as err:
        raise MetricsError(str(err)) from None
    task, seed = str(rec["task"]), int(rec["seed"])
    stem = mask_name(task, float(rec["alpha"]), seed)
    if path.stem != stem:
        raise _fail(path, f"holds run {stem!r} (task, alpha, seed), not what its name says")
    alpha = parse_mask_name(stem)[1]  # the label's value: the alpha coordinate everywhere
    if rec["checkpoint"] != checkpoint or int(rec.get("network", network)) != network:
        raise _fail(path, f"made for net{rec.get('network', '?')}/{rec['checkpoint']}, found "
                          f"under net{network}/{checkpoint}")
    try:
        fam = family_of(task).name
    except ValueError as err:
        raise _fail(path, str(err)) from None
    if rec.get("family", fam) != fam:
        raise _fail(path, f"family {rec['family']!r}, but task {task!r} belongs to {fam!r}")
    for key in ("converged", "convergence"):
        if key not in rec:
            raise _fail(path, f"key {key!r} missing (mask files record their convergence)")
    names, shapes = list(rec["names"]), [tuple(int(x) for x in s) for s in rec["shapes"]]
    bad = [n for n in names if n.split(".", 1)[0] not in SUBNETS]
    if bad:
        raise _fail(path, f"parameter {bad[0]!r} does not start with a sub-network "
                          f"({', '.join(SUBNETS)})")
    snaps = rec["snapshots"]
    flat = np.concatenate([rec["mask"][n].numpy().ravel() for n in names])
    # degenerate (never trained): from the file's own logits and read-out, so files written
    # before the flag existed are judged alike; such a run counts as not converged
    logits = [rec["logits"][n] for n in names]
    spread = max(float(t.max()) for t in logits) - min(float(t.min()) for t in logits)
    degenerate = degenerate_reason({**rec["convergence"], "spread": spread,
                                    "density_end": 100.0 * float(flat.mean())})
    return Run(path=path, network=network, checkpoint=checkpoint, task=task, alpha=alpha,
               seed=seed, names=names, shapes=shapes, flat=flat, degenerate=degenerate,
               converged=bool(rec["converged"]) and not degenerate,
               convergence={k: float(rec["convergence"].get(k, np.nan))
                            for k in ("density_change", "acc_change")},
               curve={k: np.asarray(rec["curve"][k], dtype=np.float64)
                      for k in ("step", "loss", "task_acc", "density")},
               snapshots={"param": snaps.get("param", ""),
                          "steps": np.asarray(snaps.get("steps", []), dtype=np.int64),
                          "logits": np.asarray(snaps["logits"], np.float64)
                          if "logits" in snaps else np.zeros(0)})


def folders(masks: str | Path, cfg: Config) -> dict[tuple[int, str], Path]:
    """``{(network, checkpoint): folder}`` for every network and checkpoint of ``cfg``; each
    must exist and hold an ``evals.nc`` and at least one mask file."""
    masks = Path(masks)
    if not masks.is_dir():
        raise MetricsError(f"{masks}: mask folder not found")
    out = {}
    for net in sorted(cfg.train.networks):
        for ck in cfg.checkpoints:
            d = masks / f"net{net}" / ck
            if not d.is_dir() or not any(d.glob("*.pt")):
                raise MetricsError(f"{d}: no mask files (network {net}, checkpoint {ck} of "
                                   f"profile {cfg.profile}); run the masks stage first")
            if not (d / EVALS).exists():
                raise MetricsError(f"{d / EVALS}: file not found (evaluations of the "
                                   "masks of this checkpoint)")
            out[net, ck] = d
    return out


# =========================================================================== records -> data


def to_dataset(rows: Iterable[Mapping[str, Any]], index: Sequence[str],
               coords: Mapping[str, Sequence], columns: Sequence[str] = ()) -> xr.Dataset:
    """Records (dicts) keyed by ``index`` -> a Dataset on exactly ``coords`` (missing -> NaN;
    a ``columns`` entry no record has -> all NaN). Two records with one key are an error."""
    df = pd.DataFrame(list(rows), columns=list(dict.fromkeys(
        [*index, *columns, *(k for r in rows for k in r)])) if rows else [*index, *columns])
    dup = df.duplicated(list(index))
    if dup.any():
        raise MetricsError(f"two records for {dict(df.loc[dup, list(index)].iloc[0])}")
    ds = df.astype({c: np.float64 for c in columns}).set_index(list(index)).to_xarray()
    return ds.reindex({k: list(coords[k]) for k in index})


def _module_scalars(run: Run, flat: np.ndarray, suffix: str, ref: tuple[int, int]
                    ) -> dict[str, float]:
    parts = run.split(flat)
    k = _kept(parts)
    disp, rnd = dispersity(parts), dispersity_random(run.shapes, k, *ref)
    row = {f"n_kept{suffix}": float(k.sum()), f"sparsity{suffix}": sparsity(parts),
           f"dispersity{suffix}_norm": disp / rnd if rnd > 0 else np.nan}
    if not suffix:
        row.update(dispersity=disp, dispersity_random=rnd)
    return row


def _specific(runs: Sequence[Run]) -> dict[tuple, np.ndarray]:
    """Task-specific masks: within (family, alpha, seed) groups holding every task of the
    family that has masks here (at least two), each mask AND NOT the AND of the group
    (shared-weight removal)."""
    groups: dict[tuple, dict[str, Run]] = {}
    present: dict[str, set[str]] = {}
    for r in runs:
        fam = family_of(r.task)
        if r.task in fam.tasks:
            groups.setdefault((fam.name, r.alpha, r.seed), {})[r.task] = r
            present.setdefault(fam.name, set()).add(r.task)
    out = {}
    for (fam, alpha, seed), group in groups.items():
        if len(group) == len(present[fam]) >= 2:
            spec, _ = remove_shared({t: r.flat for t, r in group.items()})
            out.update({(t, alpha, seed): m for t, m in spec.items()})
    return out


def _pairs(runs: Sequence[Run], alpha: float, specific: Mapping[tuple, np.ndarray]
           ) -> list[dict]:
    """Sharing rows: every pair of masks of one family's tasks at ``alpha`` (a mask with itself
    left out), with random-mask chance per pair."""
    at = [r for r in runs if r.alpha == alpha and r.task in family_of(r.task).tasks]
    rows = []
    for a in at:
        fam, ka = family_of(a.task).name, a.counts()
        for b in at:
            if family_of(b.task).name != fam or (a.task, a.seed) == (b.task, b.seed):
                continue
            io, iu = overlap(a.flat, b.flat)
            cio, ciu = chance_overlap(ka, b.counts(), a.sizes)
            sa, sb = specific.get((a.task, alpha, a.seed)), specific.get((b.task, alpha, b.seed))
            spec = overlap(sa, sb)[0] if sa is not None and sb is not None else np.nan
            rows.append({"network": a.network, "checkpoint": a.checkpoint, "task": a.task,
                         "other_task": b.task, "seed": a.seed, "other_seed": b.seed,
                         "iomin": io, "iou": iu, "iomin_chance": cio, "iou_chance": ciu,
                         "iomin_specific": spec})
    return rows


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


def _run_rows(runs: Sequence[Run], specific: Mapping[tuple, np.ndarray], ref: tuple[int, int],
              anneal: float = 0.0, window: float = 0.2
              ) -> tuple[list[dict], list[dict], list[dict]]:
    """(module rows, layer rows, curve rows) of one checkpoint's runs."""
    mods, layers, curves = [], [], []
    for r in runs:
        row = {**r.label, **_module_scalars(r, r.flat, "", ref),
               "converged": float(r.converged), **r.convergence,
               "density_change_constant": density_change_constant(
                   r.curve["step"], r.curve["density"], anneal, window)}
        spec = specific.get((r.task, r.alpha, r.seed))
        counts = r.counts()
        share_s = np.full(len(r.names), np.nan)
        if spec is not None:
            row.update(_module_scalars(r, spec, "_specific", ref))
            cs = r.counts(spec)
            share_s = 100 * cs / cs.sum() if cs.sum() else share_s
        mods.append(row)
        share = 100 * counts / counts.sum() if counts.sum() else np.full(len(r.names), np.nan)
        layers += [{**r.label, "param": n, "kept": float(c), "share": s, "share_specific": ss}
                   for n, c, s, ss in zip(r.names, counts, share, share_s)]
        curves += [{**r.label, "mask_step": int(s), "loss": lo, "acc_task": a, "density": d}
                   for s, lo, a, d in zip(r.curve["step"], r.curve["loss"], r.curve["task_acc"],
                                          r.curve["density"])]
    return mods, layers, curves


def _snapshot(runs: Sequence[Run]) -> dict[str, dict]:
    """Keep-probability snapshots per task (lowest seed) as (steps, rows x cols arrays)."""
    out: dict[str, dict] = {}
    for r in sorted(runs, key=lambda r: r.seed):
        lg = r.snapshots["logits"]
        if r.task in out or lg.size == 0:
            continue
        rows = lg.shape[1] if lg.ndim > 1 else 1
        out[r.task] = {"param": r.snapshots["param"], "steps": r.snapshots["steps"],
                       "keep": 1 / (1 + np.exp(-lg.reshape(lg.shape[0], rows, -1)))}
    return out


# =========================================================================== compute


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


def read_ablation(places: Mapping[tuple[int, str], Path], cfg: Config
                  ) -> tuple[xr.Dataset, dict[tuple[int, str], list[str]]]:
    """Every checkpoint folder's ``evals.nc`` stacked on (network, checkpoint) with the
    complement drops added, and the mask-file stems per folder."""
    evals, stems = {}, {}
    for (net, ck), d in places.items():
        stems[net, ck] = sorted(p.stem for p in d.glob("*.pt"))
        try:
            evals[net, ck] = evals_file.read(d / EVALS, stems[net, ck])
        except EvalsError as err:
            raise MetricsError(str(err)) from None
    present = {s.rsplit("-a", 1)[0] for v in stems.values() for s in v}
    tasks = [s for f in FAMILIES.values() for s in f.sets if s in present]
    unknown = sorted(present - set(tasks))
    if unknown:
        raise MetricsError(f"{next(iter(places.values())).parent.parent}: mask set "
                           f"{unknown[0]!r} belongs to no family of core.tasks")
    coords = {"task": tasks,
              "alpha": sorted({float(a) for e in evals.values() for a in e["alpha"].values}),
              "seed": sorted({int(s) for e in evals.values() for s in e["seed"].values}),
              "variant": list(VARIANTS),
              "eval_set": list(dict.fromkeys(str(s) for e in evals.values()
                                             for s in e["eval_set"].values)),
              "split": list(SPLITS)}
    ablation = _combine(evals, sorted(cfg.train.networks), list(cfg.checkpoints), coords)
    masked = ablation["accuracy"].sel(variant="mask", split="report", drop=True)
    return ablation.assign(complement_drops(masked, tasks)), stems


def compute(masks: str | Path, train: str | Path, cfg: Config, progress: bool = False
            ) -> dict[str, Any]:
    """Every dataset (not yet finalised) and the snapshot parameter, from the inputs."""
    places = folders(masks, cfg)
    nets, cks = sorted(cfg.train.networks), list(cfg.checkpoints)
    ablation, stems = read_ablation(places, cfg)
    tasks, alphas, seeds = (list(ablation[k].values) for k in ("task", "alpha", "seed"))
    masked = ablation["accuracy"].sel(variant="mask")
    full = ablation["full_accuracy"].broadcast_like(masked)
    acc = {f"acc{p}_{s}": _diag(x.sel(split=s, drop=True))
           for p, x in (("", masked), ("_full", full)) for s in SPLITS}
    exists = _diag(ablation["degenerate"].sel(variant="mask", split="select", drop=True)
                   ).notnull()
    # alpha is chosen on the families' task masks; complement and reference masks (the
    # complement protocol, seeds[0] only) follow the choice and do not vote
    voters = [t for t in tasks if any(t in f.tasks for f in FAMILIES.values())]
    ok, selected = select_alpha(acc["acc_select"].sel(task=voters),
                                acc["acc_full_select"].sel(task=voters),
                                cfg.metrics.alpha_tolerance, cfg.metrics.alpha_min_seeds,
                                exists.sel(task=voters))
    ok = ok.reindex(task=tasks)

    ref = (cfg.metrics.dispersity_samples, cfg.seed)
    mods, layers, curves, pairs, snaps = [], [], [], [], {}
    shape_info: tuple | None = None
    for (net, ck), d in tqdm(places.items(), desc="metrics", disable=not progress, leave=False):
        runs = [read_run(d / f"{s}.pt", net, ck) for s in stems[net, ck]]
        info = (tuple(runs[0].names), tuple(runs[0].shapes))
        if shape_info is None:
            shape_info = info
        bad = next((r for r in runs if (tuple(r.names), tuple(r.shapes)) != shape_info), None)
        if bad is not None:
            raise _fail(bad.path, "masked parameters differ from the other mask files' "
                                  "(masks of different models mixed)")
        specific = _specific(runs)
        m, ly, cv = _run_rows(runs, specific, ref, cfg.masks.lr_anneal, cfg.masks.converge_window)
        mods, layers, curves = mods + m, layers + ly, curves + cv
        a = float(selected.sel(checkpoint=ck))
        if np.isfinite(a):
            pairs += _pairs(runs, a, specific)
            if net == nets[0]:
                snaps[ck] = _snapshot([r for r in runs if r.alpha == a])
    names, shapes = shape_info
    base = {"network": nets, "checkpoint": cks, "task": tasks, "alpha": alphas, "seed": seeds}
    ckc = _ckpt_coords(train, cfg, nets, cks)
    fam = ("task", [family_of(t).name for t in tasks])
    sizes = [int(np.prod(s)) for s in shapes]
    modules = to_dataset(mods, RUN, base, MODULE_COLUMNS).assign(
        n_masked=float(sum(sizes)), **acc, alpha_ok=ok, selected_alpha=selected)
    modules = modules.assign(density=100 - modules["sparsity"])
    layers_ds = to_dataset(layers, RUN + ("param",), {**base, "param": list(names)},
                           ("kept", "share", "share_specific")).assign_coords(
        subnet=("param", [n.split(".", 1)[0] for n in names]), param_size=("param", sizes),
        param_shape=("param", ["x".join(map(str, s)) or "scalar" for s in shapes]))
    sharing = to_dataset(pairs, ("network", "checkpoint", "task", "other_task", "seed",
                                 "other_seed"),
                         {**base, "other_task": tasks, "other_seed": seeds}, PAIR_COLUMNS
                         ).assign_coords(alpha=("checkpoint", selected.values))
    curves_ds, snap_param = _curves(curves, snaps, train, base, cks, tasks, selected)
    out = {"modules": modules, "layers": layers_ds, "sharing": sharing, "ablation": ablation,
           "curves": curves_ds}
    for k, ds in out.items():
        ds = ds.assign_coords({**ckc, "family": fam, "milestone": (
            "checkpoint", [float(m) for m in cfg.train.milestones])})
        out[k] = ds
    out["_snapshot_param"] = snap_param
    return out


def _combine(evals: Mapping[tuple[int, str], xr.Dataset], nets: list[int], cks: list[str],
             coords: Mapping[str, list]) -> xr.Dataset:
    """Stack the per-checkpoint evaluations on (network, checkpoint), reindexed to ``coords``."""
    per_net = []
    for net in nets:
        per_ck = [evals[net, ck].reindex({k: coords[k] for k in evals[net, ck].dims})
                  .reindex(coords) for ck in cks]
        per_net.append(xr.concat(per_ck, pd.Index(cks, name="checkpoint")))
    ds = xr.concat(per_net, pd.Index(nets, name="network"))
    full = ds["full_accuracy"]
    return ds.assign(full_accuracy=full.transpose("network", "checkpoint", "eval_set", "split"))


def _ckpt_coords(train: str | Path, cfg: Config, nets: list[int], cks: list[str]
                 ) -> dict[str, Any]:
    """Per (network, checkpoint): achieved validation / test accuracy and step of the kept
    checkpoint; per network the seed of its initialisation and its restarts (logs written
    before restarts existed: the network's seed, 0); from each network's training log."""
    vals = {"ckpt_val_acc": [], "ckpt_test_acc": [], "ckpt_step": []}
    init, restarts = [], []
    for net in nets:
        try:
            log = training_log.read(Path(train) / f"net{net}", cfg)
        except training_log.TrainingLogError as err:
            raise MetricsError(str(err)) from None
        init.append(int(log.attrs.get("init_seed", net)))
        restarts.append(int(log.attrs.get("restarts", 0)))
        log = log.swap_dims(milestone="checkpoint_name")
        for key, var in (("ckpt_val_acc", "milestone_val_acc"),
                         ("ckpt_test_acc", "milestone_test_acc"), ("ckpt_step", "milestone_step")):
            if var in log.variables:
                v = log[var].sel(checkpoint_name=cks).values.astype(np.float64)
            else:
                v = np.full(len(cks), np.nan)
            vals[key].append(np.where(v < 0, np.nan, v) if key == "ckpt_step" else v)
    return {**{k: (("network", "checkpoint"), np.array(v)) for k, v in vals.items()},
            "init_seed": ("network", np.array(init, dtype=np.int64)),
            "restarts": ("network", np.array(restarts, dtype=np.int64))}


def _curves(rows: list[dict], snaps: Mapping[str, Mapping[str, dict]], train: str | Path,
            base: Mapping[str, list], cks: list[str], tasks: list[str],
            selected: xr.DataArray) -> tuple[xr.Dataset, str]:
    """Mask-training curves (union of logged steps), SCL curves per network and the
    keep-probability snapshots of the first network at the selected alpha."""
    steps = sorted({int(r["mask_step"]) for r in rows})
    mask = to_dataset(rows, RUN + ("mask_step",), {**base, "mask_step": steps},
                      ("loss", "acc_task", "density"))
    scl, val = [], []
    for net in base["network"]:
        log = xr.open_dataset(Path(train) / f"net{net}" / "training.nc", engine="netcdf4")
        with log:
            step = log["step"].values if "step" in log.coords else np.arange(log.sizes["step"])
            scl += [{"network": net, "train_step": int(s), "train_loss": float(lo),
                     "train_acc": float(a)}
                    for s, lo, a in zip(step, log["loss"].values, log["acc"].values)]
            val += [{"network": net, "val_step": int(s), "val_acc": float(a)}
                    for s, a in zip(log["val_step"].values, log["val_acc"].values)]
    nets = base["network"]
    scl_ds = to_dataset(scl, ("network", "train_step"),
                        {"network": nets, "train_step": sorted({r["train_step"] for r in scl})})
    val_ds = to_dataset(val, ("network", "val_step"),
                        {"network": nets, "val_step": sorted({r["val_step"] for r in val})})
    params = {v["param"] for s in snaps.values() for v in s.values()}
    if len(params) > 1:
        raise MetricsError(f"mask snapshots of different parameters {sorted(params)}: the "
                           "mask-evolution figure needs one parameter for every run")
    views = [v for s in snaps.values() for v in s.values()]
    snap_steps = sorted({int(x) for v in views for x in v["steps"]})
    R = max((v["keep"].shape[1] for v in views), default=0)
    K = max((v["keep"].shape[2] for v in views), default=0)
    keep = np.full((len(cks), len(tasks), len(snap_steps), R, K), np.nan)
    for c, ck in enumerate(cks):
        for t, task in enumerate(tasks):
            v = snaps.get(ck, {}).get(task)
            if v is not None:
                pos = np.searchsorted(snap_steps, v["steps"])
                keep[c, t, pos, : v["keep"].shape[1], : v["keep"].shape[2]] = v["keep"]
    ds = xr.merge([mask, scl_ds, val_ds]).assign(
        keep_prob=(("checkpoint", "task", "snap_step", "snap_row", "snap_col"), keep)
    ).assign_coords(snap_step=snap_steps, snap_row=np.arange(R), snap_col=np.arange(K),
                    snap_alpha=("checkpoint", selected.values))
    return ds, params.pop() if params else ""


# =========================================================================== summary


def _pair_mask(conv: xr.DataArray) -> xr.DataArray:
    """Both masks of a pair converged: ``conv`` (task, seed) against itself renamed."""
    other = conv.rename(task="other_task", seed="other_seed")
    return (conv == 1) & (other == 1)


def _ablation_drops(ab: xr.Dataset, tasks: list[str], variant: str, dmax: float,
                    conv: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray, int]:
    """(own-set drop, mean other-set drop, degenerate count) in points for one variant: the
    unmasked accuracy minus the ablated one, degenerate evaluations and unconverged runs
    excluded. Dims of the drops: network, task, seed."""
    acc = ab["accuracy"].sel(variant=variant, task=tasks)
    deg = ab["degenerate"].sel(variant=variant, task=tasks) > dmax
    # evaluations over degenerate_max (their accuracy is NaN in evals.nc: counted all the same)
    n_deg = int(deg.sel(eval_set=[t for t in tasks if t in ab["eval_set"].values]).sum())
    drop = (ab["full_accuracy"] - acc).where(~deg & (conv.sel(task=tasks) == 1))
    sets = [t for t in tasks if t in ab["eval_set"].values]
    own = _diag(drop.reindex(eval_set=sets))
    other = xr.concat([drop.sel(task=t).sel(eval_set=[u for u in sets if u != t])
                       .mean("eval_set") for t in tasks], pd.Index(tasks, name="task"))
    return own, other, n_deg


def _family_summary(ds: Mapping[str, xr.Dataset], fam: str, ck: str, alpha: float,
                    cfg: Config) -> dict[str, Any]:
    md, sh, ab = ds["modules"], ds["sharing"], ds["ablation"]
    level, dmax = cfg.metrics.ci, cfg.masks.degenerate_max
    tasks = [t for t in FAMILIES[fam].tasks if t in md["task"].values]
    m = md.sel(checkpoint=ck, alpha=alpha, task=tasks)
    conv = m["converged"]
    ok = conv == 1
    # runs that never trained (core.formats.masks.degenerate_reason): their read-out keeps no weight
    # or every weight; flagged not converged, so excluded like the unconverged, and counted
    degenerate = conv.notnull() & ((m["density"] <= 0) | (m["density"] >= 100))

    def iv(da: xr.DataArray, inner: Sequence[str] = ("seed",)) -> dict:
        return stats.interval(da, level, inner).as_dict()

    out: dict[str, Any] = {
        "tasks": tasks, "runs": int(conv.notnull().sum()), "converged": int(ok.sum()),
        "excluded_unconverged": int((conv == 0).sum()),  # degenerate runs included
        "excluded_degenerate": int(degenerate.sum()),
        # runs whose density had levelled off before the lr anneal (<= masks.converge_density)
        "plateaued": int((m["density_change_constant"].where(conv.notnull())
                          <= cfg.masks.converge_density).sum()),
        **{v: iv(m[v].where(ok)) for v in ("sparsity", "dispersity", "dispersity_norm",
                                             "acc_report", "acc_full_report")}}
    s = sh.sel(checkpoint=ck, task=tasks, other_task=tasks)
    both = _pair_mask(conv)
    diff = s["task"] != s["other_task"]
    same = ~diff & (s["seed"] != s["other_seed"])
    pair = ("seed", "other_seed")
    masked_here = [t for t in tasks if bool(conv.sel(task=t).notnull().any())]
    for var in ("iomin", "iou"):
        cross = stats.interval(s[var].where(diff & both), level, pair)
        null = stats.interval(s[var].where(same & both), level, pair)
        out[var] = {"cross_task": cross.as_dict(), "same_task": null.as_dict(),
                    "chance": iv(s[f"{var}_chance"].where(diff & both), pair),
                    "verdict": stats.distinct_verdict(cross, null) if len(masked_here) > 1
                    else "not testable (one task masked at this checkpoint: masks.tasks_early)"}
    a = ab.sel(checkpoint=ck, alpha=alpha, split="report")
    for variant in ("inverted", "selective"):
        own, other, n_deg = _ablation_drops(a, tasks, variant, dmax, conv)
        io, ioth = stats.interval(own, level), stats.interval(other, level)
        out[f"{variant}_drop"] = {"own": io.as_dict(), "other": ioth.as_dict(),
                                  "degenerate_excluded": n_deg,
                                  "verdict": stats.drop_verdict(io, ioth)}
    c_own = a["complement_drop_own"].sel(task=tasks).where(ok)
    c_oth = a["complement_drop_other"].sel(task=tasks).where(ok)
    co, cot = stats.interval(c_own, level), stats.interval(c_oth, level)
    out["complement_drop"] = {"own": co.as_dict(), "other": cot.as_dict(),
                              "verdict": stats.drop_verdict(co, cot),
                              "per_task": {t: {"own": iv(c_own.sel(task=t)),
                                               "other": iv(c_oth.sel(task=t))} for t in tasks}}
    return out


def _trend(md: xr.Dataset, var: str, tasks: list[str], level: float, sign: int) -> dict:
    """First vs last checkpoint of ``var`` (converged runs, each checkpoint's selected
    alpha) over the tasks masked at both: the interval of the per-network change and the
    between-network spread. Only the checkpoints with masks of ``tasks`` count
    (``masks.families_last``: the last only)."""
    cks = [ck for ck in md["checkpoint"].values
           if bool(md["converged"].sel(checkpoint=ck, task=tasks).notnull().any())]
    if len(cks) < 2:
        return {"verdict": "not testable (masks at fewer than two checkpoints)"}
    # the tasks masked at both ends (masks.tasks_early: fewer before the last checkpoint), so
    # that the change compares the same tasks
    tasks = [t for t in tasks if all(bool(md["converged"].sel(checkpoint=ck, task=t)
                                          .notnull().any()) for ck in (cks[0], cks[-1]))]
    if not tasks:
        return {"verdict": "not testable (no task masked at both the first and last checkpoint)"}
    ends = []
    for ck in (cks[0], cks[-1]):
        a = float(md["selected_alpha"].sel(checkpoint=ck))
        if not np.isfinite(a):
            return {"verdict": "not testable (no alpha selected)"}
        m = md.sel(checkpoint=ck, alpha=a, task=tasks)
        ends.append(m[var].where(m["converged"] == 1).mean(["task", "seed"], skipna=True))
    if not all(bool(np.isfinite(e).any()) for e in ends):  # e.g. every run never trained
        return {"verdict": "not testable (no converged masks at the first or last checkpoint)"}
    change = stats.interval(ends[1] - ends[0], level, ())
    spread = max(stats.between_spread(e) for e in ends)
    return {"change": change.as_dict(), "network_spread": round(spread, 3),
            "verdict": stats.trend_verdict(change, spread, sign)}


def _failing(ok: xr.DataArray, ck: str, alpha: float) -> list[str]:
    """Tasks whose ``alpha_ok`` is 0 at ``alpha`` (NaN: not masked there, not counted)."""
    if not np.isfinite(alpha):
        return []
    v = ok.sel(checkpoint=ck, alpha=alpha)
    return [str(t) for t, x in zip(v["task"].values, v.values) if x == 0]


def _min_int(da: xr.DataArray) -> int | None:
    """The fewest problems behind an evaluation; 0 marks a pair that was not evaluated
    (``core.sweep.eval_plan``), so zeros do not count."""
    v = da.values[np.isfinite(da.values) & (da.values > 0)]
    return int(v.min()) if v.size else None


def summarize(ds: Mapping[str, xr.Dataset], cfg: Config) -> dict[str, Any]:
    """``summary.json``: per checkpoint the achieved val/test accuracy (across networks), the
    selected alpha, the fewest report-split problems behind an accuracy, and per task family the module scalars, sharing beside its nulls, ablation
    and complement drops with verdicts and the convergence counts; per family the trends from
    the first to the last checkpoint. Intervals: mean over mask seeds within each network,
    then the ``metrics.ci`` t-interval across networks; converged runs only."""
    md, level = ds["modules"], cfg.metrics.ci
    fams = [f for f in FAMILIES if any(t in md["task"].values for t in FAMILIES[f].tasks)]
    out: dict[str, Any] = {"config_hash": metrics_hash(cfg), "profile": cfg.profile,
                           "networks": [int(n) for n in md["network"].values],
                           # networks re-initialised at chance (train.restart_after): count
                           "restarts": {str(int(n)): int(r) for n, r in
                                        zip(md["network"].values, md["restarts"].values) if r},
                           # mask runs (every alpha) that never trained: excluded everywhere
                           "degenerate_runs": int((md["converged"].notnull() & (
                               (md["density"] <= 0) | (md["density"] >= 100))).sum()),
                           "ci_level": level, "checkpoints": {}, "trends": {}}
    for ck in md["checkpoint"].values:
        a = float(md["selected_alpha"].sel(checkpoint=ck))
        entry: dict[str, Any] = {
            "val_acc": stats.interval(md["ckpt_val_acc"].sel(checkpoint=ck), level,
                                      ()).as_dict(),
            "test_acc": stats.interval(md["ckpt_test_acc"].sel(checkpoint=ck), level,
                                       ()).as_dict(),
            "alpha": a if np.isfinite(a) else None,
            # tasks whose masks at the selected alpha lose more than metrics.alpha_tolerance
            # points on the select split (the rule's fallback when no alpha is within it):
            # their modules are not faithful to the unmasked network
            "alpha_outside_tolerance": _failing(md["alpha_ok"], str(ck), a),
            "report_problems_min": _min_int(ds["ablation"]["n_problems"].sel(
                checkpoint=ck, split="report", variant="mask")),
            "families": {}}
        if np.isfinite(a):
            entry["families"] = {f: _family_summary(ds, f, str(ck), a, cfg) for f in fams}
        out["checkpoints"][str(ck)] = entry
    if md.sizes["checkpoint"] > 1:
        for f in fams:
            tasks = [t for t in FAMILIES[f].tasks if t in md["task"].values]
            out["trends"][f] = {v: _trend(md, v, tasks, level, sign) for v, sign in (
                ("sparsity", +1), ("dispersity", -1), ("dispersity_norm", -1))}
    return out


# =========================================================================== writing


def source_string() -> str:
    """``modules-avr <version>`` plus ``git describe --always --dirty`` when available."""
    try:
        desc = subprocess.run(["git", "describe", "--always", "--dirty"],
                              cwd=Path(__file__).resolve().parents[1], capture_output=True,
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
        text = json.dumps(summary, indent=1, sort_keys=True, allow_nan=False)
        paths.append(atomic_write_text(Path(out) / "summary.json", text + "\n"))
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


if __name__ == "__main__":
    raise SystemExit(main())
