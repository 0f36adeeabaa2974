"""Attribute value sets, rule and attribute ids, and per-component value domains with subsets.

Values are stored as *indices* into the tables below (``core.tasks.SHAPES`` order for Type).
Rules act on *levels*: Type, Size and Color rules act on the index, except Arithmetic, which
adds levels with Size counted from 1 (level = index + 1, so 0.4 + 0.4 = 0.5 is excluded and
sums grow) and Color from 0 (white). Number acts on the count of entities, Position on the set
of occupied slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.tasks import SHAPES

TYPES = SHAPES  # triangle, square, pentagon, hexagon, circle
SIDES = (3, 4, 5, 6, 0)  # polygon sides per type; 0 = circle
SIZES = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # scale of the slot box
COLORS = (255, 224, 196, 168, 140, 112, 84, 56, 28, 0)  # fill gray levels
ANGLES = (-135, -90, -45, 0, 45, 90, 135, 180)  # noise, never ruled

RULES = ("constant", "progression", "arithmetic", "distribute_three")
CONSTANT, PROGRESSION, ARITHMETIC, DISTRIBUTE_THREE = range(4)
ATTRIBUTES = ("number", "position", "type", "size", "color")  # meta_target order
NUMBER, POSITION, TYPE, SIZE, COLOR = range(5)
GROUPS = ("numpos", "type", "size", "color")  # one rule per group per component

COLOR_SUBSETS = {"light": tuple(range(0, 5)), "dark": tuple(range(5, 10))}
SIZE_SUBSETS = {"small": tuple(range(0, 3)), "big": tuple(range(3, 6))}
# Rule regimes of the task families (``core.tasks``): "type": every component's Type follows a
# non-constant rule and the candidates branch on Type first; "color" / "size": that group
# follows a non-constant rule (where the component's domain allows one), every other group is
# Constant; "one": "color" or "size", drawn per problem.
REGIMES = ("type", "color", "size", "one")


class SubsetError(ValueError):
    """A subset that leaves some attribute of some component no allowed value."""


@dataclass(frozen=True)
class Subset:
    """Which problems to generate: every entity of ``shape``; or no entity of
    ``exclude_shape``; optionally light/dark colours and small/big sizes only; optionally a
    rule regime (``REGIMES``) and, with regime "type", the shape of every entity of the answer
    panel (``answer_shape``) or a shape no entity of the answer panel has
    (``answer_not_shape``)."""

    shape: str | None = None
    exclude_shape: str | None = None
    color: str | None = None
    size: str | None = None
    rule: str | None = None
    answer_shape: str | None = None
    answer_not_shape: str | None = None

    def __post_init__(self) -> None:
        if self.rule is not None and self.rule not in REGIMES:
            raise SubsetError(f"rule: expected one of {', '.join(REGIMES)}, got {self.rule!r}")
        for name in ("answer_shape", "answer_not_shape"):
            v = getattr(self, name)
            if v is not None and (v not in TYPES or self.rule != "type"):
                raise SubsetError(f"{name}: expected a shape ({', '.join(TYPES)}) with rule "
                                  f"'type', got {v!r} with rule {self.rule!r}")
        if self.answer_shape is not None and self.answer_not_shape is not None:
            raise SubsetError("answer_shape and answer_not_shape: give at most one of them")
        if self.rule == "type" and (self.shape or self.exclude_shape):
            raise SubsetError("rule 'type' needs every shape: no --shape / --exclude-shape")
        for name in ("shape", "exclude_shape"):
            v = getattr(self, name)
            if v is not None and v not in TYPES:
                raise SubsetError(f"--{name.replace('_', '-')}: unknown shape {v!r} "
                                  f"(expected one of {', '.join(TYPES)})")
        if self.shape is not None and self.exclude_shape is not None:
            raise SubsetError("--shape and --exclude-shape: give at most one of them")
        if self.color is not None and self.color not in COLOR_SUBSETS:
            raise SubsetError(f"--color-subset: expected one of {', '.join(COLOR_SUBSETS)}, "
                              f"got {self.color!r}")
        if self.size is not None and self.size not in SIZE_SUBSETS:
            raise SubsetError(f"--size-subset: expected one of {', '.join(SIZE_SUBSETS)}, "
                              f"got {self.size!r}")

    @property
    def code(self) -> int:
        """A small integer identifying the subset, mixed into per-problem seeds."""
        t = 0 if self.shape is None else 1 + TYPES.index(self.shape)
        e = 0 if self.exclude_shape is None else 1 + TYPES.index(self.exclude_shape)
        c = 0 if self.color is None else 1 + list(COLOR_SUBSETS).index(self.color)
        s = 0 if self.size is None else 1 + list(SIZE_SUBSETS).index(self.size)
        r = 0 if self.rule is None else 1 + REGIMES.index(self.rule)
        a = 0 if self.answer_shape is None else 1 + TYPES.index(self.answer_shape)
        n = 0 if self.answer_not_shape is None else 1 + TYPES.index(self.answer_not_shape)
        # the subsets without a regime keep the codes (and so the problems) they always had
        return ((t * 6 + e) * 3 + c) * 3 + s + 324 * ((r * 6 + a) * 6 + n)

    def answer_types(self) -> tuple[int, ...]:
        """Type indices the answer panel's entities may have (regime "type")."""
        if self.answer_shape is not None:
            return (TYPES.index(self.answer_shape),)
        return tuple(t for t in range(len(TYPES)) if TYPES[t] != self.answer_not_shape)

    @property
    def label(self) -> str:
        parts = [self.shape or "", f"not_{self.exclude_shape}" if self.exclude_shape else "",
                 self.color or "", self.size or "",
                 f"{self.rule}_rule" if self.rule else "",
                 f"answer_{self.answer_shape}" if self.answer_shape else "",
                 f"answer_not_{self.answer_not_shape}" if self.answer_not_shape else ""]
        return "+".join(p for p in parts if p) or "all"


@dataclass(frozen=True)
class Domain:
    """Allowed value indices of one component's attributes."""

    types: tuple[int, ...] = tuple(range(len(TYPES)))
    sizes: tuple[int, ...] = tuple(range(len(SIZES)))
    colors: tuple[int, ...] = tuple(range(len(COLORS)))

    def restrict(self, subset: Subset, where: str) -> Domain:
        types, sizes, colors = self.types, self.sizes, self.colors
        if subset.shape is not None:
            types = tuple(t for t in types if TYPES[t] == subset.shape)
        if subset.exclude_shape is not None:
            types = tuple(t for t in types if TYPES[t] != subset.exclude_shape)
        if subset.color is not None:
            colors = tuple(c for c in colors if c in COLOR_SUBSETS[subset.color])
        if subset.size is not None:
            sizes = tuple(s for s in sizes if s in SIZE_SUBSETS[subset.size])
        for name, vals in (("type", types), ("size", sizes), ("color", colors)):
            if not vals:
                raise SubsetError(f"empty subset after filtering: {where} allows no {name} "
                                  f"in subset {subset.label!r}")
        return Domain(types, sizes, colors)

    def values(self, group: int) -> tuple[int, ...]:
        return (None, self.types, self.sizes, self.colors)[group]  # type: ignore[return-value]
