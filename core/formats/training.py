"""``training.nc``: one network's training log (written by :mod:`core.train`).

Per optimiser step the training loss, batch accuracy, epoch and learning rate; per validation
its accuracy; per milestone the kept checkpoint's step, validation and test accuracy, error
against the milestone and sha256; the rewinds and restarts; provenance as global attrs.
:func:`write` writes it, :func:`check` verifies a training folder against it (the checkpoint
files match the recorded sha256s; with a config, the recorded train hash), :func:`read` is
what the metrics read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from core.config import Config, train_hash
from core.formats import CONVENTIONS
from core.io import atomic_path, file_sha256

LOG = "training.nc"
# the variables a reader of the log relies on
REQUIRED = ("loss", "acc", "val_acc", "milestone_step", "milestone_val_acc")


class TrainingLogError(ValueError):
    """A training folder or log that is missing, inconsistent or of another run."""


def write(path: Path, history: Any, milestones: Sequence[float], checkpoints: Sequence[str],
          test: Mapping[float, float], tolerance: float, facts: Mapping[str, Any]) -> None:
    """``training.nc`` (atomically): per-step train loss/acc, per-validation accuracy,
    per-milestone facts and provenance ``facts`` (global attrs; no timestamps: identical runs
    give identical bytes). ``history``: the training state (``core.train.State``: loss, acc,
    log_epoch, lr, val_steps, val_acc, val_epoch, reached, rewinds, restarts). Over 60 lines
    because it is one declarative table of the file's variables, which reads best whole."""
    st, ms, reached, tol = history, list(milestones), history.reached, tolerance

    def per_m(key: str, fill: Any, dtype: Any) -> np.ndarray:
        return np.array([reached[m][key] if m in reached else fill for m in ms], dtype=dtype)

    achieved = per_m("val_acc", np.nan, float)
    error = achieved - np.array(ms)
    ok = np.where(np.isnan(error), -1, np.abs(error) <= tol).astype(np.int8)
    ds = xr.Dataset(
        {
            "loss": ("step", np.array(st.loss, dtype=np.float32),
                     {"units": "1", "long_name": "training cross-entropy loss (batch mean)"}),
            "acc": ("step", np.array(st.acc, dtype=np.float32),
                    {"units": "percent", "long_name": "training batch accuracy"}),
            "epoch": ("step", np.array(st.log_epoch, dtype=np.int32),
                      {"units": "1", "long_name": "epoch of the training step (from 0)"}),
            "lr": ("step", np.array(st.lr, dtype=np.float32),
                   {"units": "1", "long_name": "learning rate"}),
            "val_acc": ("val_step", np.array(st.val_acc, dtype=np.float32),
                        {"units": "percent", "long_name": "validation accuracy"}),
            "val_epoch": ("val_step", np.array(st.val_epoch, dtype=np.int32),
                          {"units": "1", "long_name": "epoch of the validation (from 0)"}),
            "milestone_step": ("milestone", per_m("step", -1, np.int64),
                               {"units": "1", "long_name": "step of the kept checkpoint "
                                "(-1: milestone not reached)"}),
            "milestone_epoch": ("milestone", per_m("epoch", -1, np.int64),
                                {"units": "1", "long_name": "epoch of the kept checkpoint "
                                 "(-1: not reached)"}),
            "milestone_val_acc": ("milestone", achieved,
                                  {"units": "percent", "long_name": "validation accuracy "
                                   "achieved by the kept checkpoint"}),
            "milestone_error": ("milestone", error,
                                {"units": "percent", "long_name": "achieved validation "
                                 "accuracy minus the milestone"}),
            "milestone_within_tolerance": ("milestone", ok,
                                           {"units": "1", "long_name": "1: |milestone_error| "
                                            "<= milestone_tolerance, 0: not, -1: not reached"}),
            "milestone_test_acc": ("milestone", np.array([test.get(m, np.nan) for m in ms]),
                                   {"units": "percent",
                                    "long_name": "test accuracy of the checkpoint"}),
            "checkpoint_sha256": ("milestone", per_m("sha256", "", object),
                                  {"long_name": "sha256 of the checkpoint file ('' if not "
                                   "reached)"}),
            **{f"rewind_{k}": ("rewind", np.array([r[i] for r in st.rewinds], dtype=dt),
                               {"units": u, "long_name": f"rewinds (a check that jumped past "
                                f"a milestone, replayed with denser checks): {what}"})
               for i, (k, dt, u, what) in enumerate((
                   ("from_step", np.int64, "1", "step of the replaced check"),
                   ("val_acc", np.float32, "percent", "its validation accuracy"),
                   ("to_step", np.int64, "1", "step replayed from (the check before)"),
                   ("milestone", np.float64, "percent", "the lowest milestone it overshot")))},
            "restart_steps": ("restart", np.array([r[0] for r in st.restarts], dtype=np.int64),
                              {"units": "1", "long_name": "steps an abandoned attempt ran "
                               "before it was re-initialised, still at chance "
                               "(train.restart_after)"}),
            "restart_best_val_acc": ("restart",
                                     np.array([r[1] for r in st.restarts], dtype=np.float32),
                                     {"units": "percent", "long_name": "best validation "
                                      "accuracy of the abandoned attempt"}),
        },
        coords={
            "step": ("step", np.arange(1, len(st.loss) + 1, dtype=np.int64),
                     {"units": "1", "long_name": "optimiser step"}),
            "val_step": ("val_step", np.array(st.val_steps, dtype=np.int64),
                         {"units": "1", "long_name": "optimiser step of the validation"}),
            "milestone": ("milestone", np.array(ms, dtype=float),
                          {"units": "percent", "long_name": "validation-accuracy milestone"}),
            "checkpoint": ("milestone", list(checkpoints),
                           {"long_name": "checkpoint name"}),
        },
        attrs={"Conventions": CONVENTIONS, "title": "Training log of one network",
               "source": "core.train", **facts,
               "references": "Wu et al. 2020, The Scattering Compositional Learner"},
    )
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4")


