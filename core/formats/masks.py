"""The mask file: one home for its format constant, keys, record, save, load and validation.

A mask file (``data/masks/net<k>/<ckpt>/<set>-a<alpha>-s<seed>.pt``, :func:`mask_path`) is a
``torch.save`` of a dict of plain types and CPU tensors (loadable with ``weights_only=True`` on
any machine). Everything that reads or writes mask files goes through this module.

Keys (:data:`FILE_KEYS`):

``format``            :data:`FORMAT`
``network``           seed of the trained network (``data/train/net<k>``)
``checkpoint``        checkpoint name (``scl_90``)
``family``, ``task``  task family (``core.tasks``) and the set the mask was trained on
``alpha``, ``seed``, ``steps``  regularisation, mask seed, training steps
``arch``, ``image_size``, ``model_fingerprint``  the model (fingerprint: masked names + shapes)
``names``, ``shapes`` masked parameters in model order
``mask``, ``logits``  per parameter: bool read-out mask, float32 logits (standard layout)
``accuracy``          percent; at least :data:`ACCURACY_KEYS` (``task`` = the trained set,
                      ``not_task`` = its complement; ``_inverted``: model * (1 - mask),
                      ``_full``: unmasked); more keys may follow (per evaluation set)
``curve``             lists over logged steps, :data:`CURVE_KEYS`
``snapshots``         ``param``, ``steps``, ``logits`` [len(steps), *shape] (mask evolution)
``converged``, ``convergence``  ``core.masking.convergence`` of the curve: density_change,
                      acc_change (points) over window_start..window_end; converged: both
                      within masks.converge_density / converge_acc
``settings``          what the mask was made from (mask settings, alpha, seed, sets, checkpoint
                      and data fingerprints, device type, precision): a resumed sweep keeps a
                      file only when its settings equal the ones it would use now
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from core.config import alpha_label
from core.io import atomic_torch_save, torch_load

FORMAT = "modules-avr-mask/3"  # 3: no inverted-mask curve (evals.nc has the ablations)
ACCURACY_KEYS = ("task", "not_task", "task_inverted", "not_task_inverted", "task_full",
                 "not_task_full")
CURVE_KEYS = ("step", "loss", "task_acc", "density")
FILE_KEYS = ("format", "network", "checkpoint", "family", "task", "alpha", "seed", "steps",
             "arch", "image_size", "model_fingerprint", "names", "shapes", "mask", "logits",
             "accuracy", "curve", "snapshots", "converged", "convergence", "settings")
CONVERGENCE_KEYS = ("density_change", "acc_change", "window_start", "window_end")
# The file-name pattern of :func:`mask_name` (+ ``.pt``), the one place it is spelled out
MASK_STEM = re.compile(r"(?P<task>.+)-a(?P<alpha>\d+(?:p\d+)?e-?\d+)-s(?P<seed>\d+)")
MASK_FILE = re.compile(MASK_STEM.pattern + r"\.pt")


class MaskError(ValueError):
    """A bad mask input or file; the message names the file or the parameter."""


def fingerprint(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> str:
    """SHA-256 of the masked parameters' names and shapes: equal iff masks are interchangeable."""
    text = json.dumps([[n, [int(d) for d in s]] for n, s in zip(names, shapes)])
    return hashlib.sha256(text.encode()).hexdigest()


def mask_name(task: str, alpha: float, seed: int) -> str:
    """File stem of one mask run: ``circle-a3e-5-s0``."""
    return f"{task}-a{alpha_label(alpha)}-s{int(seed)}"


def parse_mask_name(stem: str) -> tuple[str, float, int]:
    """``(task, alpha, seed)`` of a :func:`mask_name` stem; ValueError naming the stem when it
    is not ``<set>-a<alpha>-s<seed>``."""
    m = MASK_STEM.fullmatch(stem)
    if m is None:
        raise ValueError(f"mask key {stem!r} is not <set>-a<alpha>-s<seed>")
    return m["task"], float(m["alpha"].replace("p", ".")), int(m["seed"])


def mask_path(root: str | Path, checkpoint: str, task: str, alpha: float, seed: int) -> Path:
    """``<root>/<checkpoint>/<task>-a<alpha>-s<seed>.pt`` (``root`` = ``data/masks/net<k>``)."""
    return Path(root) / checkpoint / f"{mask_name(task, alpha, seed)}.pt"


