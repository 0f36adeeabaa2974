"""A small non-SCL baseline: a CNN over the 16 panels stacked as channels, then an MLP.

It has no notion of rows or candidates, so it shows (a) that weight masking is model-agnostic
and (b) how much SCL's structure buys. Parameter names use the same sub-network prefixes
(``vision.`` for the CNN, ``relation.`` for the MLP, ``logit.`` for the output layer).
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.scl import N_CANDIDATES, N_CONTEXT, mlp


class CNNMLP(nn.Module):
    """``[B, 16, H, W] -> [B, 8]``: conv stack (channels after the first from ``conv_channels``)
    on 16-channel input, linear to ``conv_out``, MLP ``rel_hidden``, linear to 8 logits."""

    arch = "cnn_mlp"

    def __init__(self, image_size: int, conv_channels: list[int], conv_out: int,
                 rel_hidden: list[int], **_unused: object) -> None:
        super().__init__()
        chans = [N_CONTEXT + N_CANDIDATES, *conv_channels[1:]]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        self.vision = nn.Sequential(*layers)
        with torch.no_grad():  # eval: BatchNorm cannot take batch statistics of one 1x1 map
            flat = self.vision.eval()(torch.zeros(1, chans[0], image_size, image_size)).numel()
        self.vision.train()
        self.relation = mlp([flat, conv_out, *rel_hidden], relu_last=True)
        self.logit = nn.Linear(rel_hidden[-1] if rel_hidden else conv_out, N_CANDIDATES)
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != N_CONTEXT + N_CANDIDATES:
            raise ValueError(f"CNNMLP expects panels [B, 16, H, W], got {tuple(x.shape)}")
        return self.logit(self.relation(self.vision(x).flatten(1)))
