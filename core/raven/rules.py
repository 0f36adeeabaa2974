"""The four rule types, applied row-wise to one attribute group of one component.

A component panel state is ``(mask, type, size, color)``: ``mask`` is the bitmask of occupied
slots (slot ``s`` is bit ``s``, slots row-major), the rest are value indices shared by every
entity of the panel. One rule governs each group: Number *or* Position (grids only; single
slots hold Number constant at 1), Type, Size, Color. Rows are drawn independently except for
Distribute_Three, whose three rows are the cyclic shifts of one triple (a Latin square).

Levels (see ``attributes``): Arithmetic on Size adds ``index + 1``; everything else acts on
the index itself; Number on the count; Position on slot sets (Progression = cyclic shift of
the occupied slots by the step, Arithmetic = union / difference).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from core.raven.attributes import (
    ARITHMETIC,
    COLOR,
    CONSTANT,
    DISTRIBUTE_THREE,
    NUMBER,
    POSITION,
    PROGRESSION,
    SIZE,
    TYPE,
)
from core.raven.configurations import Component

STEPS = (-2, -1, 1, 2)
SIGNS = (-1, 1)


@dataclass(frozen=True)
class Rule:
    rule: int  # CONSTANT ... DISTRIBUTE_THREE
    param: int  # progression step, arithmetic sign, distribute_three shift; 0 for constant
    attribute: int  # NUMBER, POSITION, TYPE, SIZE or COLOR


def level(attribute: int, v: int) -> int:
    """The quantity Arithmetic adds: Size counts from 1, the others from their index."""
    return v + 1 if attribute == SIZE else v


def rotate(mask: int, step: int, n: int) -> int:
    """Shift the occupied slots of ``mask`` cyclically by ``step`` over ``n`` slots."""
    step %= n
    full = (1 << n) - 1
    return ((mask << step) | (mask >> (n - step))) & full


@functools.cache
def scalar_rows(rule: int, param: int, attribute: int, values: tuple[int, ...]) -> list[tuple]:
    """All rows ``(a, b, c)`` over ``values`` that obey ``rule``/``param`` (not Distribute_Three).
    Cached (a pure function of small arguments); callers must not modify the list."""
    vs = set(values)
    if rule == CONSTANT:
        return [(v, v, v) for v in values]
    if rule == PROGRESSION:
        return [(v, v + param, v + 2 * param) for v in values
                if v + param in vs and v + 2 * param in vs]
    rows = []
    by_level = {level(attribute, v): v for v in values}
    for a in values:
        for b in values:
            if level(attribute, b) < 1:
                continue
            c = by_level.get(level(attribute, a) + param * level(attribute, b))
            if c is not None:
                rows.append((a, b, c))
    return rows


@functools.cache
def _options(attribute: int, values: tuple[int, ...]) -> dict[int, list[int]]:
    """Feasible params per rule type for a scalar attribute over ``values``."""
    opts: dict[int, list[int]] = {CONSTANT: [0]}
    steps = [d for d in STEPS if scalar_rows(PROGRESSION, d, attribute, values)]
    if steps:
        opts[PROGRESSION] = steps
    if attribute != TYPE:
        signs = [s for s in SIGNS if scalar_rows(ARITHMETIC, s, attribute, values)]
        if signs:
            opts[ARITHMETIC] = signs
    if len(values) >= 3:
        opts[DISTRIBUTE_THREE] = [-1, 1]
    return opts


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _latin(triple: tuple, shift: int) -> list[tuple]:
    return [tuple(triple[(j + shift * r) % 3] for j in range(3)) for r in range(3)]


def sample_scalar(rng: np.random.Generator, attribute: int, values: tuple[int, ...],
                  kinds: tuple[int, ...] | None = None) -> tuple[Rule, list[tuple]]:
    """A rule for ``attribute`` over ``values`` (of the rule types ``kinds``, default all
    feasible ones) and the three rows it generates."""
    opts = _options(attribute, values)
    if kinds is not None:
        opts = {k: v for k, v in opts.items() if k in kinds}
    rule = _pick(rng, sorted(opts))
    param = _pick(rng, opts[rule])
    if rule == DISTRIBUTE_THREE:
        idx = rng.choice(len(values), 3, replace=False)
        return Rule(rule, param, attribute), _latin(tuple(values[i] for i in idx), param)
    rows = scalar_rows(rule, param, attribute, values)
    return Rule(rule, param, attribute), [_pick(rng, rows) for _ in range(3)]


def random_mask(rng: np.random.Generator, n_slots: int, count: int) -> int:
    """A uniformly random set of ``count`` of ``n_slots`` slots, as a bitmask."""
    mask = 0
    for s in rng.choice(n_slots, count, replace=False):
        mask |= 1 << int(s)
    return mask


def _position_rows(rng: np.random.Generator, rule: int, param: int, n: int) -> list[tuple]:
    full = (1 << n) - 1

    def any_mask() -> int:
        return int(rng.integers(1, full + 1))

    if rule == CONSTANT:
        return [(m, m, m) for m in (any_mask() for _ in range(3))]
    if rule == DISTRIBUTE_THREE:
        triple: list[int] = []
        while len(triple) < 3:
            m = any_mask()
            if m not in triple:
                triple.append(m)
        return _latin(tuple(triple), param)
    rows = []
    while len(rows) < 3:
        a = any_mask()
        if rule == PROGRESSION:
            b = rotate(a, param, n)
            if b != a:
                rows.append((a, b, rotate(b, param, n)))
            continue
        b = any_mask()
        c = (a | b) if param > 0 else (a & ~b)
        if c and c != a and c != b:
            rows.append((a, b, c))
    return rows


NON_CONSTANT = (PROGRESSION, ARITHMETIC, DISTRIBUTE_THREE)


def can_vary(attribute: int, values: tuple[int, ...]) -> bool:
    """Whether some non-constant rule exists for ``attribute`` over ``values``."""
    return any(k != CONSTANT for k in _options(attribute, values))


def type_rows_to(rng: np.random.Generator, values: tuple[int, ...],
                 answer: int) -> tuple[Rule, list[tuple]]:
    """A non-constant Type rule (Progression or Distribute_Three, drawn half and half whatever
    ``answer``) whose rows end in ``answer`` (the answer panel's type)."""
    vs = set(values)
    if rng.random() < 0.5:
        steps = [d for d in STEPS if answer - d in vs and answer - 2 * d in vs]
        d = _pick(rng, steps)
        rows = [_pick(rng, scalar_rows(PROGRESSION, d, TYPE, values)) for _ in range(2)]
        return Rule(PROGRESSION, d, TYPE), rows + [(answer - 2 * d, answer - d, answer)]
    shift = _pick(rng, (-1, 1))
    others = [v for v in values if v != answer]
    triple = [others[int(i)] for i in rng.choice(len(others), 2, replace=False)]
    triple.insert((2 + 2 * shift) % 3, answer)  # the cell the Latin square puts at [2][2]
    return Rule(DISTRIBUTE_THREE, shift, TYPE), _latin(tuple(triple), shift)


def sample_component(rng: np.random.Generator, comp: Component, regime: str | None = None,
                     answer_type: int | None = None
                     ) -> tuple[list[Rule], list[list[tuple[int, int, int, int]]]]:
    """Rules of the four groups of ``comp`` and its 3x3 matrix of panel states.

    ``regime`` (``attributes.REGIMES``, "one" resolved by the caller): None draws every rule
    freely; "type" draws a non-constant Type rule ending in ``answer_type``; "color" / "size"
    a non-constant rule for that group where the domain allows one, Constant elsewhere."""
    n = len(comp.slots)
    fixed = regime in ("color", "size")
    if not comp.grid:
        numpos = Rule(CONSTANT, 0, NUMBER)
        masks = [[1] * 3 for _ in range(3)]
    elif fixed:
        numpos = Rule(CONSTANT, 0, POSITION)
        masks = [list(r) for r in _position_rows(rng, CONSTANT, 0, n)]
    elif rng.random() < 0.5:
        numpos, counts = sample_scalar(rng, NUMBER, tuple(range(1, n + 1)))
        masks = [[random_mask(rng, n, k) for k in row] for row in counts]
    else:
        rule = int(rng.integers(4))
        param = 0 if rule == CONSTANT else _pick(rng, STEPS if rule == PROGRESSION else SIGNS)
        numpos = Rule(rule, param, POSITION)
        masks = [list(r) for r in _position_rows(rng, rule, param, n)]
    rules = [numpos]
    grids = []
    for group, attribute in ((1, TYPE), (2, SIZE), (3, COLOR)):
        values = comp.domain.values(group)
        if regime == "type" and attribute == TYPE:
            rule, rows = type_rows_to(rng, values, answer_type)  # type: ignore[arg-type]
        elif fixed:
            ruled = {"color": COLOR, "size": SIZE}[regime] == attribute  # type: ignore[index]
            kinds = NON_CONSTANT if ruled and can_vary(attribute, values) else (CONSTANT,)
            rule, rows = sample_scalar(rng, attribute, values, kinds)
        else:
            rule, rows = sample_scalar(rng, attribute, values)
        rules.append(rule)
        grids.append(rows)
    states = [[(masks[r][c], grids[0][r][c], grids[1][r][c], grids[2][r][c]) for c in range(3)]
              for r in range(3)]
    return rules, states