def mask_record(result: Any, accuracy: Mapping[str, float], *, checkpoint: str, task: str,
                alpha: float, seed: int, steps: int, arch: str, image_size: int,
                network: int = 0, family: str = "", settings: Mapping[str, Any] | None = None
                ) -> dict:
    """The ``torch.save`` payload of a mask file (plain types and CPU tensors only).

    ``result`` is a ``core.masking.MaskResult`` (its curve, snapshots, convergence and
    converged flag are recorded); ``accuracy`` holds at least :data:`ACCURACY_KEYS` (percent;
    further keys are kept); ``settings`` is what a resumed sweep compares (plain JSON types).
    """
    missing = [k for k in ACCURACY_KEYS if k not in accuracy]
    if missing:
        raise MaskError(f"accuracy: lacks {', '.join(missing)}")
    missing = [k for k in CURVE_KEYS if k not in result.curve]
    if missing:
        raise MaskError(f"curve: lacks {', '.join(missing)}")
    snaps = result.snapshots
    return {"format": FORMAT, "network": int(network), "checkpoint": str(checkpoint),
            "family": str(family), "task": str(task), "alpha": float(alpha), "seed": int(seed),
            "steps": int(steps), "arch": str(arch), "image_size": int(image_size),
            "model_fingerprint": result.fingerprint,
            "names": list(result.names), "shapes": [[int(d) for d in s] for s in result.shapes],
            "mask": {n: _cpu(result.mask[n]) for n in result.names},
            "logits": {n: _cpu(result.logits[n]) for n in result.names},
            "accuracy": {k: float(v) for k, v in accuracy.items()},
            "curve": {k: [int(v) if k == "step" else float(v) for v in vals]
                      for k, vals in result.curve.items()},
            "snapshots": {"param": str(snaps["param"]), "steps": [int(x) for x in snaps["steps"]],
                          "logits": _cpu(snaps["logits"])},
            "converged": bool(result.converged),
            "convergence": {k: float(v) for k, v in result.convergence.items()},
            "settings": _plain(settings or {}, "settings")}