def check(train_dir: str | Path, cfg: Config | None = None) -> xr.Dataset:
    """``training.nc`` of ``train_dir``, checked against its checkpoints: every reached
    milestone's file exists with the recorded sha256; with ``cfg``, the recorded
    :func:`core.config.train_hash` matches. Raises :class:`TrainingLogError` naming the file."""
    train_dir = Path(train_dir)
    path = train_dir / LOG
    if not path.is_file():
        raise TrainingLogError(f"{path}: training log not found")
    with xr.open_dataset(path, engine="netcdf4") as ds:
        log = ds.load()
    if "checkpoint_sha256" not in log:
        raise TrainingLogError(f"{path}: no checkpoint_sha256 (written by an older core.train;"
                               " train again)")
    for name, sha in zip(log["checkpoint"].values, log["checkpoint_sha256"].values):
        if not sha:
            continue
        ck = train_dir / f"{name}.pt"
        if not ck.is_file():
            raise TrainingLogError(f"{ck}: checkpoint listed in {path} not found")
        if file_sha256(ck) != sha:
            raise TrainingLogError(f"{path}: does not match {ck} (sha256 differs: the log and "
                                   "the checkpoint come from different runs)")
    if cfg is not None:
        if log.attrs.get("train_hash") != train_hash(cfg):
            raise TrainingLogError(f"{path}: trained with other parameters than profile "
                                   f"{cfg.profile!r} (train hash differs)")
    return log


def read(train_dir: str | Path, cfg: Config) -> xr.Dataset:
    """A network's ``training.nc``, checked by :func:`check` (the checkpoint files match the
    recorded sha256s and the log was trained with these params: a log from another run is
    refused), holding :data:`REQUIRED` and every checkpoint of ``cfg``; the checkpoint names
    as coordinate ``checkpoint_name`` on ``milestone``."""
    path = Path(train_dir) / LOG
    try:
        ds = check(train_dir, cfg)
    except TrainingLogError:
        raise
    except (OSError, ValueError) as err:
        raise TrainingLogError(f"{path}: cannot read as netCDF ({type(err).__name__}: {err})"
                               ) from None
    for var in REQUIRED:
        if var not in ds.variables:
            raise TrainingLogError(f"{path}: variable {var!r} missing")
    names = [str(c) for c in ds["checkpoint"].values]
    missing = [c for c in cfg.checkpoints if c not in names]
    if missing:
        raise TrainingLogError(f"{path}: checkpoint {missing[0]} (train.milestones) not in the "
                               f"log's milestones {names} (stale training.nc?)")
    return ds.assign_coords(checkpoint_name=("milestone", names))
