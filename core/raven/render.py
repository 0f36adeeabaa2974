"""Anti-aliased rendering of panels to grayscale uint8 (255 = white), numpy only.

Each entity is a regular polygon (or circle) drawn from its exact signed distance field
``d`` (pixels, negative inside): fill coverage ``clip(0.5 - d, 0, 1)`` and an outline of width
``2 * size / 160`` pixels (2 px at 160 px, as in RAVEN) with coverage
``clip(w / 2 + 0.5 - |d|, 0, 1)``. Coverage varies continuously with the geometry, so two
entities that differ in type, size or colour differ in pixels.

Entities are composited in "ink" (0 = white, 1 = black): ``ink = ink * (1 - A) + c * P + Q``
with ``A`` the total coverage, ``P`` the fill not under the outline and ``Q`` the outline.
These three patches depend only on the slot, type, size and angle, so they are cached per
renderer (a problem reuses a handful of sprites 16 times): the cost of a panel is a few
vectorised array operations per entity.
"""

from __future__ import annotations

import math

import numpy as np

from core.raven.attributes import ANGLES, COLORS, SIDES, SIZES
from core.raven.configurations import Box, Component


class SizeError(ValueError):
    """An image size that is not a positive multiple of 16."""


def check_size(size: int) -> int:
    if not isinstance(size, int) or size <= 0 or size % 16:
        raise SizeError(f"--size: expected a positive multiple of 16, got {size!r}")
    return size


def sdf(sides: int, radius: float, angle: float, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Signed distance (pixels) from points (y, x), relative to the centre, to a regular
    ``sides``-gon of circumradius ``radius`` rotated by ``angle`` degrees (0 sides = circle).
    At angle 0 one vertex points up."""
    r = np.hypot(y, x)
    if sides == 0:
        return r - radius
    half = math.pi / sides
    phi = np.arctan2(y, x) - (math.radians(angle) - math.pi / 2 - half)
    phi = np.mod(phi + half, 2 * half) - half  # angle within this edge's sector
    qx, qy = r * np.cos(phi), np.abs(r * np.sin(phi))
    apothem, half_edge = radius * math.cos(half), radius * math.sin(half)
    dx, dy = qx - apothem, np.maximum(qy - half_edge, 0.0)
    # outside: distance to this edge segment; inside: to this edge's line (the nearest edge)
    return np.where(dx > 0, np.hypot(dx, dy), dx)


class Renderer:
    """Renders panels of ``size`` x ``size`` pixels; caches entity sprites."""

    def __init__(self, size: int):
        self.size = check_size(size)
        self.line = 2.0 * size / 160.0
        self._cache: dict[tuple, tuple] = {}

    def sprite(self, box: Box, type_: int, size: int, angle: int) -> tuple:
        sides = SIDES[type_]
        key = (box, type_, size, 0 if sides == 0 else angle)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n = self.size
        cy, cx = box[0] * n, box[1] * n
        radius = SIZES[size] * min(box[2], box[3]) * n / 2
        reach = radius + self.line / 2 + 1.0
        y0, y1 = max(0, math.floor(cy - reach)), min(n, math.ceil(cy + reach))
        x0, x1 = max(0, math.floor(cx - reach)), min(n, math.ceil(cx + reach))
        yy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - cy)[:, None]
        xx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - cx)[None, :]
        d = sdf(sides, radius, ANGLES[angle], yy, xx)
        fill = np.clip(0.5 - d, 0.0, 1.0)
        line = np.clip(self.line / 2 + 0.5 - np.abs(d), 0.0, 1.0)
        keep = (1.0 - fill) * (1.0 - line)  # 1 - A
        paint = fill * (1.0 - line)  # P
        hit = (slice(y0, y1), slice(x0, x1), keep.astype(np.float32),
               paint.astype(np.float32), line.astype(np.float32))
        self._cache[key] = hit
        return hit

    def panel(self, comps: tuple[Component, ...], state, angles,
              ink: np.ndarray | None = None) -> np.ndarray:
        """Ink [size, size] float32 of one panel: ``state`` = (mask, type, size, color) per
        component (drawn in order, so inner components lie on top), ``angles`` [C, S].
        Draws into ``ink`` (zeroed first) when given."""
        if ink is None:
            ink = np.zeros((self.size, self.size), np.float32)
        else:
            ink.fill(0.0)
        for c, comp in enumerate(comps):
            mask, type_, size, color = state[c]
            shade = np.float32(1.0 - COLORS[color] / 255.0)
            for s, box in enumerate(comp.slots):
                if mask >> s & 1:
                    ys, xs, keep, paint, line = self.sprite(box, type_, size, int(angles[c][s]))
                    patch = ink[ys, xs]
                    patch *= keep
                    patch += shade * paint + line
        return ink

    def problem(self, comps, states, angles) -> np.ndarray:
        """uint8 [16, size, size] (255 = white) of 16 panel states."""
        ink = np.empty((len(states), self.size, self.size), np.float32)
        for i, (st, an) in enumerate(zip(states, angles)):
            self.panel(comps, st, an, ink[i])
        return to_uint8(ink)


def to_uint8(ink: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] -> uint8 gray, rounded to nearest (modifies ``ink``)."""
    np.clip(ink, 0.0, 1.0, out=ink)
    ink *= -255.0
    ink += 255.5
    return ink.astype(np.uint8)
