"""Answer sets: 8 candidates, one the answer, built from the answer panel.

* ``iraven`` (Hu et al. 2021): an attribute bisection tree. Three levels; at each level one
  ruled attribute is picked and every candidate so far is copied with that attribute moved to a
  new value (one fresh value per value present, the same mapping for all copies). The 8
  candidates are then the product of two values per level, so every value occurs equally often
  and no candidate stands out without the context.
* ``raven`` (Zhang et al. 2019, biased): each wrong candidate is the answer with one attribute
  changed, so the answer is the candidate most like the others.

Only ruled attributes are changed (the Number/Position group changes the one its rule governs),
so every wrong candidate breaks a rule: exactly one candidate is right. Candidates are states
``[(mask, type, size, color) per component]``; they are pairwise distinct.
"""

from __future__ import annotations

import numpy as np

from core.raven.attributes import NUMBER, POSITION
from core.raven.configurations import Component
from core.raven.rules import Rule, random_mask

ANSWER_SETS = ("iraven", "raven")
State = tuple[tuple[int, int, int, int], ...]  # one (mask, type, size, color) per component


class AnswerSetError(ValueError):
    """No valid candidate set exists for these domains (too few values to vary)."""


def _domain(comp: Component, rule: Rule, group: int) -> tuple[int, ...]:
    if group == 0:
        n = len(comp.slots)
        if rule.attribute == NUMBER:
            return tuple(range(1, n + 1))
        return tuple(range(1, 1 << n))
    return comp.domain.values(group)


def _get(state: State, c: int, group: int, rule: Rule) -> int:
    v = state[c][group]
    if group == 0 and rule.attribute == NUMBER:
        return v.bit_count()
    return v


def _set(rng: np.random.Generator, state: State, c: int, group: int, rule: Rule,
         comp: Component, value: int) -> State:
    parts = list(state[c])
    if group == 0 and rule.attribute == NUMBER:
        parts[0] = random_mask(rng, len(comp.slots), value)
    else:
        parts[group] = value
    return tuple(tuple(parts) if i == c else s for i, s in enumerate(state))  # type: ignore


def _with(state: State, c: int, group: int, value: int) -> State:
    parts = list(state[c])
    parts[group] = value
    return tuple(tuple(parts) if i == c else s for i, s in enumerate(state))  # type: ignore


def attribute_keys(comps: tuple[Component, ...], rules: list[list[Rule]]) -> list[tuple]:
    """The (component, group) pairs a candidate may change: ruled, with >= 2 values."""
    keys = []
    for c, comp in enumerate(comps):
        for group in range(4):
            if group == 0 and not comp.grid:
                continue
            if group == 0 and rules[c][0].attribute not in (NUMBER, POSITION):
                continue
            if len(_domain(comp, rules[c][group], group)) >= 2:
                keys.append((c, group))
    return keys


def iraven(rng: np.random.Generator, answer: State, comps, rules,
           first: tuple[int, int] | None = None) -> list[State]:
    """The 8 candidates of the bisection tree; ``[0]`` is the answer. ``first``: the
    (component, group) the first level branches on (e.g. Type, so that a candidate differing
    from the answer only there exists)."""
    keys = attribute_keys(comps, rules)
    nodes = [answer]
    used: list[tuple] = []
    for level in range(3):
        fits = []
        for key in keys:
            c, g = key
            present = {_get(s, c, g, rules[c][g]) for s in nodes}
            if len(_domain(comps[c], rules[c][g], g)) >= 2 * len(present):
                fits.append(key)
        fresh = [k for k in fits if k not in used]
        pool = fresh or fits
        if level == 0 and first is not None:
            pool = [k for k in pool if k == first]
        if not pool:
            raise AnswerSetError("cannot build 8 distinct I-RAVEN candidates: too few attribute "
                                 "values to vary (subset too narrow)")
        c, g = pool[int(rng.integers(len(pool)))]
        used.append((c, g))
        rule = rules[c][g]
        present = sorted({_get(s, c, g, rule) for s in nodes})
        free = [v for v in _domain(comps[c], rule, g) if v not in present]
        new = rng.choice(len(free), len(present), replace=False)
        mapping = {p: free[int(i)] for p, i in zip(present, new)}
        if g == 0 and rule.attribute == NUMBER:
            # one new slot set per old slot set: the copies mirror the originals exactly
            masks = {m: random_mask(rng, len(comps[c].slots), mapping[m.bit_count()])
                     for m in sorted({s[c][0] for s in nodes})}
            nodes = nodes + [_with(s, c, 0, masks[s[c][0]]) for s in nodes]
        else:
            nodes = nodes + [_with(s, c, g, mapping[s[c][g]]) for s in nodes]
    return nodes


def raven(rng: np.random.Generator, answer: State, comps, rules,
          first: tuple[int, int] | None = None) -> list[State]:
    """The answer and 7 distinct one-attribute modifications of it; ``[0]`` is the answer.
    ``first``: the (component, group) the first modification changes."""
    keys = attribute_keys(comps, rules)
    if not keys or (first is not None and first not in keys):
        raise AnswerSetError("cannot build RAVEN candidates: no attribute can vary")
    out = [answer]
    for attempt in range(10_000):
        c, g = first if attempt == 0 and first is not None else keys[int(rng.integers(len(keys)))]
        rule = rules[c][g]
        cur = _get(answer, c, g, rule)
        free = [v for v in _domain(comps[c], rule, g) if v != cur]
        cand = _set(rng, answer, c, g, rule, comps[c], free[int(rng.integers(len(free)))])
        if cand not in out:
            out.append(cand)
            if len(out) == 8:
                return out
    raise AnswerSetError("cannot build 8 distinct RAVEN candidates (subset too narrow)")


def build(kind: str, rng: np.random.Generator, answer: State, comps, rules,
          first: tuple[int, int] | None = None) -> list[State]:
    if kind not in ANSWER_SETS:
        raise ValueError(f"--answers: expected one of {', '.join(ANSWER_SETS)}, got {kind!r}")
    return (iraven if kind == "iraven" else raven)(rng, answer, comps, rules, first)
