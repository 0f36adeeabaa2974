"""The metric datasets from the inputs: every mask record becomes rows keyed by
:data:`~core.metrics.inputs.RUN` (module scalars, per-parameter shares, mask-training curves,
sharing pairs) and the rows become ``xarray`` datasets on the full coordinates (a run that does
not exist is NaN): ``modules``, ``layers``, ``sharing``, ``ablation`` and ``curves`` (schema:
:mod:`core.formats.metrics`; not yet finalised).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from core.config import Config
from core.formats.evals import SPLITS
from core.metrics.inputs import (
    RUN,
    MaskRecord,
    MetricsError,
    _ckpt_coords,
    folders,
    masked_parameters,
    read_ablation,
    read_mask_record,
    training_curves,
)
from core.metrics.measures import (
    _diag,
    _kept,
    chance_overlap,
    density_change_constant,
    dispersity,
    dispersity_random,
    overlap,
    remove_shared,
    select_alpha,
    sparsity,
)
from core.tasks import FAMILIES, family_of

MODULE_COLUMNS = ("sparsity", "n_kept", "dispersity", "dispersity_random", "dispersity_norm",
                  "n_kept_specific", "sparsity_specific", "dispersity_specific_norm",
                  "converged", "density_change", "acc_change", "density_change_constant")
PAIR_COLUMNS = ("iomin", "iou", "iomin_chance", "iou_chance", "iomin_specific")


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


def _module_scalars(run: MaskRecord, flat: np.ndarray, suffix: str, ref: tuple[int, int]
                    ) -> dict[str, float]:
    parts = run.split(flat)
    k = _kept(parts)
    disp, rnd = dispersity(parts), dispersity_random(run.shapes, k, *ref)
    row = {f"n_kept{suffix}": float(k.sum()), f"sparsity{suffix}": sparsity(parts),
           f"dispersity{suffix}_norm": disp / rnd if rnd > 0 else np.nan}
    if not suffix:
        row.update(dispersity=disp, dispersity_random=rnd)
    return row


def _specific(runs: Sequence[MaskRecord]) -> dict[tuple, np.ndarray]:
    """Task-specific masks: within (family, alpha, seed) groups holding every task of the
    family that has masks here (at least two), each mask AND NOT the AND of the group
    (shared-weight removal)."""
    groups: dict[tuple, dict[str, MaskRecord]] = {}
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


def _pairs(runs: Sequence[MaskRecord], alpha: float, specific: Mapping[tuple, np.ndarray]
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


def _run_rows(runs: Sequence[MaskRecord], specific: Mapping[tuple, np.ndarray],
              ref: tuple[int, int], anneal: float = 0.0, window: float = 0.2
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


def _snapshot(runs: Sequence[MaskRecord]) -> dict[str, dict]:
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


def _alpha_choice(ablation: xr.Dataset, tasks: list[str], cfg: Config
                  ) -> tuple[dict[str, xr.DataArray], xr.DataArray, xr.DataArray]:
    """(masked and unmasked accuracy on the own set per split, ``alpha_ok``,
    ``selected_alpha``): the alpha-selection rule (:func:`select_alpha`) on the select split."""
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
    return acc, ok.reindex(task=tasks), selected


def _rows(places: Mapping[tuple[int, str], Path], stems: Mapping[tuple[int, str], list[str]],
          selected: xr.DataArray, first: int, cfg: Config, progress: bool
          ) -> tuple[list[dict], list[dict], list[dict], list[dict], dict, tuple]:
    """(module, layer, curve and sharing rows, snapshots per checkpoint, masked parameters)
    from the mask records of every checkpoint folder; pairs at each checkpoint's selected
    alpha, snapshots of network ``first``."""
    ref = (cfg.metrics.dispersity_samples, cfg.seed)
    mods, layers, curves, pairs, snaps = [], [], [], [], {}
    params: tuple | None = None
    for (net, ck), d in tqdm(places.items(), desc="metrics", disable=not progress, leave=False):
        runs = [read_mask_record(d / f"{s}.pt", net, ck) for s in stems[net, ck]]
        params = masked_parameters(runs, params)
        specific = _specific(runs)
        m, ly, cv = _run_rows(runs, specific, ref, cfg.masks.lr_anneal, cfg.masks.converge_window)
        mods, layers, curves = mods + m, layers + ly, curves + cv
        a = float(selected.sel(checkpoint=ck))
        if np.isfinite(a):
            pairs += _pairs(runs, a, specific)
            if net == first:
                snaps[ck] = _snapshot([r for r in runs if r.alpha == a])
    return mods, layers, curves, pairs, snaps, params


def compute(masks: str | Path, train: str | Path, cfg: Config, progress: bool = False
            ) -> dict[str, Any]:
    """Every dataset (not yet finalised) and the snapshot parameter, from the inputs."""
    places = folders(masks, cfg)
    nets, cks = sorted(cfg.train.networks), list(cfg.checkpoints)
    ablation, stems = read_ablation(places, cfg)
    tasks, alphas, seeds = (list(ablation[k].values) for k in ("task", "alpha", "seed"))
    acc, ok, selected = _alpha_choice(ablation, tasks, cfg)
    mods, layers, curves, pairs, snaps, (names, shapes) = _rows(places, stems, selected,
                                                                 nets[0], cfg, progress)
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


def _curves(rows: list[dict], snaps: Mapping[str, Mapping[str, dict]], train: str | Path,
            base: Mapping[str, list], cks: list[str], tasks: list[str],
            selected: xr.DataArray) -> tuple[xr.Dataset, str]:
    """Mask-training curves (union of logged steps), SCL curves per network and the
    keep-probability snapshots of the first network at the selected alpha."""
    steps = sorted({int(r["mask_step"]) for r in rows})
    mask = to_dataset(rows, RUN + ("mask_step",), {**base, "mask_step": steps},
                      ("loss", "acc_task", "density"))
    scl, val = training_curves(train, base["network"])
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
