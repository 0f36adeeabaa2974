"""The 7 RAVEN configurations: components, their slot boxes, and their value domains.

A box is ``(y_centre, x_centre, height, width)`` relative to the panel. An entity in a slot is
a regular polygon (or circle) whose circumradius is ``size * min(height, width) / 2``, so it
never leaves its slot whatever its rotation. The outer component of the in/out
configurations is white and big (sizes 0.7-0.9), as in RAVEN, so that the inner component is
always visible inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import CONFIGURATIONS
from core.raven.attributes import Domain, Subset

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Component:
    name: str
    slots: tuple[Box, ...]
    domain: Domain = Domain()

    @property
    def grid(self) -> bool:
        """Whether Number/Position vary (more than one slot)."""
        return len(self.slots) > 1


def grid(box: Box, n: int) -> tuple[Box, ...]:
    """An ``n`` x ``n`` grid of equal slots filling ``box``, row-major."""
    y, x, h, w = box
    return tuple((y - h / 2 + (i + 0.5) * h / n, x - w / 2 + (j + 0.5) * w / n, h / n, w / n)
                 for i in range(n) for j in range(n))


FULL: Box = (0.5, 0.5, 1.0, 1.0)
INNER: Box = (0.5, 0.5, 0.33, 0.33)
OUTER = Domain(sizes=(3, 4, 5), colors=(0,))

CONFIGS: dict[str, tuple[Component, ...]] = {
    "center_single": (Component("center", (FULL,)),),
    "distribute_four": (Component("grid", grid(FULL, 2)),),
    "distribute_nine": (Component("grid", grid(FULL, 3)),),
    "left_center_single_right_center_single": (
        Component("left", ((0.5, 0.25, 0.5, 0.5),)),
        Component("right", ((0.5, 0.75, 0.5, 0.5),))),
    "up_center_single_down_center_single": (
        Component("up", ((0.25, 0.5, 0.5, 0.5),)),
        Component("down", ((0.75, 0.5, 0.5, 0.5),))),
    "in_center_single_out_center_single": (
        Component("out", (FULL,), OUTER),
        Component("in", (INNER,))),
    "in_distribute_four_out_center_single": (
        Component("out", (FULL,), OUTER),
        Component("in", grid(INNER, 2))),
}
assert tuple(CONFIGS) == CONFIGURATIONS
MAX_COMPONENTS = 2
MAX_SLOTS = 9


class ConfigurationError(ValueError):
    """An unknown configuration name."""


def components(name: str, subset: Subset | None = None) -> tuple[Component, ...]:
    """The components of configuration ``name`` with domains restricted to ``subset``."""
    subset = subset or Subset()
    if name not in CONFIGS:
        raise ConfigurationError(f"--configs: unknown configuration {name!r} "
                                 f"(expected one of {', '.join(CONFIGS)})")
    return tuple(Component(c.name, c.slots, c.domain.restrict(subset, f"{name}/{c.name}"))
                 for c in CONFIGS[name])
