"""Module metrics: turn a folder of binary weight masks into the four netCDF datasets.

    python -m core.metrics --masks data/masks --training data/train/training.nc \\
        --params active.yaml --out data/metrics

Reads the mask files of every run of ``core.config.mask_runs`` (``<masks>/<key>.pt``, format in
docs/architecture.md) and the SCL training log, and writes ``modules.nc``, ``layers.nc``,
``sharing.nc`` and ``curves.nc`` (schema: :mod:`core.schema`). Definitions follow the original
study (``../shared/reference/modules.md``) and add what it lacked: chance levels for sharing, a
random-normalised dispersity, seed agreement and a tested alpha-selection rule.

The metric functions at the top work on lists of numpy bool arrays (one per masked tensor) and
are what the tests check by hand; :func:`compute` assembles them into labelled datasets.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from core import __version__
from core.config import SUBNETS, Config, ConfigError, load, mask_runs
from core.io import atomic_path
from core.schema import FILES, SchemaError, finalize

MASK_FORMAT = "modules-avr-mask/1"
ACC_KEYS = ("task", "not_task", "task_inverted", "not_task_inverted", "task_full",
            "not_task_full")
CURVE_KEYS = {"loss": "loss", "task_acc": "acc_task", "task_inverted_acc": "acc_task_inverted",
              "density": "density"}
MASK_KEYS = ("format", "checkpoint", "task", "alpha", "seed", "arch", "image_size",
             "model_fingerprint", "names", "shapes", "mask", "accuracy", "curve", "snapshots")


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


def dispersity_norm(masks: Sequence[np.ndarray], samples: int = 0, seed: int = 0) -> float:
    """:func:`dispersity` over its random-mask expectation (1 = as spread as random; NaN when
    the random expectation is 0, i.e. no tensor has two or more kept entries)."""
    ref = dispersity_random([np.shape(m) for m in masks], _kept(masks), samples, seed)
    return dispersity(masks) / ref if ref > 0 else float("nan")


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


def chance_upper(kept_a: Sequence[int], kept_b: Sequence[int], sizes: Sequence[int],
                 samples: int, level: float, rng: np.random.Generator) -> tuple[float, float]:
    """``level`` quantiles of (IoMin, IoU) over ``samples`` pairs of random masks with the same
    per-tensor counts (the intersection per tensor is hypergeometric); NaN if ``samples`` is 0
    or a mask is empty."""
    ka, kb, n = (np.asarray(x, np.int64) for x in (kept_a, kept_b, sizes))
    small, total = min(ka.sum(), kb.sum()), ka.sum() + kb.sum()
    if samples == 0 or small == 0:
        return float("nan"), float("nan")
    inter = rng.hypergeometric(ka, n - ka, kb, size=(samples, n.size)).sum(axis=1)
    return (float(np.quantile(100.0 * inter / small, level)),
            float(np.quantile(100.0 * inter / (total - inter), level)))


def remove_shared(masks: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Shared-weight removal: (``{task: mask AND NOT shared}``, ``shared``) where ``shared`` is
    the AND of all the masks (the weights every module keeps)."""
    if not masks:
        raise ValueError("remove_shared: no masks")
    arrays = [np.asarray(m, bool) for m in masks.values()]
    shared = np.logical_and.reduce(arrays)
    return {t: np.asarray(m, bool) & ~shared for t, m in masks.items()}, shared


