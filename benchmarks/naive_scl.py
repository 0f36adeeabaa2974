"""The baseline the SCL benchmark and the equivalence test compare against: the original
study's (public re-implementation's) forward pass, which builds the 8 candidate-completed 3x3
matrices and encodes all 8 x 9 = 72 panels per problem.

It reuses the weights of a :class:`core.models.scl.SCL`, so the two computations can be
compared logit for logit; only the order of work differs.
"""

from __future__ import annotations

import torch

from core.models.scl import N_CANDIDATES, N_CONTEXT, SCL


def naive_forward(model: SCL, x: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, 8]`` of ``x`` ``[B, 16, H, W]`` by encoding 72 panels per problem."""
    b, _, h, w = x.shape
    ctx, cand = x[:, :N_CONTEXT], x[:, N_CONTEXT:]
    sets = torch.cat([ctx.unsqueeze(1).expand(b, N_CANDIDATES, N_CONTEXT, h, w),
                      cand.unsqueeze(2)], dim=2)  # [B, 8, 9, H, W]
    feats = model.encode(sets.reshape(b * N_CANDIDATES, N_CONTEXT + 1, h, w))
    return model.score_sets(feats.reshape(b, N_CANDIDATES, N_CONTEXT + 1, -1))


class NaiveSCL(torch.nn.Module):
    """An ``nn.Module`` wrapper: the same parameters as ``model``, the 72-image forward."""

    def __init__(self, model: SCL) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return naive_forward(self.model, x)
