"""Scattering Compositional Learner (SCL, Wu et al. 2020) for 16-panel Raven problems.

Layout follows the public re-implementation the original study used (object CNN -> linear ->
feed-forward residual -> attribute "scattering" network (heads through one shared MLP) ->
feed-forward residual -> relationship network over the set of 9 panels, per head -> one logit
per candidate; ReLU after each BatchNorm as in the SCL paper's ConvBnRelu), with its hyper-parameters coming from ``ModelConfig``.

Efficiency: a problem has only 16 distinct panels (8 context + 8 candidates). The per-panel
part (vision, attribute, ff_residual) runs once on those 16 and the 8 candidate-completed
3x3 sets are then *gathered*, instead of encoding 8 x 9 = 72 images. Every per-panel layer
acts on one panel at a time, so the logits equal the 72-image computation except for the
BatchNorm batch statistics in training mode (72 images weight the context panels 8x more).

Parameter names begin with their sub-network (``vision.``, ``attribute.``, ``ff_residual.``,
``relation.``, ``logit.``) because the module metrics group weights by sub-network.
"""

from __future__ import annotations

import torch
from torch import nn

N_CONTEXT = 8
N_CANDIDATES = 8


def mlp(dims: list[int], relu_last: bool = False) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU between (and after, if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if relu_last or i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FeedForwardResidual(nn.Module):
    """x + Linear(ReLU(LayerNorm(Linear(x)))), hidden width ``dim * expansion``."""

    def __init__(self, dim: int, expansion: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * expansion), nn.LayerNorm(dim * expansion),
                                 nn.ReLU(), nn.Linear(dim * expansion, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ConvEncoder(nn.Module):
    """Per-panel object CNN: stride-2 3x3 convs with BatchNorm + ReLU, flatten, linear + ReLU,
    then a feed-forward residual block (as in the public re-implementation)."""

    def __init__(self, image_size: int, channels: list[int], out_dim: int,
                 ff_expansion: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Conv2d(a, b, 3, stride=2, padding=1))
            if i < len(channels) - 2:
                layers.append(nn.BatchNorm2d(b))
            layers.append(nn.ReLU())
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():  # eval: BatchNorm cannot take batch statistics of one 1x1 map
            flat = self.conv.eval()(torch.zeros(1, channels[0], image_size, image_size)).numel()
        self.conv.train()
        self.fc = nn.Linear(flat, out_dim)
        self.ff = FeedForwardResidual(out_dim, ff_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, out_dim]
        return self.ff(torch.relu(self.fc(self.conv(x).flatten(1))))


class SCL(nn.Module):
    """SCL over ``[B, 16, H, W]`` float panels (8 context, 8 candidates) -> logits ``[B, 8]``."""

    arch = "scl"

    def __init__(self, image_size: int, conv_channels: list[int], conv_out: int,
                 attr_heads: int, attr_hidden: list[int], rel_heads: int,
                 rel_hidden: list[int], ff_expansion: int) -> None:
        super().__init__()
        if conv_out % attr_heads:
            raise ValueError(f"model.conv_out ({conv_out}) must be divisible by "
                             f"model.attr_heads ({attr_heads})")
        if conv_out % rel_heads:
            raise ValueError(f"model.conv_out ({conv_out}) must be divisible by "
                             f"model.rel_heads ({rel_heads})")
        if conv_channels[0] != 1:
            raise ValueError(f"model.conv_channels must start with 1 (grayscale panels), "
                             f"got {conv_channels}")
        self.image_size = image_size
        self.attr_heads, self.rel_heads = attr_heads, rel_heads
        head = conv_out // attr_heads
        self.vision = ConvEncoder(image_size, conv_channels, conv_out, ff_expansion)
        self.attribute = mlp([head, *attr_hidden, head])
        self.ff_residual = FeedForwardResidual(conv_out, ff_expansion)
        self.relation = mlp([(N_CONTEXT + 1) * (conv_out // rel_heads), *rel_hidden])
        self.logit = nn.Linear(rel_hidden[-1] * rel_heads, 1)

    def encode(self, panels: torch.Tensor) -> torch.Tensor:
        """Per-panel features ``[B, P, H, W] -> [B, P, conv_out]`` (vision, attribute, ff)."""
        b, p, h, w = panels.shape
        feats = self.vision(panels.reshape(b * p, 1, h, w))
        feats = self.attribute(feats.reshape(b * p, self.attr_heads, -1))
        return self.ff_residual(feats.reshape(b, p, -1))

    def score_sets(self, sets: torch.Tensor) -> torch.Tensor:
        """Logits of candidate-completed sets ``[B, M, 9, conv_out] -> [B, M]``."""
        b, m, n, d = sets.shape
        heads = sets.reshape(b, m, n, self.rel_heads, d // self.rel_heads).transpose(2, 3)
        rel = self.relation(heads.flatten(3))  # [B, M, rel_heads, rel_hidden[-1]]
        return self.logit(rel.flatten(2)).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != N_CONTEXT + N_CANDIDATES:
            raise ValueError(f"SCL expects panels [B, 16, H, W], got {tuple(x.shape)}")
        feats = self.encode(x)
        ctx, cand = feats[:, :N_CONTEXT], feats[:, N_CONTEXT:]
        b, _, d = feats.shape
        sets = torch.cat([ctx.unsqueeze(1).expand(b, N_CANDIDATES, N_CONTEXT, d),
                          cand.unsqueeze(2)], dim=2)  # [B, 8, 9, d]
        return self.score_sets(sets)