def _cpu(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor with its own storage (identical bytes whatever the device)."""
    return t.detach().to("cpu").contiguous().clone()


def _plain(obj: Any, where: str) -> Any:
    """``obj`` as plain JSON types (lists, not tuples), or a MaskError naming ``where``."""
    try:
        return json.loads(json.dumps(obj, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise MaskError(f"{where}: not plain JSON data ({err})") from None


def save_mask(path: str | Path, record: dict) -> Path:
    """Write a mask file atomically (same record, same bytes: ``core.io.atomic_torch_save``)."""
    return atomic_torch_save(record, path)


def _model_fingerprint(model: Any, names: Sequence[str]) -> str:
    if not isinstance(model, nn.Module):  # a core.masking.MaskedModel
        return str(model.fingerprint)
    own = dict(model.named_parameters())
    sel = [n for n in names if n in own]
    if len(sel) != len(names):
        return ""
    return fingerprint(sel, [tuple(own[n].shape) for n in sel])


def load_mask(path: str | Path, model: Any = None,
              expect: Mapping[str, Any] | None = None) -> dict:
    """Read and validate a mask file; with ``model`` (an ``nn.Module`` or a
    ``core.masking.MaskedModel``), also check that the mask is for it; with ``expect`` (e.g.
    ``{"network": 0, "checkpoint": "scl_90", "task": "circle", "alpha": 3e-5, "seed": 0}``),
    that the file holds that run.

    Raises :class:`MaskError` naming the file when it is missing, does not load, is not a mask
    file, is inconsistent, holds another run, or was made for a model with other parameters.
    """
    path = Path(path)
    rec = torch_load(path, "mask file", MaskError)
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        got = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
        raise MaskError(f"{path}: not a mask file (format {got!r}, expected {FORMAT!r})")
    missing = [k for k in FILE_KEYS if k not in rec]
    if missing:
        raise MaskError(f"{path}: mask file lacks keys {', '.join(missing)}")
    _check_record(path, rec)
    for key, want in (expect or {}).items():
        got = rec.get(key)
        same = (math.isclose(float(got), float(want), rel_tol=1e-9) if key == "alpha"
                else got == want)
        if not same:
            raise MaskError(f"{path}: {key} is {got!r}, expected {want!r} (a mask file of "
                            "another run in this place)")
    if model is not None and _model_fingerprint(model, rec["names"]) != rec["model_fingerprint"]:
        raise MaskError(f"{path}: mask is for another model (fingerprint "
                        f"{rec['model_fingerprint'][:12]}, made for {rec['arch']} at "
                        f"{rec['image_size']} px from {rec['checkpoint']}): this model's "
                        "masked parameters differ in names or shapes (another "
                        "architecture, image size or masks.include?)")
    return rec


_SCALARS = {"network": int, "checkpoint": str, "family": str, "task": str, "alpha": float,
            "seed": int, "steps": int, "arch": str, "image_size": int, "model_fingerprint": str,
            "converged": bool}


def _check_record(path: Path, rec: dict) -> None:
    """Types, shapes and internal consistency of a record (one error naming the file)."""
    def fail(msg: str) -> MaskError:
        return MaskError(f"{path}: {msg}")

    for key, tp in _SCALARS.items():
        v = rec[key]
        ok = isinstance(v, tp) and (tp is bool or not isinstance(v, bool))
        if not ok:
            raise fail(f"{key} is {v!r}, expected {tp.__name__}")
    names, shapes = rec["names"], rec["shapes"]
    if (not isinstance(names, list) or not isinstance(shapes, list) or not names
            or len(names) != len(shapes)):
        raise fail("'names' and 'shapes' must be non-empty lists of equal length")
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if fingerprint(names, shapes) != rec["model_fingerprint"]:
        raise fail("model_fingerprint does not match its names and shapes")
    for key, want in (("mask", torch.bool), ("logits", torch.float32)):
        if not isinstance(rec[key], dict) or set(rec[key]) != set(names):
            raise fail(f"{key} must map exactly the masked parameter names")
        for n, s in zip(names, shapes):
            t = rec[key][n]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != s or t.dtype != want:
                raise fail(f"{key}[{n!r}] is not a {want} tensor of shape {s}")
    acc, curve = rec["accuracy"], rec["curve"]
    if not isinstance(acc, dict) or any(k not in acc for k in ACCURACY_KEYS):
        raise fail(f"accuracy must hold {', '.join(ACCURACY_KEYS)} (percent)")
    if not isinstance(curve, dict) or any(k not in curve for k in CURVE_KEYS):
        raise fail(f"curve must hold {', '.join(CURVE_KEYS)}")
    if len({len(curve[k]) for k in CURVE_KEYS}) != 1 or not curve["step"]:
        raise fail("curve lists are empty or of different lengths")
    snaps = rec["snapshots"]
    if not isinstance(snaps, dict) or any(k not in snaps for k in ("param", "steps", "logits")):
        raise fail("snapshots must hold param, steps, logits")
    if snaps["param"] not in names:
        raise fail(f"snapshot parameter {snaps['param']!r} is not a masked parameter")
    want = (len(snaps["steps"]), *shapes[names.index(snaps["param"])])
    if not isinstance(snaps["logits"], torch.Tensor) or tuple(snaps["logits"].shape) != want:
        raise fail(f"snapshots.logits must be a tensor of shape {list(want)}")
    conv = rec["convergence"]
    if not isinstance(conv, dict) or any(k not in conv for k in CONVERGENCE_KEYS):
        raise fail(f"convergence must hold {', '.join(CONVERGENCE_KEYS)}")
    if not isinstance(rec["settings"], dict):
        raise fail("settings must be a dict")


def mask_flat(rec: Mapping[str, Any]) -> np.ndarray:
    """The read-out mask of all tensors concatenated in model order (bool numpy)."""
    return np.concatenate([rec["mask"][n].numpy().ravel() for n in rec["names"]])


def curve_dataset(record: dict) -> xr.Dataset:
    """The mask-training curve of a record as an ``xarray.Dataset`` over ``mask_step``."""
    c = record["curve"]
    units = {"loss": "1", "task_acc": "percent", "density": "percent"}
    return xr.Dataset({k: ("mask_step", np.asarray(c[k], float), {"units": u})
                       for k, u in units.items()},
                      coords={"mask_step": np.asarray(c["step"], np.int64)},
                      attrs={"task": record["task"], "checkpoint": record["checkpoint"],
                             "alpha": record["alpha"], "seed": record["seed"]})


def degenerate_reason(conv: dict[str, float]) -> str:
    """Why a mask run never trained, from its :func:`core.masking.convergence` record (a mask file's ``convergence``); "" when it did.
    Its logits never left ``masks.init`` (``moved`` 0), or all ended equal (``spread`` 0: the
    task's gradient never told one weight from another, e.g. a regulariser that swamped the
    optimiser), or its read-out keeps no weight or every weight (``density_end`` 0 or 100).
    Such a run is flagged, never converged, and left out of every verdict (core.metrics
    counts it)."""
    if conv.get("moved") == 0:
        return "its logits never left masks.init"
    if conv.get("spread") == 0:
        return "its logits all ended equal (the task's gradient never reached them)"
    density = conv.get("density_end")
    if density is not None and density <= 0:
        return "its read-out keeps no weight (density 0%)"
    if density is not None and density >= 100:
        return "its read-out keeps every weight (density 100%)"
    return ""