def select_alpha(acc_task: xr.DataArray, acc_full: xr.DataArray, tolerance: float,
                 min_seeds: int) -> tuple[xr.DataArray, xr.DataArray]:
    """The alpha-selection rule: (``alpha_ok`` (checkpoint, task, alpha), ``selected_alpha``
    (checkpoint)).

    An alpha is ok for a task when at least ``min_seeds`` seeds exist and the seed-mean masked
    task accuracy is at most ``tolerance`` points below the seed-mean unmasked one. Candidates
    of a checkpoint are the alphas with ``min_seeds`` seeds for every task; the selected alpha
    is the largest candidate that is ok for every task (the sparsest faithful modules), or,
    when none is, the candidate with the best worst-task margin. NaN without candidates.
    Inputs have dims (checkpoint, task, alpha, seed), NaN where a run does not exist.
    """
    n = acc_task.notnull().sum("seed")
    margin = acc_task.mean("seed", skipna=True) - acc_full.mean("seed", skipna=True) + tolerance
    enough = n >= min_seeds
    ok = xr.where(n > 0, (enough & (margin >= 0)).astype(np.float64), np.nan)
    candidate = enough.all("task")
    worst = margin.min("task", skipna=False)
    selected = []
    for c in acc_task["checkpoint"].values:
        cand = candidate.sel(checkpoint=c)
        alphas = acc_task["alpha"].values[cand.values]
        good = alphas[(ok.sel(checkpoint=c).sel(alpha=alphas) == 1).all("task").values]
        if good.size:
            selected.append(float(good.max()))
        elif alphas.size:
            w = worst.sel(checkpoint=c).sel(alpha=alphas).values
            selected.append(float(alphas[int(np.nanargmax(w))]) if np.isfinite(w).any()
                            else float("nan"))
        else:
            selected.append(float("nan"))
    sel = xr.DataArray(selected, dims=["checkpoint"],
                       coords={"checkpoint": acc_task["checkpoint"].values})
    return ok.transpose("checkpoint", "task", "alpha"), sel


def mean_ci(da: xr.DataArray, dim: str = "seed", level: float = 0.95) -> xr.Dataset:
    """Mean, Student-t confidence interval (``lower``, ``upper``) and count ``n`` of ``da``
    over ``dim`` (NaN ignored); the interval is NaN where fewer than two values exist.
    Use at read time: the files keep every seed."""
    from scipy import stats

    n = da.notnull().sum(dim)
    mean = da.mean(dim, skipna=True)
    sem = da.std(dim, ddof=1, skipna=True) / np.sqrt(n.where(n > 1))
    t = xr.apply_ufunc(lambda k: stats.t.ppf((1 + level) / 2, np.maximum(k - 1, 1)), n)
    half = (t * sem).where(n > 1)
    return xr.Dataset({"mean": mean, "lower": mean - half, "upper": mean + half, "n": n},
                      attrs={"level": level, "dim": dim})


def seed_agreement(seed_iou: xr.DataArray) -> xr.DataArray:
    """Mean IoU over distinct seed pairs of ``modules.seed_iou`` (NaN with fewer than 2)."""
    off = seed_iou.where(seed_iou["seed"] != seed_iou["other_seed"])
    return off.mean(["seed", "other_seed"], skipna=True)


# =========================================================================== inputs


@dataclass
class MaskRun:
    """One mask file, validated; ``flat`` is the read-out mask of all tensors concatenated."""

    path: Path
    checkpoint: str
    task: str
    alpha: float
    seed: int
    names: list[str]
    shapes: list[tuple[int, ...]]
    flat: np.ndarray
    accuracy: dict[str, float]
    curve: dict[str, np.ndarray]
    snapshots: dict[str, Any]
    ident: tuple

    def split(self, flat: np.ndarray | None = None) -> list[np.ndarray]:
        """The per-tensor masks (of ``flat``, default the run's own) in model order."""
        flat = self.flat if flat is None else flat
        sizes = [int(np.prod(s)) for s in self.shapes]
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, self.shapes)]


def _fail(path: Path, msg: str) -> MetricsError:
    return MetricsError(f"{path}: {msg}")


