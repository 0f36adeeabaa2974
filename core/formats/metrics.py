"""The metric datasets (``modules``, ``layers``, ``sharing``, ``ablation``, ``curves``.nc).

This module is the single definition of their dims, coordinates and variables (with ``units``
and ``long_name``), shared by the writer (:mod:`core.metrics`), the figures and the paper.

* :data:`SCHEMA` - per file: title, dims, coords and data variables (:class:`Var` specs).
* :func:`finalize` - order a dataset's variables and stamp attrs/encodings from the spec.
* :func:`validate` - raise :class:`SchemaError` naming what is missing or wrong.
* :func:`check_provenance` - refuse files written for another configuration.

Conventions: percentages are in ``percent`` (0-100), counts and ratios in ``1``; a value that
does not exist (a mask run that was not made, e.g. the alpha sweep only runs at the last
checkpoint with the first seed) is NaN. Network and seed are always dimensions: means and
confidence intervals are computed at read time (:mod:`core.stats`), never stored instead.
Every file carries the global attrs ``config_hash`` (:func:`metrics_hash`) and
``profile``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from core.config import Config, config_hash
from core.formats import CONVENTIONS
from core.io import atomic_write_text

REFERENCES = (
    "Tracking Functional Module Development in Abstract Visual Reasoning Networks (original "
    "study); Wu et al. 2020, The Scattering Compositional Learner; Csordas et al. 2021, Are "
    "Neural Nets Modular? Inspecting Functional Modularity Through Differentiable Weight Masks"
)
FILES = ("modules", "layers", "sharing", "ablation", "curves")
SUMMARY = "summary.json"  # beside them: per checkpoint and family, the verdicts (core.metrics)
PROVENANCE = ("config_hash", "profile")


def metrics_hash(cfg: Config) -> str:
    """The provenance hash of metric files: :func:`core.config.config_hash` over every section
    except ``figures`` and ``paper`` (figure and PDF settings cannot change a metric, and the
    figures and paper stages read them), so ``dvc exp run -S figures.dpi=...`` or
    ``make repro PAPER=0`` keeps the metrics valid."""
    return config_hash(cfg, [k for k in cfg.to_dict() if k not in ("figures", "paper")])


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

_NET = {"network": Var(("network",), "1", "trained SCL network (its training seed)", "int64",
                       "independently trained networks; CIs are across this dim")}
_CKPT = {
    "checkpoint": Var(("checkpoint",), "1", "SCL checkpoint", "str",
                      "name of the checkpoint, e.g. scl_90 (kept when validation accuracy "
                      "first reached the milestone)"),
    "milestone": Var(("checkpoint",), "percent", "validation-accuracy milestone of checkpoint"),
    "ckpt_val_acc": Var(("network", "checkpoint"), "percent",
                        "validation accuracy at checkpoint",
                        description="achieved validation accuracy of the kept checkpoint, from "
                                    "training.nc (NaN when the log never reached it)"),
    "ckpt_test_acc": Var(("network", "checkpoint"), "percent", "test accuracy at checkpoint",
                         description="from training.nc (NaN when not recorded)"),
    "ckpt_step": Var(("network", "checkpoint"), "1", "training step of checkpoint"),
    "init_seed": Var(("network",), "1", "seed of the network's weight initialisation", "int64",
                     "the network's seed, unless it was re-initialised (from training.nc)"),
    "restarts": Var(("network",), "1", "re-initialisations of the network", "int64",
                    "attempts abandoned at chance (train.restart_after; from training.nc)"),
}
_TASK = {"task": Var(("task",), "1", "task set the mask was trained on", "str"),
         "family": Var(("task",), "1", "task family of the task set", "str",
                       "core.tasks family name, e.g. original, shape_rule, control")}
_ALPHA = {"alpha": Var(("alpha",), "1", "mask regularisation strength alpha",
                       description="weight of the mask-logit regulariser in the mask loss")}
_SEED = {"seed": Var(("seed",), "1", "mask-training seed", "int64")}
_PARAM = {
    "param": Var(("param",), "1", "masked parameter", "str"),
    "subnet": Var(("param",), "1", "SCL sub-network of the parameter", "str",
                  "one of vision, attribute, ff_residual, relation, logit (name prefix)"),
    "param_size": Var(("param",), "1", "number of entries of the parameter", "int64"),
    "param_shape": Var(("param",), "1", "shape of the parameter", "str", "e.g. 16x1x3x3"),
}
_BASE = {**_NET, **_CKPT, **_TASK, **_ALPHA, **_SEED}
_RUN = ("network", "checkpoint", "task", "alpha", "seed")
_PAIR = ("network", "checkpoint", "task", "other_task", "seed", "other_seed")
_EVAL = _RUN + ("variant", "eval_set", "split")

_DISP = ("per-tensor total variance of the indices of kept entries over the squared norm of "
         "their mean index, 0 for tensors with no kept entry (or a mean index of 0), averaged "
         "over all masked tensors (the original study's definition)")
_DISP_RAND = ("expected dispersity of uniformly random masks with the same number of kept "
              "entries per tensor (metrics.dispersity_samples random masks per tensor; the "
              "analytic ratio of expectations when 0)")
_SPEC = ("after shared-weight removal: mask AND NOT (AND of the masks of every task of the "
         "same family at the same network, checkpoint, alpha and seed); NaN when a task of the "
         "family has no mask there")
_PAIRS = ("every pair of masks of one family at the selected alpha: task x other_task x seed "
          "x other_seed; the same-task null is task == other_task, seed != other_seed; NaN "
          "for pairs across families and for a mask with itself")


def _runs(units: str, long_name: str, description: str = "", dims=_RUN) -> Var:
    return Var(dims, units, long_name, description=description)


SCHEMA: dict[str, dict] = {
    "modules": {
        "title": "Functional-module scalars per network, checkpoint, task, alpha and seed",
        "dims": _RUN,
        "coords": _BASE,
        "vars": {
            "n_masked": Var((), "1", "number of masked weights (entries of all masked tensors)"),
            "sparsity": _runs("percent", "module sparsity",
                              "100 * zeros / entries over all masked tensors"),
            "density": _runs("percent", "module density", "100 - sparsity"),
            "n_kept": _runs("1", "number of kept weights"),
            "dispersity": _runs("1", "module dispersity", _DISP),
            "dispersity_random": _runs("1", "dispersity of a random mask of equal density",
                                       _DISP_RAND),
            "dispersity_norm": _runs("1", "random-normalised dispersity",
                                     "dispersity / dispersity_random: 1 = as spread as random"),
            "n_kept_specific": _runs("1", "number of task-specific kept weights", _SPEC),
            "sparsity_specific": _runs("percent", "sparsity of the task-specific module", _SPEC),
            "dispersity_specific_norm": _runs("1", "random-normalised dispersity of the "
                                              "task-specific module", _SPEC),
            "converged": _runs("1", "mask run converged",
                               "1 when read-out density and masked task accuracy each moved "
                               "<= 1 point over the last 20% of logged steps (mask file), 0 "
                               "otherwise, NaN where the run does not exist"),
            "density_change": _runs("percent", "read-out density change over the last 20% of "
                                    "logged steps"),
            "acc_change": _runs("percent", "masked task accuracy change over the last 20% of "
                                "logged steps"),
            "density_change_constant": _runs(
                "percent", "read-out density change per 20% of the steps when the lr anneal "
                "began", "between the last two logged steps before masks.lr_anneal starts: "
                "whether the mask had levelled off before the annealed rate froze it"),
            "acc_select": _runs("percent", "masked accuracy on the own task set, select split",
                                "from evals.nc (variant mask, split select); alpha selection"),
            "acc_report": _runs("percent", "masked accuracy on the own task set, report split",
                                "from evals.nc (variant mask, split report)"),
            "acc_full_select": _runs("percent", "unmasked accuracy on the task set, select "
                                     "split"),
            "acc_full_report": _runs("percent", "unmasked accuracy on the task set, report "
                                     "split"),
            "alpha_ok": Var(("checkpoint", "task", "alpha"), "1",
                            "alpha meets the selection rule for the task",
                            description="1 when the mean (over networks and seeds) masked "
                                        "select-split accuracy is within "
                                        "metrics.alpha_tolerance points of the unmasked model "
                                        "and at least metrics.alpha_min_seeds seeds exist in "
                                        "every network, 0 otherwise, NaN when no run exists"),
            "selected_alpha": Var(("checkpoint",), "1", "selected alpha of the checkpoint",
                                  description="largest alpha with alpha_ok = 1 for every task "
                                              "(fallback: the candidate with the best worst-"
                                              "task margin); sharing, ablation verdicts and "
                                              "snapshots use it"),
        },
    },
    "layers": {
        "title": "Per-parameter distribution of functional modules",
        "dims": _RUN + ("param",),
        "coords": {**_BASE, **_PARAM},
        "vars": {
            "kept": _runs("1", "kept weights in the parameter", dims=_RUN + ("param",)),
            "share": _runs("percent", "parameter's share of the module",
                           "100 * kept in this parameter / kept in the whole mask",
                           dims=_RUN + ("param",)),
            "share_specific": _runs("percent", "parameter's share of the task-specific module",
                                    _SPEC, dims=_RUN + ("param",)),
        },
    },
    "sharing": {
        "title": "Weight sharing between modules, with the same-task and random nulls",
        "dims": _PAIR,
        "coords": {**_NET, **_CKPT, **_TASK, **_SEED,
                   "other_task": Var(("other_task",), "1", "second task of a pair", "str"),
                   "other_seed": Var(("other_seed",), "1", "mask seed of the second mask",
                                     "int64"),
                   "alpha": Var(("checkpoint",), "1", "alpha of the compared masks",
                                description="selected_alpha of modules.nc")},
        "vars": {
            "iomin": _runs("percent", "intersection over minimum",
                           "100 * |A and B| / min(|A|, |B|); " + _PAIRS, dims=_PAIR),
            "iou": _runs("percent", "intersection over union",
                         "100 * |A and B| / |A or B|; " + _PAIRS, dims=_PAIR),
            "iomin_chance": _runs("percent", "chance IoMin (per-tensor densities, analytic)",
                                  "expected IoMin of independent uniformly random masks with "
                                  "the same kept count per tensor", dims=_PAIR),
            "iou_chance": _runs("percent", "chance IoU (per-tensor densities, analytic)",
                                "expected |A and B| / (|A| + |B| - expected |A and B|)",
                                dims=_PAIR),
            "iomin_specific": _runs("percent", "IoMin of the task-specific modules", _SPEC,
                                    dims=_PAIR),
        },
    },
    "ablation": {
        "title": "Masked, inverted and selective ablations on every evaluated set",
        "dims": _EVAL,
        "coords": {**_BASE,
                   "variant": Var(("variant",), "1", "ablation variant", "str",
                                  "mask: model * mask; inverted: model * (1 - mask); "
                                  "selective: the task-specific part of the module removed"),
                   "eval_set": Var(("eval_set",), "1", "evaluated task set", "str"),
                   "split": Var(("split",), "1", "evaluation split", "str",
                                "select (val, used to choose alpha) or report (test, every "
                                "reported accuracy)")},
        "vars": {
            "accuracy": _runs("percent", "accuracy of the ablated model", "from evals.nc",
                              dims=_EVAL),
            "degenerate": _runs("1", "fraction of problems with constant logits",
                                "share of problems whose 8 candidate logits are equal within "
                                "tolerance; above metrics.degenerate_max the accuracy is not "
                                "reported", dims=_EVAL),
            "n_problems": _runs("1", "problems evaluated", "from evals.nc", dims=_EVAL),
            "full_accuracy": Var(("network", "checkpoint", "eval_set", "split"), "percent",
                                 "accuracy of the unmasked model"),
            "complement_drop_own": _runs("1", "complement protocol: relative drop on the task",
                                         "1 - acc(complement mask on task set) / acc("
                                         "reference mask on task set), report split (Csordas "
                                         "et al.); NaN where the family has no complement or "
                                         "reference masks"),
            "complement_drop_other": _runs("1", "complement protocol: relative drop on the "
                                           "family's other tasks",
                                           "as complement_drop_own, mean over the other task "
                                           "sets of the family"),
        },
    },
    "curves": {
        "title": "Mask-training curves, SCL training curves and mask-evolution snapshots",
        "dims": _RUN + ("mask_step", "train_step", "val_step", "snap_step", "snap_row",
                        "snap_col"),
        "coords": {**_BASE,
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
            "loss": _runs("1", "mask-training loss", dims=_RUN + ("mask_step",)),
            "acc_task": _runs("percent", "task accuracy of model * read-out mask during mask "
                              "training", dims=_RUN + ("mask_step",)),
            "density": _runs("percent", "read-out mask density during mask training",
                             dims=_RUN + ("mask_step",)),
            "train_loss": Var(("network", "train_step"), "1", "SCL training loss"),
            "train_acc": Var(("network", "train_step"), "percent", "SCL training accuracy"),
            "val_acc": Var(("network", "val_step"), "percent", "SCL validation accuracy"),
            "keep_prob": Var(("checkpoint", "task", "snap_step", "snap_row", "snap_col"), "1",
                             "keep probability sigmoid(logits) of the snapshot parameter",
                             description="first network and seed at snap_alpha; parameter in "
                                         "the attribute snapshot_param; NaN outside its shape"),
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
    description, and a fixed netCDF encoding (float variables zlib-compressed with shuffle, NaN
    fill; none for coordinates), so writing equal datasets gives equal bytes.
    """
    spec = SCHEMA[name]
    out = xr.Dataset(attrs=global_attrs(name, source, extra))
    for key, v in {**spec["coords"], **spec["vars"]}.items():
        if key not in ds.variables:
            raise SchemaError(f"{name}.nc: variable {key!r} missing (expected dims {v.dims})")
        da = ds[key].transpose(*v.dims) if v.dims else ds[key]
        values = np.asarray(da.values)
        if v.dtype == "str":  # also pandas' string dtype of labels made from records
            values = np.array([str(x) for x in values.ravel()], dtype=object).reshape(
                values.shape)
        else:
            values = values.astype(v.dtype)
        encoding: dict = {"zlib": False}
        if v.dtype == "float64" and key not in spec["coords"]:
            # lossless, deterministic compression: the mask snapshots in curves.nc were 7 MB
            # raw for the ci profile (1.5 MB compressed), too big for committed results
            encoding = {"zlib": True, "complevel": 4, "shuffle": True, "_FillValue": np.nan}
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
    for attr in ("Conventions", "title", "source", "references", *PROVENANCE):
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


