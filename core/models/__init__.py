"""Models over 16-panel Raven problems and their checkpoints.

``build_model(cfg.model, image_size)`` builds the architecture named by ``model.arch``;
``load_checkpoint(path)`` rebuilds a model from a ``data/train/<name>.pt`` file (format in
docs/architecture.md) and validates it; ``subnet_of(name)`` maps a parameter name to one of
``core.config.SUBNETS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from core.config import SUBNETS, ConfigError, ModelConfig, build_section
from core.io import torch_load
from core.models.cnn_mlp import CNNMLP
from core.models.scl import SCL

ARCHS = {"scl": SCL, "cnn_mlp": CNNMLP}
CHECKPOINT_KEYS = ("arch", "model", "image_size", "state_dict", "milestone", "step", "epoch",
                   "val_acc")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file."""


def build_model(cfg: ModelConfig, image_size: int) -> nn.Module:
    """The model ``cfg.arch`` for ``image_size`` px panels (seed torch first for determinism).

    Conv weights are stored channels-last: the oneDNN CPU convolutions then run ~1.7x faster
    (fwd+bwd of SCL at 80 px, batch 32, 2 threads: 0.33 -> 0.20 s). Checkpoints are written
    contiguous, so the memory format never reaches a file.
    """
    kw = dataclasses.asdict(cfg)
    arch = kw.pop("arch")
    if arch not in ARCHS:
        raise ConfigError(f"model.arch: expected one of {', '.join(ARCHS)}, got {arch!r}")
    return ARCHS[arch](image_size=image_size, **kw).to(memory_format=torch.channels_last)


def subnet_of(name: str) -> str:
    """The sub-network of a parameter (or buffer) name: its first dotted component."""
    head = name.split(".", 1)[0]
    if head not in SUBNETS:
        raise ValueError(f"parameter {name!r}: first component {head!r} is not a sub-network "
                         f"(expected one of {', '.join(SUBNETS)})")
    return head


def checkpoint_dict(model: nn.Module | dict[str, torch.Tensor], cfg: ModelConfig,
                    image_size: int, milestone: float, step: int, epoch: int, val_acc: float,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``torch.save`` payload of a milestone checkpoint (plain types and tensors only):
    the weights of ``model`` (or a state dict) as contiguous CPU tensors, ``val_acc`` the
    validation accuracy achieved, and ``extra`` plain entries (e.g. ``network``)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {"arch": cfg.arch, "model": dataclasses.asdict(cfg), "image_size": int(image_size),
            "state_dict": {k: v.detach().cpu().contiguous().clone() for k, v in state.items()},
            "milestone": float(milestone), "step": int(step), "epoch": int(epoch),
            "val_acc": float(val_acc), **(extra or {})}


def load_checkpoint(path: str | Path, arch: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the model of checkpoint ``path`` in eval mode; ``meta`` is the dict minus weights.

    Raises :class:`CheckpointError` naming the file when it is missing, truncated, not a
    checkpoint, of another architecture than ``arch`` (if given) or its weights do not fit.
    """
    path = Path(path)
    ckpt = torch_load(path, "checkpoint", CheckpointError)
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise CheckpointError(f"{path}: not a model checkpoint (missing keys: "
                              f"{', '.join(missing)})")
    if arch is not None and ckpt["arch"] != arch:
        raise CheckpointError(f"{path}: architecture {ckpt['arch']!r}, expected {arch!r}")
    try:
        cfg = build_section(ModelConfig, ckpt["model"], f"{path}: model")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    if cfg.arch != ckpt["arch"]:
        raise CheckpointError(f"{path}: arch {ckpt['arch']!r} disagrees with model.arch "
                              f"{cfg.arch!r}")
    model = build_model(cfg, int(ckpt["image_size"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit architecture {cfg.arch!r}: "
                              f"{str(err).splitlines()[0]} ...") from None
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


__all__ = ["ARCHS", "CheckpointError", "SCL", "CNNMLP", "build_model", "checkpoint_dict",
           "load_checkpoint", "subnet_of"]


# --------------------------------------------------------------------------- the accuracy loop


class Batches(Protocol):
    """Problems that hand out model-ready batches: ``len`` and ``batch(slice, device)``."""

    def __len__(self) -> int: ...

    def batch(self, idx: slice, device: torch.device | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]: ...


@torch.no_grad()
def predict(forward: Callable[[torch.Tensor], torch.Tensor], data: Batches,
            batch_size: int = 64, device: torch.device | None = None) -> torch.Tensor:
    """The outputs of ``forward`` on every problem of ``data``: a float32 CPU tensor [N, C].

    The project's one inference loop: training validation/test (``core.train.split_accuracy``),
    mask curves, final mask accuracies and the ablations (``core.masking``) all use it."""
    out = []
    for i in range(0, len(data), batch_size):
        x, _ = data.batch(slice(i, i + batch_size), device)
        out.append(forward(x).float().cpu())
    return torch.cat(out)


def percent_correct(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Percent of rows whose argmax is the target."""
    return 100.0 * int((logits.argmax(-1) == targets.cpu()).sum()) / len(targets)