def load_mask(path: Path, run: Mapping[str, Any]) -> MaskRun:
    """Load and check one mask file against the run it should hold (``mask_runs`` entry)."""
    import torch

    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, unsafe pickle ...
        raise _fail(path, f"cannot load mask file ({type(err).__name__}: {err})") from None
    if not isinstance(d, dict):
        raise _fail(path, f"expected a dict of format {MASK_FORMAT!r}, got {type(d).__name__}")
    missing = [k for k in MASK_KEYS if k not in d]
    if missing:
        raise _fail(path, f"key {missing[0]!r} missing (expected a {MASK_FORMAT} mask file)")
    if d["format"] != MASK_FORMAT:
        raise _fail(path, f"format {d['format']!r}, expected {MASK_FORMAT!r}")
    for key in ("checkpoint", "task", "seed"):
        if d[key] != run[key]:
            raise _fail(path, f"{key} is {d[key]!r}, expected {run[key]!r} for run {run['key']}")
    if not np.isclose(float(d["alpha"]), run["alpha"], rtol=1e-9, atol=0):
        raise _fail(path, f"alpha is {d['alpha']!r}, expected {run['alpha']!r}")
    names, shapes = list(d["names"]), [tuple(int(x) for x in s) for s in d["shapes"]]
    if len(names) != len(shapes) or not names:
        raise _fail(path, "'names' and 'shapes' must be non-empty lists of equal length")
    if set(d["mask"]) != set(names):
        raise _fail(path, "mask names differ from 'names'")
    parts = []
    for name, shape in zip(names, shapes):
        if name.split(".", 1)[0] not in SUBNETS:
            raise _fail(path, f"parameter {name!r} does not start with a sub-network "
                              f"({', '.join(SUBNETS)})")
        m = d["mask"][name]
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise _fail(path, f"mask of {name!r} is not a bool tensor")
        if tuple(m.shape) != shape:
            raise _fail(path, f"mask of {name!r} has shape {tuple(m.shape)}, expected {shape}")
        parts.append(m.numpy().ravel())
    acc = d["accuracy"]
    if not isinstance(acc, dict) or any(k not in acc for k in ACC_KEYS):
        raise _fail(path, f"'accuracy' must hold {', '.join(ACC_KEYS)} (percent)")
    curve = d["curve"]
    if not isinstance(curve, dict) or any(k not in curve for k in ("step", *CURVE_KEYS)):
        raise _fail(path, f"'curve' must hold step, {', '.join(CURVE_KEYS)}")
    lens = {len(curve[k]) for k in ("step", *CURVE_KEYS)}
    if len(lens) != 1:
        raise _fail(path, "'curve' lists have different lengths")
    snaps = d["snapshots"]
    if not isinstance(snaps, dict) or any(k not in snaps for k in ("param", "steps", "logits")):
        raise _fail(path, "'snapshots' must hold param, steps, logits")
    if snaps["param"] not in names:
        raise _fail(path, f"snapshot parameter {snaps['param']!r} is not a masked parameter")
    logits = np.asarray(snaps["logits"].numpy() if isinstance(snaps["logits"], torch.Tensor)
                        else snaps["logits"], dtype=np.float64)
    if logits.shape != (len(snaps["steps"]), *shapes[names.index(snaps["param"])]):
        raise _fail(path, f"snapshot logits have shape {logits.shape}, expected "
                          f"[{len(snaps['steps'])}, *{shapes[names.index(snaps['param'])]}]")
    ident = (d["arch"], int(d["image_size"]), str(d["model_fingerprint"]), tuple(names),
             tuple(shapes))
    return MaskRun(path=path, checkpoint=run["checkpoint"], task=run["task"],
                   alpha=float(run["alpha"]), seed=int(run["seed"]), names=names,
                   shapes=shapes, flat=np.concatenate(parts),
                   accuracy={k: float(acc[k]) for k in ACC_KEYS},
                   curve={k: np.asarray(curve[k], dtype=np.float64)
                          for k in ("step", *CURVE_KEYS)},
                   snapshots={"param": snaps["param"],
                              "steps": np.asarray(snaps["steps"], dtype=np.int64),
                              "logits": logits},
                   ident=ident)


