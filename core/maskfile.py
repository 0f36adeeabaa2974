"""The mask file: one home for its format constant, keys, record, save, load and validation.

A mask file (``data/masks/net<k>/<ckpt>/<set>-a<alpha>-s<seed>.pt``) is a ``torch.save`` of a
dict of plain types and CPU tensors (loadable with ``weights_only=True`` on any machine).
Everything that reads or writes mask files goes through this module.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from core.io import atomic_write_bytes, torch_load

FORMAT = "modules-avr-mask/1"
ACCURACY_KEYS = ("task", "not_task", "task_inverted", "not_task_inverted", "task_full",
                 "not_task_full")
CURVE_KEYS = ("step", "loss", "task_acc", "task_inverted_acc", "density")
FILE_KEYS = ("format", "checkpoint", "task", "alpha", "seed", "steps", "arch", "image_size",
             "model_fingerprint", "names", "shapes", "mask", "logits", "accuracy", "curve",
             "snapshots")


class MaskError(ValueError):
    """A bad mask input or file; the message names the file or the parameter."""


def fingerprint(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> str:
    """SHA-256 of the masked parameters' names and shapes: equal iff masks are interchangeable."""
    text = json.dumps([[n, [int(d) for d in s]] for n, s in zip(names, shapes)])
    return hashlib.sha256(text.encode()).hexdigest()


def mask_record(result: Any, accuracy: dict[str, float], *, checkpoint: str, task: str,
                alpha: float, seed: int, steps: int, arch: str, image_size: int) -> dict:
    """The ``torch.save`` payload of a mask file (plain types and tensors only); ``result`` is a
    ``core.masking.MaskResult``."""
    return {"format": FORMAT, "checkpoint": str(checkpoint), "task": str(task),
            "alpha": float(alpha), "seed": int(seed), "steps": int(steps), "arch": str(arch),
            "image_size": int(image_size), "model_fingerprint": result.fingerprint,
            "names": list(result.names), "shapes": [list(s) for s in result.shapes],
            "mask": dict(result.mask), "logits": dict(result.logits),
            "accuracy": {k: float(accuracy[k]) for k in ACCURACY_KEYS},
            "curve": {k: list(result.curve[k]) for k in CURVE_KEYS},
            "snapshots": dict(result.snapshots)}


def save_mask(path: str | Path, record: dict) -> Path:
    """Write atomically. Serialised in memory first: ``torch.save`` to a file names the archive
    after the (random) temporary file, which would make identical runs differ in bytes."""
    buf = io.BytesIO()
    torch.save(record, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _model_fingerprint(model: Any, names: Sequence[str]) -> str:
    if not isinstance(model, nn.Module):  # a core.masking.MaskedModel
        return str(model.fingerprint)
    own = dict(model.named_parameters())
    sel = [n for n in names if n in own]
    if len(sel) != len(names):
        return ""
    return fingerprint(sel, [tuple(own[n].shape) for n in sel])


def load_mask(path: str | Path, model: Any = None) -> dict:
    """Read and validate a mask file; with ``model`` (an ``nn.Module`` or a
    ``core.masking.MaskedModel``), also check that the mask is for it.

    Raises :class:`MaskError` naming the file when it is missing, does not load, is not a mask
    file, is inconsistent, or was made for a model with other parameters.
    """
    path = Path(path)
    rec = torch_load(path, "mask file", MaskError)
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        got = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
        raise MaskError(f"{path}: not a mask file (format {got!r}, expected {FORMAT!r})")
    missing = [k for k in FILE_KEYS if k not in rec]
    if missing:
        raise MaskError(f"{path}: mask file lacks keys {', '.join(missing)}")
    names, shapes = rec["names"], [tuple(s) for s in rec["shapes"]]
    if fingerprint(names, shapes) != rec["model_fingerprint"]:
        raise MaskError(f"{path}: model_fingerprint does not match its names and shapes")
    for key in ("mask", "logits"):
        for n, s in zip(names, shapes):
            t = rec[key].get(n)
            want = torch.bool if key == "mask" else torch.float32
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != s or t.dtype != want:
                raise MaskError(f"{path}: {key}[{n!r}] is not a {want} tensor of shape {s}")
    bad = [k for k in ACCURACY_KEYS if k not in rec["accuracy"]]
    bad += [k for k in CURVE_KEYS if k not in rec["curve"]]
    if bad:
        raise MaskError(f"{path}: accuracy/curve lacks {', '.join(bad)}")
    if model is not None and _model_fingerprint(model, names) != rec["model_fingerprint"]:
        raise MaskError(f"{path}: mask is for another model (fingerprint "
                        f"{rec['model_fingerprint'][:12]}, made for {rec['arch']} at "
                        f"{rec['image_size']} px from {rec['checkpoint']}): this model's "
                        "masked parameters differ in names or shapes (another "
                        "architecture, image size or masks.include?)")
    return rec


def curve_dataset(record: dict) -> xr.Dataset:
    """The mask-training curve of a record as an ``xarray.Dataset`` over ``mask_step``."""
    c = record["curve"]
    units = {"loss": "1", "task_acc": "percent", "task_inverted_acc": "percent",
             "density": "percent"}
    return xr.Dataset({k: ("mask_step", np.asarray(c[k], float), {"units": u})
                       for k, u in units.items()},
                      coords={"mask_step": np.asarray(c["step"], np.int64)},
                      attrs={"task": record["task"], "checkpoint": record["checkpoint"],
                             "alpha": record["alpha"], "seed": record["seed"]})
