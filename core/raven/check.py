"""Independent rule checker: which candidates of a stored problem satisfy every rule.

Written from the specification (RAVEN, Zhang et al. 2019, and the level conventions in
``core.raven.attributes``), not from the generator: it reads only the stored metadata
(``attrs`` [16, C, S, 4] = type, size, color, angle per panel, component and slot, -1 when
empty; ``rules`` [C, 4, 3] = rule id, parameter, attribute per component and group) and the
slot count of each component, and re-derives every attribute from the entities.

A candidate passes when, with it as the ninth panel, every component of every panel has at
least one entity with legal, uniform type/size/color values, and every row of the 3x3 matrix
obeys each stored rule.

    python -m core.raven check FILE      # prints the passing candidates of a problem file
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.raven.store import load_npz

# slot counts per component, from the configuration table of the specification
SLOTS = {
    "center_single": (1,),
    "distribute_four": (4,),
    "distribute_nine": (9,),
    "left_center_single_right_center_single": (1, 1),
    "up_center_single_down_center_single": (1, 1),
    "in_center_single_out_center_single": (1, 1),
    "in_distribute_four_out_center_single": (1, 4),
}
N_VALUES = (5, 6, 10, 8)  # types, sizes, colors, angles
CONST, PROG, ARITH, DIST3 = 0, 1, 2, 3
NUM, POS, TYP, SIZ, COL = 0, 1, 2, 3, 4


def _panel_values(ent: np.ndarray, n_slots: int) -> dict[int, object] | None:
    """Attribute values of one component in one panel, or None when the panel is illegal."""
    if (ent[n_slots:] != -1).any():
        return None  # an entity outside the component's slots
    ent = ent[:n_slots]
    present = ent[:, 0] >= 0
    if not present.any():
        return None
    occ = ent[present]
    if ((occ < 0) | (occ >= np.array(N_VALUES))).any():
        return None
    if (ent[~present] != -1).any():
        return None
    if any(len(set(occ[:, k].tolist())) != 1 for k in range(3)):
        return None  # entities of a component share type, size and color
    return {NUM: int(present.sum()), POS: frozenset(np.flatnonzero(present).tolist()),
            TYP: int(occ[0, 0]), SIZ: int(occ[0, 1]), COL: int(occ[0, 2])}


def _amount(attribute: int, v) -> int:
    # Arithmetic adds sizes counted from 1 (0.4 -> 1 ... 0.9 -> 6); colour and count as they are
    return v + 1 if attribute == SIZ else v


def _shift(cells: frozenset, step: int, n: int) -> frozenset:
    return frozenset((p + step) % n for p in cells)


def _row_ok(rule: int, param: int, attribute: int, row: list, n_slots: int) -> bool:
    a, b, c = row
    if rule == CONST:
        return a == b == c
    if rule == PROG:
        if attribute == POS:
            return b == _shift(a, param, n_slots) and c == _shift(b, param, n_slots) and a != b
        return param != 0 and b - a == param and c - b == param
    if rule == ARITH:
        if attribute == POS:
            return c == (a | b if param > 0 else a - b)
        if attribute == TYP or param not in (-1, 1) or _amount(attribute, b) < 1:
            return False
        return _amount(attribute, c) == _amount(attribute, a) + param * _amount(attribute, b)
    return False


def _matrix_ok(rule: int, param: int, attribute: int, m: list[list], n_slots: int) -> bool:
    if rule == DIST3:
        rows_ok = all(len(set(r)) == 3 for r in m) and len({frozenset(r) for r in m}) == 1
        cols_ok = all(len({m[r][c] for r in range(3)}) == 3 for c in range(3))
        return rows_ok and cols_ok
    return all(_row_ok(rule, param, attribute, row, n_slots) for row in m)


def passing(attrs: np.ndarray, rules: np.ndarray, configuration: str) -> np.ndarray:
    """bool [8]: which candidates complete every rule of the problem."""
    if configuration not in SLOTS:
        raise ValueError(f"configuration: unknown {configuration!r}")
    out = np.zeros(8, bool)
    for k in range(8):
        panels = [attrs[i] for i in range(8)] + [attrs[8 + k]]
        ok = True
        for comp, n_slots in enumerate(SLOTS[configuration]):
            vals = [_panel_values(p[comp], n_slots) for p in panels]
            if any(v is None for v in vals):
                ok = False
                break
            for group in range(4):
                rule, param, attribute = (int(x) for x in rules[comp, group])
                want = (NUM, POS) if group == 0 else (group + 1,)
                if attribute not in want or rule not in (CONST, PROG, ARITH, DIST3):
                    ok = False
                    break
                m = [[vals[3 * r + c][attribute] for c in range(3)] for r in range(3)]
                if not _matrix_ok(rule, param, attribute, m, n_slots):
                    ok = False
                    break
            if not ok:
                break
        out[k] = ok
    return out


def check_file(path: str | Path) -> list[np.ndarray]:
    """Passing candidates of every problem in a shard or per-problem file."""
    path = Path(path)
    z = load_npz(path, ("image", "target", "attrs", "rules"))
    cfg = str(z["configuration"]) if "configuration" in z else str(z["structure"][0])
    if z["attrs"].ndim == 4:
        return [passing(z["attrs"], z["rules"], cfg)]
    return [passing(a, r, cfg) for a, r in zip(z["attrs"], z["rules"])]
