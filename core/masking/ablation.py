"""Ablations of one checkpoint's masks: the six accuracies of a mask file (:func:`evaluate`),
the selective ablation's task-specific parts, and the ablation matrix of ``evals.nc``
(:func:`evaluate_group`, in parts: :func:`evaluate_part` and :func:`merge_parts`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from core.formats import evals
from core.formats.evals import SPLITS, VARIANTS
from core.formats.masks import ACCURACY_KEYS, MaskError
from core.masking.measure import Measure, Split, accuracy, measure
from core.masking.model import MaskedModel

# one measurement of a model variant (a forward function) on one problem set
Run = Callable[[Callable[[torch.Tensor], torch.Tensor], Split], Measure]


def evaluate(masked: MaskedModel, mask: dict[str, torch.Tensor], task: Split,
             not_task: Split, batch_size: int = 64) -> dict[str, float]:
    """The six accuracies of the file format (percent)."""
    out = {}
    for key, data in (("task", task), ("not_task", not_task)):
        for suffix, fn in (("", masked.forward_fn(mask)),
                           ("_inverted", masked.forward_fn(mask, invert=True)),
                           ("_full", masked.forward_fn(None))):
            out[key + suffix] = accuracy(fn, data, batch_size, masked.device)
    return {k: out[k] for k in ACCURACY_KEYS}


def mask_union(masks: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Entry-wise OR of masks over the same parameters."""
    out = {n: t.clone() for n, t in masks[0].items()}
    for m in masks[1:]:
        if set(m) != set(out):
            raise MaskError("mask_union: the masks cover different parameters")
        for n in out:
            out[n] |= m[n]
    return out


def task_specific(mask: dict[str, torch.Tensor], others: Sequence[dict[str, torch.Tensor]]
                  ) -> dict[str, torch.Tensor]:
    """The task-specific part of a module: ``mask AND NOT (union of others)``."""
    if not others:
        return {n: t.clone() for n, t in mask.items()}
    union = mask_union(list(others))
    if set(union) != set(mask):
        raise MaskError("task_specific: the masks cover different parameters")
    return {n: mask[n] & ~union[n] for n in mask}


