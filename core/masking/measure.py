"""Problems as tensors (:class:`Split`), the one accuracy loop and the degenerate fraction
(problems whose candidate logits are constant)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.formats.masks import MaskError
from core.models import percent_correct, predict


@dataclass
class Split:
    """Problems as tensors: ``inputs`` [N, ...] (any dtype), ``targets`` int64 [N]; ``prepare``
    turns an indexed batch of inputs into model input (e.g. ``core.data.to_float``)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
    name: str = "data"

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets) or len(self.targets) == 0:
            raise MaskError(f"{self.name}: expected as many targets as inputs (> 0), got "
                            f"{len(self.inputs)} inputs and {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def head(self, n: int) -> Split:
        """The first ``n`` problems (all when ``n`` is 0)."""
        if n == 0 or n >= len(self):
            return self
        return Split(self.inputs[:n], self.targets[:n], self.prepare, self.name)

    def batch(self, idx: torch.Tensor | slice, device: torch.device | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (moved to ``device``, then prepared) and targets of the problems ``idx``."""
        x, y = self.inputs[idx], self.targets[idx]
        if device is not None:
            x, y = x.to(device), y.to(device)
        return (self.prepare(x) if self.prepare else x), y


def degenerate_rows(logits: torch.Tensor, tol: float) -> torch.Tensor:
    """Problems whose candidate logits are constant within ``tol`` (bool [N]): spread
    ``max - min <= tol * max(1, max |logit|)``. Such an answer is the argmax of a tie (index
    0), not a choice; or NaN/inf outputs, which are degenerate too."""
    finite = torch.isfinite(logits).all(-1)
    spread = logits.max(-1).values - logits.min(-1).values
    scale = logits.abs().max(-1).values.clamp(min=1.0)
    return ~finite | (spread <= tol * scale)


def accuracy(forward: Callable[[torch.Tensor], torch.Tensor], data: Split,
             batch_size: int = 64, device: torch.device | None = None) -> float:
    """Percent of ``data`` solved by ``forward`` (a model, or a ``MaskedModel.forward_fn``).
    The project's one accuracy loop (training validation uses it too)."""
    return percent_correct(predict(forward, data, batch_size, device), data.targets)


@dataclass(frozen=True)
class Measure:
    """Accuracy (percent) and degenerate fraction of one model variant on one problem set."""

    accuracy: float
    degenerate: float
    n_problems: int


def measure(forward: Callable[[torch.Tensor], torch.Tensor], data: Split, *,
            tol: float = 1e-4, batch_size: int = 64,
            device: torch.device | None = None) -> Measure:
    """Accuracy and degeneracy (fraction of problems whose logits are constant within
    ``tol``, see :func:`degenerate_rows`) from one pass over ``data``."""
    logits = predict(forward, data, batch_size, device)
    return Measure(percent_correct(logits, data.targets),
                   float(degenerate_rows(logits, tol).float().mean()), len(data))


def degenerate_fraction(forward: Callable[[torch.Tensor], torch.Tensor], data: Split,
                        tol: float = 1e-4, batch_size: int = 64,
                        device: torch.device | None = None) -> float:
    """Fraction of ``data``'s problems on which ``forward`` outputs (near-)constant logits."""
    return measure(forward, data, tol=tol, batch_size=batch_size, device=device).degenerate
