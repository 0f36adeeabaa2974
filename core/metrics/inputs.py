"""The metrics' inputs, read through :mod:`core.formats`: the mask files (one
:class:`MaskRecord` each, checked against its place), every checkpoint folder's ``evals.nc``
stacked into the ablation dataset, and each network's training log.

Layout (docs/architecture.md): for every network ``k`` of ``train.networks`` and checkpoint of
``train.milestones``, the mask files ``<masks>/net<k>/<ckpt>/<set>-a<alpha>-s<seed>.pt``, that
folder's ``evals.nc`` and the network's training log ``<train>/net<k>/training.nc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from core.config import SUBNETS, Config
from core.formats import evals as evals_file
from core.formats import training as training_log
from core.formats.evals import EVALS, SPLITS, VARIANTS, EvalsError
from core.formats.masks import MaskError, degenerate_reason, load_mask, mask_name, parse_mask_name
from core.metrics.measures import complement_drops
from core.tasks import FAMILIES, family_of

RUN = ("network", "checkpoint", "task", "alpha", "seed")  # the key of a mask run


class MetricsError(ValueError):
    """Bad input to the metrics: the message names the file and what was expected."""


@dataclass
class MaskRecord:
    """One mask file, validated, with its place (network, checkpoint) and its key :data:`RUN`
    (``label``); ``flat`` is the read-out mask of all tensors concatenated."""

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


def read_mask_record(path: Path, network: int, checkpoint: str) -> MaskRecord:
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
    return MaskRecord(
        path=path, network=network, checkpoint=checkpoint, task=task, alpha=alpha, seed=seed,
        names=names, shapes=shapes, flat=flat, degenerate=degenerate,
        converged=bool(rec["converged"]) and not degenerate,
        convergence={k: float(rec["convergence"].get(k, np.nan))
                     for k in ("density_change", "acc_change")},
        curve={k: np.asarray(rec["curve"][k], dtype=np.float64)
               for k in ("step", "loss", "task_acc", "density")},
        snapshots={"param": snaps.get("param", ""),
                   "steps": np.asarray(snaps.get("steps", []), dtype=np.int64),
                   "logits": np.asarray(snaps["logits"], np.float64)
                   if "logits" in snaps else np.zeros(0)})


def masked_parameters(records: Sequence[MaskRecord], before: tuple | None) -> tuple:
    """The masked parameters (names, shapes) of ``records``, one folder's: ``before`` (those of
    the folders read before), or the first record's; a record with others is an error."""
    info = (tuple(records[0].names), tuple(records[0].shapes))
    params = info if before is None else before
    bad = next((r for r in records if (tuple(r.names), tuple(r.shapes)) != params), None)
    if bad is not None:
        raise _fail(bad.path, "masked parameters differ from the other mask files' "
                              "(masks of different models mixed)")
    return params


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


def training_curves(train: str | Path, nets: Sequence[int]) -> tuple[list[dict], list[dict]]:
    """(training rows, validation rows) of each network's SCL training: loss and accuracy per
    logged step, validation accuracy per validation step, from its ``training.nc``."""
    scl, val = [], []
    for net in nets:
        log = xr.open_dataset(Path(train) / f"net{net}" / "training.nc", engine="netcdf4")
        with log:
            step = log["step"].values if "step" in log.coords else np.arange(log.sizes["step"])
            scl += [{"network": net, "train_step": int(s), "train_loss": float(lo),
                     "train_acc": float(a)}
                    for s, lo, a in zip(step, log["loss"].values, log["acc"].values)]
            val += [{"network": net, "val_step": int(s), "val_acc": float(a)}
                    for s, a in zip(log["val_step"].values, log["val_acc"].values)]
    return scl, val