def selective_partners(info: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """For every run key, the runs whose union is removed from its module for the selective
    ablation: the *other* tasks of the same family, at the same alpha and seed (all masks of
    one ``evaluate_group`` call come from one checkpoint). Runs whose ``role`` is not ``task``
    (complement and reference masks) neither get nor give a union."""
    out = {}
    task = lambda i: i.get("role", "task") == "task"  # noqa: E731
    for key, me in info.items():
        out[key] = sorted(k for k, o in info.items()
                          if k != key and o["family"] == me["family"] and o["task"] != me["task"]
                          and o["seed"] == me["seed"] and float(o["alpha"]) == float(me["alpha"])
                          and task(o)) if task(me) else []
    return out


def evaluate_group(model: nn.Module, masks: dict[str, dict[str, torch.Tensor]],
                   sets: dict[str, tuple[Split, Split]], *,
                   info: dict[str, dict[str, Any]] | None = None, batch_size: int = 64,
                   tol: float = 1e-4, degenerate_max: float = 0.5,
                   device: torch.device | str | None = None, precision: str = "fp32",
                   plan: dict[str, dict[str, set[tuple[str, str]]]] | None = None):
    """The ablation matrix of one checkpoint's masks, as an ``xarray.Dataset``.

    ``masks``: run key -> mask (bool tensors per parameter, the same parameters for all);
    ``sets``: eval-set name -> (select split = val, report split = test); ``info``: run key ->
    {"task", "family", "seed", "alpha"} (for the selective ablation; without it, or for a run
    with no partner, ``selective`` is NaN). Variants: ``mask`` (model * mask), ``inverted``
    (model * (1 - mask): the module removed), ``selective`` (the task-specific part removed:
    model * (1 - (mask AND NOT union of the same family's other tasks' masks, same alpha and
    seed))). Variables over (mask, variant, eval_set, split): ``accuracy`` (percent; NaN where
    the variant is degenerate on more than ``degenerate_max`` of the problems: such a number
    is the share of answers at index 0, not an accuracy), ``accuracy_raw`` (as measured),
    ``degenerate`` (fraction of problems with constant logits), ``n_problems``; over
    (eval_set, split): ``full_accuracy`` and ``full_degenerate`` of the unmasked model; over
    (mask, variant): ``kept`` (weights the variant keeps of the masked ones, percent).
    ``plan``: run key -> variant -> the (eval set, split) pairs to evaluate (others stay NaN,
    ``n_problems`` 0); None: every variant on every set and split. ``info`` may mark a run's
    ``role`` (``task``, ``complement``, ``reference``): only task runs enter selective unions.

    The same numbers in parts (e.g. one per worker): :func:`evaluate_part` for some masks and
    sets, :func:`merge_parts` into the Dataset (byte-identical to the one call).
    """
    part = evaluate_part(model, masks, sets, info=info, batch_size=batch_size, tol=tol,
                         device=device, precision=precision, plan=plan)
    return merge_parts([part], list(masks), list(sets), tol=tol, degenerate_max=degenerate_max)


def evaluate_part(model: nn.Module, masks: dict[str, dict[str, torch.Tensor]],
                  sets: dict[str, tuple[Split, Split]], *,
                  info: dict[str, dict[str, Any]] | None = None, batch_size: int = 64,
                  tol: float = 1e-4, device: torch.device | str | None = None,
                  precision: str = "fp32",
                  plan: dict[str, dict[str, set[tuple[str, str]]]] | None = None,
                  only: Sequence[str] | None = None, full_sets: Sequence[str] | None = None
                  ) -> dict[str, Any]:
    """Part of :func:`evaluate_group`'s matrix: the masks ``only`` (None: all; the others'
    masks still form the selective unions) on their planned pairs of ``sets`` (which need
    hold only those), and the unmasked model on ``full_sets`` (None: all of ``sets``).
    Returns plain arrays keyed by mask and set name (picklable; :func:`merge_parts`)."""
    masked = _masked_model(model, masks, device, precision)
    partners = selective_partners(info) if info is not None else {}
    todo = list(masks) if only is None else only
    if plan is not None:  # a part given fewer sets than its masks' plan names would skip pairs
        lacking = sorted({name for k in todo for pairs in plan.get(k, {}).values()
                          for name, _ in pairs} - set(sets))
        if lacking:
            raise MaskError(f"evaluate_group: the plan names sets not given: {lacking[:3]}")

    def run(forward: Callable[[torch.Tensor], torch.Tensor], data: Split) -> Measure:
        return measure(forward, data, tol=tol, batch_size=batch_size, device=masked.device)

    full = {name: _full_row(masked, sets[name], run)
            for name in (list(sets) if full_sets is None else full_sets)}
    rows = {k: _mask_row(masked, masks, k, partners.get(k, []), sets,
                         None if plan is None else plan.get(k, {}), run) for k in todo}
    return {"rows": rows, "full": full}


def _masked_model(model: nn.Module, masks: dict[str, dict[str, torch.Tensor]],
                  device: torch.device | str | None, precision: str) -> MaskedModel:
    """The masked model of ``masks``, checked: at least one mask, all over the same
    parameters, each a bool tensor of its parameter's shape."""
    if not masks:
        raise MaskError("evaluate_group: no masks given")
    keys = list(masks)
    names = list(masks[keys[0]])
    for k in keys:
        if list(masks[k]) != names:
            raise MaskError(f"evaluate_group: mask {k!r} covers other parameters than {keys[0]!r}")
    masked = MaskedModel(model, names=names, device=device, precision=precision)
    for k in keys:
        for n, s in zip(names, masked.shapes):
            if tuple(masks[k][n].shape) != s or masks[k][n].dtype != torch.bool:
                raise MaskError(f"evaluate_group: mask {k!r}[{n!r}] is not a bool tensor of "
                                f"shape {s}")
    return masked


def _full_row(masked: MaskedModel, pair: tuple[Split, Split], run: Run) -> dict[str, np.ndarray]:
    """Accuracy and degenerate fraction of the unmasked model on one eval set, per split."""
    acc, deg = np.full(len(SPLITS), np.nan), np.full(len(SPLITS), np.nan)
    for s in range(len(SPLITS)):
        m = run(masked.forward_fn(None), pair[s])
        acc[s], deg[s] = m.accuracy, m.degenerate
    return {"acc": acc, "deg": deg}


def _mask_row(masked: MaskedModel, masks: dict[str, dict[str, torch.Tensor]], key: str,
              partners: Sequence[str], sets: dict[str, tuple[Split, Split]],
              plan: dict[str, set[tuple[str, str]]] | None, run: Run) -> dict[str, Any]:
    """One mask's row of the matrix: its variants (the selective one when it has
    ``partners``) on the pairs of ``sets`` its ``plan`` names (None: all), and the percent of
    the masked weights each variant keeps."""
    mask = masks[key]
    shape = (len(VARIANTS), len(sets), len(SPLITS))
    row = {"acc": np.full(shape, np.nan), "deg": np.full(shape, np.nan),
           "n": np.zeros(shape, np.int64), "kept": np.full(len(VARIANTS), np.nan),
           "sets": list(sets)}
    variants: dict[str, tuple[dict[str, torch.Tensor], bool]] = {
        "mask": (mask, False), "inverted": (mask, True)}
    if partners:
        variants["selective"] = (task_specific(mask, [masks[p] for p in partners]), True)
    total = masked.numel
    for v, (mk, invert) in variants.items():
        j = VARIANTS.index(v)
        on = sum(int(t.sum()) for t in mk.values())
        row["kept"][j] = 100.0 * ((total - on) if invert else on) / total
        todo = None if plan is None else plan.get(v, set())
        for e, name in enumerate(sets):
            for s, split in enumerate(SPLITS):
                if todo is not None and (name, split) not in todo:
                    continue
                m = run(masked.forward_fn(mk, invert), sets[name][s])
                row["acc"][j, e, s], row["deg"][j, e, s], row["n"][j, e, s] = (
                    m.accuracy, m.degenerate, m.n_problems)
    return row


def merge_parts(parts: Sequence[dict[str, Any]], keys: Sequence[str], set_names: Sequence[str],
                *, tol: float = 1e-4, degenerate_max: float = 0.5) -> xr.Dataset:
    """The :func:`evaluate_group` Dataset from parts that cover every mask of ``keys`` and
    every set of ``set_names`` once (a mask or set given twice, or missing, is an error)."""
    shape = (len(keys), len(VARIANTS), len(set_names), len(SPLITS))
    acc, deg, n_prob = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, np.int64)
    kept = np.full(shape[:2], np.nan)
    full_acc = np.full(shape[2:], np.nan)
    full_deg = np.full(shape[2:], np.nan)
    seen_rows: set[str] = set()
    seen_full: set[str] = set()
    for part in parts:
        for k, row in part["rows"].items():
            if k in seen_rows or k not in keys:
                raise MaskError(f"merge_parts: mask {k!r} given twice or not in the group")
            seen_rows.add(k)
            i = list(keys).index(k)
            kept[i] = row["kept"]
            for e_part, name in enumerate(row["sets"]):
                e = list(set_names).index(name)
                acc[i, :, e], deg[i, :, e], n_prob[i, :, e] = (
                    row["acc"][:, e_part], row["deg"][:, e_part], row["n"][:, e_part])
        for name, f in part["full"].items():
            if name in seen_full or name not in set_names:
                raise MaskError(f"merge_parts: set {name!r} given twice or not in the group")
            seen_full.add(name)
            e = list(set_names).index(name)
            full_acc[e], full_deg[e] = f["acc"], f["deg"]
    missing = [k for k in keys if k not in seen_rows] + [s for s in set_names
                                                         if s not in seen_full]
    if missing:
        raise MaskError(f"merge_parts: no part evaluated {missing[:3]}")
    return evals.dataset(keys, set_names, acc, deg, n_prob, kept, full_acc, full_deg,
                         tol=tol, degenerate_max=degenerate_max)


def relative_drop(reference: float, ablated: float) -> float:
    """Csordas et al.'s complement-protocol measure: ``(reference - ablated) / reference``,
    the share of the reference accuracy lost (e.g. reference mask on all data vs the mask
    trained on all but task k, both evaluated on task k). NaN when the reference is 0."""
    return float("nan") if reference == 0 else (reference - ablated) / reference