def load_masks(directory: str | Path, cfg: Config, progress: bool = True) -> list[MaskRun]:
    """Every mask run of ``cfg`` from ``directory`` (``<key>.pt``), checked to come from one
    model (same architecture, image size, fingerprint, parameter names and shapes)."""
    from tqdm import tqdm

    directory = Path(directory)
    if not directory.is_dir():
        raise MetricsError(f"{directory}: mask folder not found")
    if not any(directory.glob("*.pt")):
        raise MetricsError(f"{directory}: no mask files (*.pt); run the masks stage first")
    runs = mask_runs(cfg)
    for run in runs:
        if not (directory / f"{run['key']}.pt").exists():
            raise MetricsError(f"{directory / (run['key'] + '.pt')}: mask file missing "
                               f"(run {run['key']} of profile {cfg.profile})")
    out: list[MaskRun] = []
    for run in tqdm(runs, desc="masks", disable=not progress, leave=False):
        m = load_mask(directory / f"{run['key']}.pt", run)
        if out and m.ident != out[0].ident:
            first = out[0]
            what = next(w for w, a, b in zip(
                ("architecture", "image size", "model fingerprint", "parameter names",
                 "parameter shapes"), m.ident, first.ident) if a != b)
            raise _fail(m.path, f"{what} differs from {first.path} (masks of different models "
                                "mixed)")
        out.append(m)
    return out


def _percent(da: xr.DataArray) -> np.ndarray:
    """Values in percent: a variable whose ``units`` attr says ``1`` is a fraction."""
    v = np.asarray(da.values, dtype=np.float64)
    return v * 100.0 if str(da.attrs.get("units", "percent")).strip() == "1" else v


def read_training(path: str | Path) -> dict[str, np.ndarray]:
    """The SCL training log (``training.nc`` of ``core.train``) as plain arrays, accuracies in
    percent: ``train_step``/``train_loss``/``train_acc``/``epoch`` (dim ``step``; the loss and
    accuracy may be named ``loss``/``acc``), ``val_step``/``val_acc``/``val_epoch`` (dim
    ``val_step``; ``val_epoch`` NaN when absent), and, when the log records them
    (``milestone_step``/``milestone_val_acc`` on dim ``milestone``), ``milestone``,
    ``milestone_step`` and ``milestone_val_acc`` (NaN: not reached)."""
    path = Path(path)
    if not path.exists():
        raise MetricsError(f"{path}: training log not found (expected training.nc of the "
                           "train stage)")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except Exception as err:
        raise MetricsError(f"{path}: cannot read as netCDF ({type(err).__name__}: {err})"
                           ) from None

    def var(names: tuple[str, ...], dim: str) -> xr.DataArray:
        for name in names:
            if name in ds.variables:
                if ds[name].dims != (dim,):
                    raise MetricsError(f"{path}: variable {name!r} has dims {ds[name].dims}, "
                                       f"expected ({dim!r},)")
                return ds[name]
        alt = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
        raise MetricsError(f"{path}: variable {names[0]!r}{alt} missing "
                           f"(expected on dim {dim!r})")

    def coord(dim: str) -> np.ndarray:
        return (np.asarray(ds[dim].values, dtype=np.int64) if dim in ds.variables
                else np.arange(ds.sizes[dim], dtype=np.int64))

    out = {"train_loss": np.asarray(var(("train_loss", "loss"), "step").values, np.float64),
           "train_acc": _percent(var(("train_acc", "acc"), "step")),
           "epoch": np.asarray(var(("epoch",), "step").values, np.float64),
           "val_acc": _percent(var(("val_acc",), "val_step"))}
    out["train_step"], out["val_step"] = coord("step"), coord("val_step")
    out["val_epoch"] = (np.asarray(var(("val_epoch",), "val_step").values, np.float64)
                        if "val_epoch" in ds.variables else np.full(out["val_acc"].size, np.nan))
    if "milestone_step" in ds.variables and "milestone_val_acc" in ds.variables:
        step = np.asarray(var(("milestone_step",), "milestone").values, np.float64)
        out["milestone"] = np.asarray(ds["milestone"].values, np.float64)
        out["milestone_step"] = np.where(step < 0, np.nan, step)
        out["milestone_val_acc"] = _percent(var(("milestone_val_acc",), "milestone"))
    return out


