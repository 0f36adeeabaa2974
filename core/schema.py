"""The four metric datasets (``modules.nc``, ``layers.nc``, ``sharing.nc``, ``curves.nc``).

This module is the single definition of their dims, coordinates and variables (with ``units``
and ``long_name``), shared by the writer (:mod:`core.metrics`), the figures and the paper.

* :data:`SCHEMA` - per file: title, dims, coords and data variables (:class:`Var` specs).
* :func:`finalize` - order a dataset's variables and stamp attrs/encodings from the spec.
* :func:`validate` - raise :class:`SchemaError` naming what is missing or wrong.
* :func:`synthetic` - small, realistic-looking datasets with exactly this schema, for tests of
  code that reads the metric files (figures, paper numbers) without training anything.

Conventions: percentages are in ``percent`` (0-100), counts and ratios in ``1``; a value that
does not exist (a mask run that was not made, e.g. the alpha sweep only runs at the last
checkpoint with the first seed) is NaN. Seed is always a dimension: means and confidence
intervals are computed at read time (:func:`core.metrics.mean_ci`), never stored instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

CONVENTIONS = "CF-1.10"
REFERENCES = (
    "Tracking Functional Module Development in Abstract Visual Reasoning Networks (original "
    "study); Wu et al. 2020, The Scattering Compositional Learner; Csordas et al. 2021, Are "
    "Neural Nets Modular? Inspecting Functional Modularity Through Differentiable Weight Masks"
)
FILES = ("modules", "layers", "sharing", "curves")


class SchemaError(ValueError):
    """A dataset does not match :data:`SCHEMA`; the message names the file and the variable."""


@dataclass(frozen=True)
class Var:
    """One coordinate or data variable: its dims, dtype, units, long_name and a description."""

    dims: tuple[str, ...]
    units: str
    long_name: str
    dtype: str = "float64"  # "float64" (NaN = missing), "int64", "str"
    description: str = ""


# ---------------------------------------------------------------- shared coordinate specs

_CKPT = {
    "checkpoint": Var(("checkpoint",), "1", "SCL checkpoint", "str",
                      "name of the checkpoint, e.g. scl_90 (kept when validation accuracy "
                      "first reached the milestone)"),
    "milestone": Var(("checkpoint",), "percent", "validation-accuracy milestone of checkpoint"),
    "ckpt_val_acc": Var(("checkpoint",), "percent", "validation accuracy at checkpoint",
                        description="first logged validation accuracy >= milestone "
                                    "(NaN when the training log never reached it)"),
    "ckpt_step": Var(("checkpoint",), "1", "training step of checkpoint",
                     description="first validation step whose accuracy reached the milestone"),
}
_TASK = {"task": Var(("task",), "1", "shape task of the module", "str")}
_ALPHA = {"alpha": Var(("alpha",), "1", "mask regularisation strength alpha",
                       description="weight of the sum of mask logits in the mask loss")}
_SEED = {"seed": Var(("seed",), "1", "mask-training seed", "int64")}
_PARAM = {
    "param": Var(("param",), "1", "masked parameter", "str"),
    "subnet": Var(("param",), "1", "SCL sub-network of the parameter", "str",
                  "one of vision, attribute, ff_residual, relation, logit (name prefix)"),
    "param_size": Var(("param",), "1", "number of entries of the parameter", "int64"),
    "param_shape": Var(("param",), "1", "shape of the parameter", "str", "e.g. 16x1x3x3"),
}

_M4 = ("checkpoint", "task", "alpha", "seed")
_DISP = ("per-tensor total variance of the indices of kept entries over the squared norm of "
         "their mean index, 0 for tensors with no kept entry (or a mean index of 0), averaged "
         "over all masked tensors (the original study's definition)")
_DISP_RAND = ("expected dispersity of uniformly random masks with the same number of kept "
              "entries per tensor: per tensor the mean over metrics.dispersity_samples random "
              "masks (sampled; the analytic ratio of expectations when it is 0)")
_DISP_NORM = "dispersity / dispersity_random: 1 means as spread as a random mask"
_SPEC = ("after shared-weight removal: mask AND NOT (AND of the masks of all tasks at the same "
         "checkpoint, alpha and seed); NaN when some task has no mask there")
_ACC = {
    "acc_task": "task accuracy of model * mask",
    "acc_not_task": "not-task accuracy of model * mask",
    "acc_task_inverted": "task accuracy of model * (1 - mask)",
    "acc_not_task_inverted": "not-task accuracy of model * (1 - mask)",
    "acc_task_full": "task accuracy of the unmasked model",
    "acc_not_task_full": "not-task accuracy of the unmasked model",
}

SCHEMA: dict[str, dict] = {
    "modules": {
        "title": "Functional-module scalars per checkpoint, task, alpha and seed",
        "dims": ("checkpoint", "task", "alpha", "seed", "other_seed"),
        "coords": {**_CKPT, **_TASK, **_ALPHA, **_SEED,
                   "other_seed": Var(("other_seed",), "1", "second seed of a seed pair",
                                     "int64")},
        "vars": {
            "n_masked": Var((), "1", "number of masked weights (entries of all masked tensors)"),
            "sparsity": Var(_M4, "percent", "module sparsity",
                            description="100 * zeros / entries over all masked tensors"),
            "density": Var(_M4, "percent", "module density", description="100 - sparsity"),
            "n_kept": Var(_M4, "1", "number of kept weights"),
            "dispersity": Var(_M4, "1", "module dispersity", description=_DISP),
            "dispersity_random": Var(_M4, "1", "dispersity of a random mask of equal density",
                                     description=_DISP_RAND),
            "dispersity_norm": Var(_M4, "1", "random-normalised dispersity",
                                   description=_DISP_NORM),
            "n_kept_specific": Var(_M4, "1", "number of task-specific kept weights",
                                   description=_SPEC),
            "sparsity_specific": Var(_M4, "percent", "sparsity of the task-specific module",
                                     description=_SPEC),
            "dispersity_specific": Var(_M4, "1", "dispersity of the task-specific module",
                                       description=_SPEC),
            "dispersity_specific_norm": Var(_M4, "1",
                                            "random-normalised dispersity of the task-"
                                            "specific module", description=_SPEC),
            **{k: Var(_M4, "percent", v, description="from the mask file; NaN where the run "
                                                      "does not exist")
               for k, v in _ACC.items()},
            "seed_iou": Var(("checkpoint", "task", "alpha", "seed", "other_seed"), "percent",
                            "IoU of the masks of two seeds",
                            description="100 * |A and B| / |A or B| between the masks of seed "
                                        "and other_seed of one setting (diagonal 100)"),
            "alpha_ok": Var(("checkpoint", "task", "alpha"), "1",
                            "alpha meets the selection rule for the task",
                            description="1 when the seed-mean masked task accuracy is within "
                                        "metrics.alpha_tolerance points of the unmasked model "
                                        "and at least metrics.alpha_min_seeds seeds exist, "
                                        "0 otherwise, NaN when no run exists"),
            "selected_alpha": Var(("checkpoint",), "1", "selected alpha of the checkpoint",
                                  description="largest alpha with alpha_ok = 1 for every task "
                                              "(fallback: the candidate alpha with the best "
                                              "worst-task accuracy margin); sharing.nc and the "
                                              "mask snapshots use it"),
        },
    },
    "layers": {
        "title": "Per-parameter distribution of functional modules",
        "dims": ("checkpoint", "task", "alpha", "seed", "param"),
        "coords": {**_CKPT, **_TASK, **_ALPHA, **_SEED, **_PARAM},
        "vars": {
            "kept": Var(_M4 + ("param",), "1", "kept weights in the parameter"),
            "density": Var(_M4 + ("param",), "percent", "density of the parameter's mask",
                           description="100 * kept / param_size"),
            "share": Var(_M4 + ("param",), "percent", "parameter's share of the module",
                         description="100 * kept in this parameter / kept in the whole mask "
                                     "(spatial distribution)"),
            "kept_specific": Var(_M4 + ("param",), "1",
                                 "task-specific kept weights in the parameter",
                                 description=_SPEC),
            "share_specific": Var(_M4 + ("param",), "percent",
                                  "parameter's share of the task-specific module",
                                  description=_SPEC),
        },
    },
    "sharing": {
        "title": "Weight sharing between shape modules at the selected alpha",
        "dims": ("checkpoint", "task", "other_task", "seed"),
        "coords": {**_CKPT, **_TASK, **_SEED,
                   "other_task": Var(("other_task",), "1", "second shape task of a pair", "str"),
                   "alpha": Var(("checkpoint",), "1", "alpha of the compared masks",
                                description="selected_alpha of modules.nc")},
        "vars": {
            "iomin": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                         "intersection over minimum",
                         description="100 * |A and B| / min(|A|, |B|)"),
            "iou": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                       "intersection over union", description="100 * |A and B| / |A or B|"),
            "iomin_chance": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                                "chance IoMin (per-tensor densities, analytic)",
                                description="expected IoMin of independent uniformly random "
                                            "masks with the same kept count per tensor"),
            "iou_chance": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                              "chance IoU (per-tensor densities, analytic)",
                              description="expected intersection / (|A| + |B| - expected "
                                          "intersection), same random masks"),
            "iomin_chance_global": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                                       "chance IoMin (global densities, analytic)",
                                       description="100 * max(p, q) for random masks of "
                                                   "densities p, q over all masked weights"),
            "iomin_chance_upper": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                                      "upper quantile of chance IoMin (sampled)",
                                      description="metrics.ci quantile over "
                                                  "metrics.chance_samples random-mask pairs "
                                                  "(hypergeometric per-tensor intersections); "
                                                  "NaN when chance_samples is 0"),
            "iou_chance_upper": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                                    "upper quantile of chance IoU (sampled)",
                                    description="as iomin_chance_upper"),
            "iomin_specific": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                                  "IoMin of the task-specific modules", description=_SPEC),
            "iou_specific": Var(("checkpoint", "task", "other_task", "seed"), "percent",
                                "IoU of the task-specific modules", description=_SPEC),
            "n_shared": Var(("checkpoint", "seed"), "1", "weights kept by every task's module"),
        },
    },
    "curves": {
        "title": "Mask-training curves, SCL training curves and mask-evolution snapshots",
        "dims": ("checkpoint", "task", "alpha", "seed", "mask_step", "train_step", "val_step",
                 "snap_step", "snap_row", "snap_col"),
        "coords": {**_CKPT, **_TASK, **_ALPHA, **_SEED,
                   "mask_step": Var(("mask_step",), "1", "mask-training step", "int64"),
                   "train_step": Var(("train_step",), "1", "SCL training step", "int64"),
                   "val_step": Var(("val_step",), "1", "SCL training step of a validation",
                                   "int64"),
                   "snap_step": Var(("snap_step",), "1", "mask-training step of a snapshot",
                                    "int64"),
                   "snap_row": Var(("snap_row",), "1", "row of the snapshot parameter's 2-D "
                                   "view", "int64", "first dimension of the parameter"),
                   "snap_col": Var(("snap_col",), "1", "column of the snapshot parameter's "
                                   "2-D view", "int64", "all other dimensions, flattened"),
                   "snap_alpha": Var(("checkpoint",), "1", "alpha of the snapshots",
                                     description="selected_alpha of modules.nc")},
        "vars": {
            "loss": Var(_M4 + ("mask_step",), "1", "mask-training loss",
                        description="task cross-entropy + alpha * sum of mask logits"),
            "acc_task": Var(_M4 + ("mask_step",), "percent",
                            "task accuracy of model * read-out mask during mask training"),
            "acc_task_inverted": Var(_M4 + ("mask_step",), "percent",
                                     "task accuracy of model * (1 - read-out mask) during mask "
                                     "training"),
            "density": Var(_M4 + ("mask_step",), "percent",
                           "read-out mask density during mask training"),
            "train_loss": Var(("train_step",), "1", "SCL training loss (cross-entropy)"),
            "train_acc": Var(("train_step",), "percent", "SCL training accuracy"),
            "epoch": Var(("train_step",), "1", "SCL training epoch of the step"),
            "val_acc": Var(("val_step",), "percent", "SCL validation accuracy"),
            "val_epoch": Var(("val_step",), "1", "SCL training epoch of a validation",
                             description="NaN when the training log does not record it"),
            "keep_prob": Var(("checkpoint", "task", "snap_step", "snap_row", "snap_col"), "1",
                             "keep probability sigmoid(logits) of the snapshot parameter",
                             description="seed snapshot_seed at snap_alpha; parameter in the "
                                         "attribute snapshot_param; NaN outside its shape"),
        },
    },
}


# ---------------------------------------------------------------- finalize / validate


def global_attrs(name: str, source: str, extra: dict[str, str] | None = None) -> dict:
    """CF global attrs of file ``name`` (no timestamps: same inputs give the same bytes)."""
    attrs = {"Conventions": CONVENTIONS, "title": SCHEMA[name]["title"], "source": source,
             "references": REFERENCES}
    attrs.update(extra or {})
    return attrs


def _spec_attrs(v: Var) -> dict[str, str]:
    attrs = {"units": v.units, "long_name": v.long_name}
    if v.description:
        attrs["description"] = v.description
    return attrs


def finalize(ds: xr.Dataset, name: str, source: str, extra: dict[str, str] | None = None
             ) -> xr.Dataset:
    """Cast, order and annotate ``ds`` as file ``name`` of :data:`SCHEMA`, then validate it.

    Coords and variables are put in schema order with the schema's dtype, units, long_name and
    description, and a fixed netCDF encoding (no compression, NaN fill for floats, none for
    coordinates), so writing equal datasets gives equal bytes.
    """
    spec = SCHEMA[name]
    out = xr.Dataset(attrs=global_attrs(name, source, extra))
    for key, v in {**spec["coords"], **spec["vars"]}.items():
        if key not in ds.variables:
            raise SchemaError(f"{name}.nc: variable {key!r} missing (expected dims {v.dims})")
        da = ds[key].transpose(*v.dims) if v.dims else ds[key]
        values = np.asarray(da.values)
        values = values.astype(str if v.dtype == "str" else v.dtype).astype(
            object if v.dtype == "str" else v.dtype)
        encoding: dict = {"zlib": False}
        if v.dtype == "float64" and key not in spec["coords"]:
            encoding["_FillValue"] = np.nan
        else:
            encoding["_FillValue"] = None
        if v.dtype == "str":
            encoding = {"_FillValue": None, "dtype": str}
        var = xr.Variable(v.dims, values, attrs=_spec_attrs(v), encoding=encoding)
        if key in spec["coords"]:
            out = out.assign_coords({key: var})
        else:
            out[key] = var
    validate(out, name)
    return out


def validate(ds: xr.Dataset, name: str) -> xr.Dataset:
    """Check ``ds`` against file ``name`` of :data:`SCHEMA`; raise :class:`SchemaError` naming
    the first missing or malformed dim, coordinate, variable or attribute. Returns ``ds``."""
    if name not in SCHEMA:
        raise SchemaError(f"unknown metrics file {name!r} (expected one of {', '.join(FILES)})")
    spec = SCHEMA[name]
    for dim in spec["dims"]:
        if dim not in ds.dims:
            raise SchemaError(f"{name}.nc: dimension {dim!r} missing "
                              f"(expected dims {', '.join(spec['dims'])})")
    for attr in ("Conventions", "title", "source", "references"):
        if attr not in ds.attrs:
            raise SchemaError(f"{name}.nc: global attribute {attr!r} missing")
    for key, v in {**spec["coords"], **spec["vars"]}.items():
        kind = "coordinate" if key in spec["coords"] else "variable"
        if key not in ds.variables:
            raise SchemaError(f"{name}.nc: {kind} {key!r} missing ({v.long_name}; "
                              f"expected dims {v.dims})")
        if kind == "coordinate" and key not in ds.coords:
            raise SchemaError(f"{name}.nc: {key!r} is a data variable, expected a coordinate")
        if tuple(ds[key].dims) != v.dims:
            raise SchemaError(f"{name}.nc: {kind} {key!r} has dims {tuple(ds[key].dims)}, "
                              f"expected {v.dims}")
        for attr in ("units", "long_name"):
            if ds[key].attrs.get(attr) != getattr(v, attr):
                raise SchemaError(f"{name}.nc: {kind} {key!r} attribute {attr!r} is "
                                  f"{ds[key].attrs.get(attr)!r}, expected {getattr(v, attr)!r}")
    return ds


def open_metrics(directory: str, name: str) -> xr.Dataset:
    """Open ``<directory>/<name>.nc`` (loaded into memory, file closed) and validate it."""
    import os

    path = os.path.join(directory, f"{name}.nc")
    if not os.path.exists(path):
        raise SchemaError(f"{path}: file not found (expected the {name} metrics written by "
                          "`python -m core.metrics`)")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, ValueError) as err:
        raise SchemaError(f"{path}: cannot be read as netCDF: {err}") from None
    try:
        return validate(ds, name)
    except SchemaError as err:
        raise SchemaError(f"{path}: {err}") from None


# ---------------------------------------------------------------- synthetic datasets

_SYN_PARAMS = (
    ("vision.conv.0.weight", (16, 1, 3, 3)), ("vision.conv.0.bias", (16,)),
    ("vision.conv.1.weight", (16, 16, 3, 3)), ("vision.fc.weight", (80, 32)),
    ("attribute.mlp.0.weight", (128, 8)), ("attribute.mlp.1.weight", (8, 128)),
    ("ff_residual.0.weight", (32, 80)), ("ff_residual.1.weight", (80, 32)),
    ("relation.mlp.0.weight", (64, 24)), ("relation.mlp.2.weight", (5, 32)),
    ("logit.weight", (1, 80)), ("logit.bias", (1,)),
)


def synthetic(checkpoints=("scl_50", "scl_70", "scl_90"), milestones=(50.0, 70.0, 90.0),
              tasks=("circle", "triangle", "square", "pentagon", "hexagon"),
              alpha=1e-5, alpha_sweep=(1e-6, 1e-5, 1e-4), seeds=(0, 1, 2),
              mask_steps=13, train_steps=40, val_steps=10, snap_steps=4, rng_seed=0,
              source="synthetic") -> dict[str, xr.Dataset]:
    """Small datasets with exactly the schema of the four files, for tests of their readers.

    The layout mimics the real one: every checkpoint x task x seed at ``alpha``, the alpha
    sweep only at the last checkpoint with the first seed (NaN elsewhere). Values are random
    but plausible (sparsity grows and dispersity falls over checkpoints). Deterministic in
    ``rng_seed``. Not results: nothing here is computed from masks.
    """
    rng = np.random.default_rng(rng_seed)
    ck, tk = list(checkpoints), list(tasks)
    alphas = sorted({float(alpha), *map(float, alpha_sweep)})
    sd = [int(s) for s in seeds]
    nC, nT, nA, nS = len(ck), len(tk), len(alphas), len(sd)
    exists = np.zeros((nC, nT, nA, nS), bool)
    exists[:, :, alphas.index(float(alpha)), :] = True
    for a in alpha_sweep:
        exists[-1, :, alphas.index(float(a)), 0] = True
    prog = np.linspace(0, 1, nC)[:, None, None, None]
    alog = (np.log10(alphas) - np.log10(alpha))[None, None, :, None]

    def field(base, scale, noise):
        v = base + scale + noise * rng.standard_normal((nC, nT, nA, nS))
        return np.where(exists, v, np.nan)

    sparsity = np.clip(field(65 + 29 * prog, 3 * alog, 1.5), 0, 100)
    n_masked = float(sum(int(np.prod(s)) for _, s in _SYN_PARAMS))
    n_kept = np.round(n_masked * (100 - sparsity) / 100)
    disp = np.clip(field(0.32 - 0.08 * prog, 0 * alog, 0.01), 0, None)
    disp_rand = np.where(exists, 0.33, np.nan)
    acc_full = np.where(exists, 50 + 40 * prog + 0 * alog, np.nan)
    acc_task = np.clip(acc_full - np.abs(field(1, 2 * np.maximum(alog, 0), 1)), 0, 100)
    ckc = {"checkpoint": ck, "milestone": ("checkpoint", list(milestones)),
           "ckpt_val_acc": ("checkpoint", [m + 0.5 for m in milestones]),
           "ckpt_step": ("checkpoint", [(i + 1) * train_steps // (nC + 1) for i in range(nC)])}
    base = {**ckc, "task": tk, "alpha": alphas, "seed": sd}
    m4 = ("checkpoint", "task", "alpha", "seed")
    seed_iou = np.where(exists[..., None] & exists[..., None, :],
                        np.clip(70 + 5 * rng.standard_normal((nC, nT, nA, nS, nS)), 0, 100),
                        np.nan)
    for i in range(nS):
        seed_iou[..., i, i] = np.where(exists[..., i], 100.0, np.nan)
    ok = np.where(exists.any(-1), (np.asarray(alphas) <= alpha)[None, None, :] * 1.0, np.nan)
    spec_sp = np.clip(sparsity + 3, 0, 100)
    modules = xr.Dataset(
        {"n_masked": ((), n_masked), "sparsity": (m4, sparsity), "density": (m4, 100 - sparsity),
         "n_kept": (m4, n_kept), "dispersity": (m4, disp), "dispersity_random": (m4, disp_rand),
         "dispersity_norm": (m4, disp / disp_rand),
         "n_kept_specific": (m4, np.round(n_masked * (100 - spec_sp) / 100)),
         "sparsity_specific": (m4, spec_sp), "dispersity_specific": (m4, disp * 1.1),
         "dispersity_specific_norm": (m4, disp * 1.1 / disp_rand),
         "acc_task": (m4, acc_task), "acc_not_task": (m4, acc_task - 5),
         "acc_task_inverted": (m4, np.where(exists, 12.5 + 5 * rng.random(exists.shape), np.nan)),
         "acc_not_task_inverted": (m4, np.where(exists, 30 + 5 * rng.random(exists.shape),
                                                np.nan)),
         "acc_task_full": (m4, acc_full), "acc_not_task_full": (m4, acc_full - 3),
         "seed_iou": (m4 + ("other_seed",), seed_iou),
         "alpha_ok": (("checkpoint", "task", "alpha"), ok),
         "selected_alpha": (("checkpoint",), np.full(nC, float(alpha)))},
        coords={**base, "other_seed": sd})

    names = [n for n, _ in _SYN_PARAMS]
    sizes = np.array([int(np.prod(s)) for _, s in _SYN_PARAMS])
    w = rng.dirichlet(np.ones(len(names)), size=(nC, nT, nA, nS))
    kept = np.minimum(np.round(n_kept[..., None] * w), sizes)
    kept = np.where(exists[..., None], kept, np.nan)
    tot = kept.sum(-1, keepdims=True)
    kept_s = np.floor(kept * 0.8)
    m5 = m4 + ("param",)
    layers = xr.Dataset(
        {"kept": (m5, kept), "density": (m5, 100 * kept / sizes),
         "share": (m5, 100 * kept / np.where(tot > 0, tot, np.nan)),
         "kept_specific": (m5, kept_s),
         "share_specific": (m5, 100 * kept_s / kept_s.sum(-1, keepdims=True))},
        coords={**base, "param": names, "subnet": ("param", [n.split(".")[0] for n in names]),
                "param_size": ("param", sizes),
                "param_shape": ("param", ["x".join(map(str, s)) for _, s in _SYN_PARAMS])})

    ai = alphas.index(float(alpha))
    dens = (100 - sparsity[:, :, ai, :]) / 100  # (C, T, S)
    p, q = dens[:, :, None, :], dens[:, None, :, :]
    chance = 100 * np.maximum(p, q)
    iomin = np.clip(chance + 30 + 5 * rng.standard_normal(chance.shape), 0, 100)
    for i in range(nT):
        iomin[:, i, i, :] = 100.0
    iou = iomin * np.minimum(p, q) / (p + q - iomin / 100 * np.minimum(p, q))
    s4 = ("checkpoint", "task", "other_task", "seed")
    sharing = xr.Dataset(
        {"iomin": (s4, iomin), "iou": (s4, iou), "iomin_chance": (s4, chance),
         "iou_chance": (s4, 100 * p * q / (p + q - p * q)), "iomin_chance_global": (s4, chance),
         "iomin_chance_upper": (s4, chance + 0.5),
         "iou_chance_upper": (s4, 100 * p * q / (p + q - p * q) + 0.5),
         "iomin_specific": (s4, iomin * 0.5), "iou_specific": (s4, iou * 0.5),
         "n_shared": (("checkpoint", "seed"), np.round(n_masked * dens.min(1) * 0.5))},
        coords={**ckc, "task": tk, "other_task": tk, "seed": sd,
                "alpha": ("checkpoint", np.full(nC, float(alpha)))})

    ms = np.arange(mask_steps) * 25
    decay = np.exp(-ms / (ms[-1] + 1) * 3)[None, None, None, None, :]
    e5 = exists[..., None]
    snap_shape = _SYN_PARAMS[2][1]
    rows, cols = snap_shape[0], int(np.prod(snap_shape[1:]))
    snap = rng.random((nC, nT, snap_steps, rows, cols))
    snap = snap ** (1 + np.arange(snap_steps)[None, None, :, None, None])
    ts = np.arange(train_steps) * 10
    vs = np.linspace(0, ts[-1], val_steps).astype(int)
    curves = xr.Dataset(
        {"loss": (m4 + ("mask_step",), np.where(e5, 2 * decay + 0.3, np.nan)),
         "acc_task": (m4 + ("mask_step",), np.where(e5, acc_task[..., None] * (1 - decay / 2),
                                                     np.nan)),
         "acc_task_inverted": (m4 + ("mask_step",), np.where(e5, 12.5 + 60 * decay, np.nan)),
         "density": (m4 + ("mask_step",), np.where(
             e5, (100 - sparsity[..., None]) + (100 - (100 - sparsity[..., None])) * decay,
             np.nan)),
         "train_loss": (("train_step",), 2.08 * np.exp(-ts / ts[-1] * 2)),
         "train_acc": (("train_step",), 12.5 + 80 * (1 - np.exp(-ts / ts[-1] * 2))),
         "epoch": (("train_step",), ts / ts[-1] * 2.0),
         "val_acc": (("val_step",), 12.5 + 80 * (1 - np.exp(-vs / ts[-1] * 2))),
         "val_epoch": (("val_step",), np.floor(vs / ts[-1] * 2.0)),
         "keep_prob": (("checkpoint", "task", "snap_step", "snap_row", "snap_col"), snap)},
        coords={**base, "mask_step": ms, "train_step": ts, "val_step": vs,
                "snap_step": np.linspace(0, ms[-1], snap_steps).astype(int),
                "snap_row": np.arange(rows), "snap_col": np.arange(cols),
                "snap_alpha": ("checkpoint", np.full(nC, float(alpha)))})
    extra = {"curves": {"snapshot_param": _SYN_PARAMS[2][0], "snapshot_seed": str(sd[0])}}
    raw = {"modules": modules, "layers": layers, "sharing": sharing, "curves": curves}
    return {k: finalize(v, k, source, extra.get(k)) for k, v in raw.items()}