def open_metrics(directory: str | os.PathLike, name: str,
                 config_hash: str | None = None) -> xr.Dataset:
    """Open ``<directory>/<name>.nc`` (loaded into memory, file closed) and validate it; with
    ``config_hash``, also refuse a file written for another configuration."""
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
        validate(ds, name)
    except SchemaError as err:
        raise SchemaError(f"{path}: {err}") from None
    if config_hash is not None:
        check_provenance(ds.attrs, config_hash, path)
    return ds


def check_provenance(attrs: dict, config_hash: str, where: str | os.PathLike) -> None:
    """Raise :class:`SchemaError` naming ``where`` when ``attrs['config_hash']`` is not
    ``config_hash``: the metrics were computed for another configuration (profile or params)
    than the one the reader was given."""
    got = str(attrs.get("config_hash", ""))
    if got != config_hash:
        raise SchemaError(
            f"{where}: written for another configuration (config_hash {got[:12] or 'missing'}"
            f", profile {attrs.get('profile', '?')}; the given params hash to "
            f"{config_hash[:12]}): recompute the metrics with these params "
            "(`python -m core.metrics`) or pass the params they were made with")


def write_summary(folder: str | os.PathLike[str], summary: dict) -> Path:
    """``summary.json`` in ``folder`` (atomically; keys sorted, no NaN: missing is null)."""
    text = json.dumps(summary, indent=1, sort_keys=True, allow_nan=False)
    return atomic_write_text(Path(folder) / SUMMARY, text + "\n")


def read_summary(path: str | os.PathLike[str]) -> dict:
    """A ``summary.json``: a mapping with ``checkpoints`` and its provenance; a missing file
    or anything else is one :class:`SchemaError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"{path}: file not found (expected the summary written by "
                          "`python -m core.metrics`)") from None
    except (OSError, ValueError) as err:
        raise SchemaError(f"{path}: not a summary.json of core.metrics ({err!r})") from None
    if not isinstance(data, dict) or not isinstance(data.get("checkpoints"), dict):
        raise SchemaError(f"{path}: not a summary.json of core.metrics (no 'checkpoints')")
    return data