# =========================================================================== datasets


def _ckpt_coords(cfg: Config, training: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Checkpoint coords: milestone, and the step and validation accuracy of the checkpoint,
    from the log's milestone records when it has them, else the first logged validation
    whose accuracy reached the milestone (NaN when never reached)."""
    steps, vals = [], []
    for m in cfg.train.milestones:
        if "milestone" in training:
            hit = np.nonzero(np.isclose(training["milestone"], m))[0]
            if not hit.size:
                raise MetricsError(f"training log: milestone {m:g} of train.milestones not in "
                                   f"its milestones {training['milestone'].tolist()} (stale "
                                   "training.nc?)")
            steps.append(float(training["milestone_step"][hit[0]]))
            vals.append(float(training["milestone_val_acc"][hit[0]]))
            continue
        hit = np.nonzero(training["val_acc"] >= m)[0]
        steps.append(float(training["val_step"][hit[0]]) if hit.size else np.nan)
        vals.append(float(training["val_acc"][hit[0]]) if hit.size else np.nan)
    return {"checkpoint": cfg.checkpoints,
            "milestone": ("checkpoint", [float(m) for m in cfg.train.milestones]),
            "ckpt_val_acc": ("checkpoint", vals), "ckpt_step": ("checkpoint", steps)}


def _fill_module(v: dict[str, np.ndarray], idx: tuple, parts: list[np.ndarray], suffix: str,
                 shapes: Any, ref: tuple[int, int]) -> np.ndarray:
    """Write one module's scalars (``suffix`` "" or "_specific") at ``idx``; return kept/tensor."""
    k = _kept(parts)
    v[f"n_kept{suffix}"][idx] = k.sum()
    v[f"sparsity{suffix}"][idx] = sparsity(parts)
    v[f"dispersity{suffix}"][idx] = dispersity(parts)
    v[f"dispersity{suffix}_random"][idx] = dispersity_random(shapes, k, *ref)
    return k


def compute(runs: Sequence[MaskRun], cfg: Config, training: Mapping[str, np.ndarray],
            progress: bool = False) -> dict[str, xr.Dataset]:
    """The four datasets (not yet finalised with attrs) from loaded runs and the training log."""
    from tqdm import tqdm

    C, T = cfg.checkpoints, list(cfg.masks.tasks)
    A = sorted({float(cfg.masks.alpha), *map(float, cfg.masks.alpha_sweep)})
    S = sorted(int(s) for s in cfg.masks.seeds)
    first = runs[0]
    names, shapes = first.names, first.shapes
    sizes = np.array([int(np.prod(s)) for s in shapes], dtype=np.int64)
    P = len(names)
    at = {(C.index(r.checkpoint), T.index(r.task), A.index(r.alpha), S.index(r.seed)): r
          for r in runs}
    dims4 = (len(C), len(T), len(A), len(S))
    nan4 = lambda *extra: np.full(dims4 + extra, np.nan)  # noqa: E731
    v = {k: nan4() for k in ("sparsity", "n_kept", "dispersity", "dispersity_random",
                             "n_kept_specific", "sparsity_specific", "dispersity_specific",
                             "dispersity_specific_random", *(f"acc_{k}" for k in ACC_KEYS))}
    kept, kept_s = nan4(P), nan4(P)
    seed_iou = nan4(len(S))
    ref = (cfg.metrics.dispersity_samples, cfg.seed)  # random-mask dispersity reference

    for idx, r in tqdm(at.items(), desc="metrics", disable=not progress, leave=False):
        kept[idx] = _fill_module(v, idx, r.split(), "", shapes, ref)
        for key in ACC_KEYS:
            v[f"acc_{key}"][idx] = r.accuracy[key]
    # shared-weight removal within (checkpoint, alpha, seed) when every task has a mask there
    specific: dict[tuple, np.ndarray] = {}
    shared_n = np.full((len(C), len(A), len(S)), np.nan)
    for c in range(len(C)):
        for a in range(len(A)):
            for s in range(len(S)):
                group = {t: at[c, t, a, s].flat for t in range(len(T)) if (c, t, a, s) in at}
                if len(group) != len(T):
                    continue
                spec, shared = remove_shared(group)
                shared_n[c, a, s] = shared.sum()
                for t, m in spec.items():
                    idx = (c, t, a, s)
                    specific[idx] = m
                    kept_s[idx] = _fill_module(v, idx, at[idx].split(m), "_specific", shapes,
                                               ref)
    # seed agreement
    for (c, t, a, s), r in at.items():
        for s2 in range(len(S)):
            if (c, t, a, s2) in at:
                seed_iou[c, t, a, s, s2] = overlap(r.flat, at[c, t, a, s2].flat)[1]

    ckc = _ckpt_coords(cfg, training)
    base = {**ckc, "task": T, "alpha": A, "seed": S}
    m4 = ("checkpoint", "task", "alpha", "seed")
    mods = xr.Dataset({k: (m4, x) for k, x in v.items()}, coords=base)
    ok, selected = select_alpha(mods["acc_task"], mods["acc_task_full"],
                                cfg.metrics.alpha_tolerance, cfg.metrics.alpha_min_seeds)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = v["dispersity"] / np.where(v["dispersity_random"] > 0, v["dispersity_random"],
                                          np.nan)
        norm_s = v["dispersity_specific"] / np.where(v["dispersity_specific_random"] > 0,
                                                     v["dispersity_specific_random"], np.nan)
        share = 100 * kept / kept.sum(-1, keepdims=True)
        share_s = 100 * kept_s / kept_s.sum(-1, keepdims=True)
    modules = mods.drop_vars("dispersity_specific_random").assign(
        n_masked=((), float(sizes.sum())), density=(m4, 100 - v["sparsity"]),
        dispersity_norm=(m4, norm), dispersity_specific_norm=(m4, norm_s),
        seed_iou=(m4 + ("other_seed",), seed_iou), alpha_ok=ok, selected_alpha=selected,
    ).assign_coords(other_seed=S)

    m5 = m4 + ("param",)
    layers = xr.Dataset(
        {"kept": (m5, kept), "density": (m5, 100 * kept / sizes), "share": (m5, share),
         "kept_specific": (m5, kept_s), "share_specific": (m5, share_s)},
        coords={**base, "param": names, "subnet": ("param", [n.split(".", 1)[0] for n in names]),
                "param_size": ("param", sizes),
                "param_shape": ("param", ["x".join(map(str, s)) or "scalar" for s in shapes])})

    sharing = _sharing(at, specific, selected.values, C, T, A, S, sizes, shared_n, cfg)
    sharing = sharing.assign_coords({**ckc, "task": T, "other_task": T, "seed": S,
                                     "alpha": ("checkpoint", selected.values)})
    curves, snap_param = _curves(at, selected.values, C, T, A, S, training, base)
    return {"modules": modules, "layers": layers, "sharing": sharing, "curves": curves,
            "_snapshot_param": snap_param}


def _sharing(at, specific, selected, C, T, A, S, sizes, shared_n, cfg) -> xr.Dataset:
    """Pairwise IoMin/IoU, chance levels and the task-specific overlaps at the selected alpha."""
    names = ("iomin", "iou", "iomin_chance", "iou_chance", "iomin_chance_global",
             "iomin_chance_upper", "iou_chance_upper", "iomin_specific", "iou_specific")
    out = {k: np.full((len(C), len(T), len(T), len(S)), np.nan) for k in names}
    n_shared = np.full((len(C), len(S)), np.nan)
    offsets = np.cumsum(sizes)[:-1]
    for c in range(len(C)):
        if not np.isfinite(selected[c]):
            continue
        a = A.index(float(selected[c]))
        for s in range(len(S)):
            n_shared[c, s] = shared_n[c, a, s]
            have = [t for t in range(len(T)) if (c, t, a, s) in at]
            counts = {t: np.array([x.sum() for x in np.split(at[c, t, a, s].flat, offsets)])
                      for t in have}
            for i in have:
                for j in have:
                    mi, mj = at[c, i, a, s].flat, at[c, j, a, s].flat
                    idx = (c, i, j, s)
                    out["iomin"][idx], out["iou"][idx] = overlap(mi, mj)
                    ki, kj = counts[i], counts[j]
                    out["iomin_chance"][idx], out["iou_chance"][idx] = chance_overlap(
                        ki, kj, sizes)
                    out["iomin_chance_global"][idx] = chance_overlap(
                        [ki.sum()], [kj.sum()], [sizes.sum()])[0]
                    lo, hi = min(i, j), max(i, j)
                    rng = np.random.default_rng([cfg.seed, c, s, lo, hi])
                    out["iomin_chance_upper"][idx], out["iou_chance_upper"][idx] = chance_upper(
                        ki, kj, sizes, cfg.metrics.chance_samples, cfg.metrics.ci, rng)
                    if (c, i, a, s) in specific and (c, j, a, s) in specific:
                        out["iomin_specific"][idx], out["iou_specific"][idx] = overlap(
                            specific[c, i, a, s], specific[c, j, a, s])
    dims = ("checkpoint", "task", "other_task", "seed")
    return xr.Dataset({**{k: (dims, x) for k, x in out.items()},
                       "n_shared": (("checkpoint", "seed"), n_shared)})


def _curves(at, selected, C, T, A, S, training, base) -> tuple[xr.Dataset, str]:
    """Mask-training curves (union of logged steps), SCL curves and keep-probability snapshots
    (first seed, selected alpha) of one parameter viewed as rows x (other dims flattened)."""
    steps = np.unique(np.concatenate([r.curve["step"] for r in at.values()])).astype(np.int64)
    cur = {k: np.full((len(C), len(T), len(A), len(S), steps.size), np.nan)
           for k in CURVE_KEYS.values()}
    for idx, r in at.items():
        pos = np.searchsorted(steps, r.curve["step"].astype(np.int64))
        for src, dst in CURVE_KEYS.items():
            cur[dst][idx + (pos,)] = r.curve[src]
    snap_runs = {}
    for c in range(len(C)):
        if np.isfinite(selected[c]):
            a = A.index(float(selected[c]))
            for t in range(len(T)):
                if (c, t, a, 0) in at:
                    snap_runs[c, t] = at[c, t, a, 0]
    params = {r.snapshots["param"] for r in snap_runs.values()}
    if len(params) > 1:
        raise MetricsError(f"mask snapshots of different parameters {sorted(params)}: the "
                           "mask-evolution figure needs one parameter for every run")
    param = params.pop() if params else ""
    views = {}
    for key, r in snap_runs.items():
        lg = r.snapshots["logits"]
        rows = lg.shape[1] if lg.ndim > 1 else 1
        views[key] = (r.snapshots["steps"], lg.reshape(lg.shape[0], rows, -1))
    snap_steps = (np.unique(np.concatenate([s for s, _ in views.values()])).astype(np.int64)
                  if views else np.zeros(0, np.int64))
    R = max((x.shape[1] for _, x in views.values()), default=0)
    K = max((x.shape[2] for _, x in views.values()), default=0)
    keep = np.full((len(C), len(T), snap_steps.size, R, K), np.nan)
    for (c, t), (st, x) in views.items():
        pos = np.searchsorted(snap_steps, st)
        keep[c, t, pos, : x.shape[1], : x.shape[2]] = 1 / (1 + np.exp(-x))
    m5 = ("checkpoint", "task", "alpha", "seed", "mask_step")
    ds = xr.Dataset(
        {**{k: (m5, x) for k, x in cur.items()},
         "train_loss": (("train_step",), training["train_loss"]),
         "train_acc": (("train_step",), training["train_acc"]),
         "epoch": (("train_step",), training["epoch"]),
         "val_acc": (("val_step",), training["val_acc"]),
         "val_epoch": (("val_step",), training["val_epoch"]),
         "keep_prob": (("checkpoint", "task", "snap_step", "snap_row", "snap_col"), keep)},
        coords={**base, "mask_step": steps, "train_step": training["train_step"],
                "val_step": training["val_step"], "snap_step": snap_steps,
                "snap_row": np.arange(R), "snap_col": np.arange(K),
                "snap_alpha": ("checkpoint", np.asarray(selected, np.float64))})
    return ds, param


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


def build(masks: str | Path, training: str | Path, cfg: Config, source: str | None = None,
          progress: bool = True) -> dict[str, xr.Dataset]:
    """Load inputs and return the four finalised (annotated, validated) datasets."""
    runs = load_masks(masks, cfg, progress=progress)
    raw = compute(runs, cfg, read_training(training), progress=progress)
    src = source_string() if source is None else source
    m = cfg.metrics
    common = {"profile": cfg.profile,
              "metrics_params": f"alpha_tolerance={m.alpha_tolerance:g} "
                                f"alpha_min_seeds={m.alpha_min_seeds} "
                                f"chance_samples={m.chance_samples} "
                                f"dispersity_samples={m.dispersity_samples} ci={m.ci:g}"}
    extra = {
        "sharing": {"chance_method": "iomin_chance, iou_chance: analytic, random masks with "
                                     "the same kept count per tensor; iomin_chance_global: "
                                     "analytic, same global density (100 max(p, q)); "
                                     "*_chance_upper: sampled (hypergeometric), "
                                     f"{m.chance_samples} pairs, quantile {m.ci:g}"},
        "curves": {"snapshot_param": raw["_snapshot_param"],
                   "snapshot_seed": str(min(cfg.masks.seeds))},
    }
    return {name: finalize(raw[name], name, src, {**common, **extra.get(name, {})})
            for name in FILES}


def write(datasets: Mapping[str, xr.Dataset], out: str | Path) -> list[Path]:
    """Write each dataset atomically as ``<out>/<name>.nc`` (netCDF4, fixed encoding)."""
    paths = []
    for name in FILES:
        path = Path(out) / f"{name}.nc"
        with atomic_path(path) as tmp:
            datasets[name].to_netcdf(tmp, engine="netcdf4", format="NETCDF4")
        paths.append(path)
    return paths


def run(masks: str | Path, training: str | Path, params: str | Path, out: str | Path,
        profile: str | None = None, progress: bool = True) -> dict[str, xr.Dataset]:
    """The whole stage: load params, build the datasets, write them; returns the datasets."""
    cfg = load(params, profile)
    datasets = build(masks, training, cfg, progress=progress)
    write(datasets, out)
    return datasets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.metrics", description=__doc__.split("\n")[0])
    ap.add_argument("--masks", required=True, help="folder of mask files (<run key>.pt)")
    ap.add_argument("--training", required=True, help="SCL training log (training.nc)")
    ap.add_argument("--params", default="active.yaml")
    ap.add_argument("--profile", default=None)
    ap.add_argument("--out", required=True, help="folder for the four .nc files")
    args = ap.parse_args(argv)
    try:
        ds = run(args.masks, args.training, args.params, args.out, args.profile)
    except (MetricsError, ConfigError, SchemaError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sel = ds["modules"]["selected_alpha"]
    print(f"{args.out}: {', '.join(f'{n}.nc' for n in FILES)}; selected alpha "
          + ", ".join(f"{c}={a:g}" for c, a in zip(sel["checkpoint"].values, sel.values)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
