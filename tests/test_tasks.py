"""core.tasks: the task families' names, complements and references."""

import pytest

from core.config import SHAPES
from core.tasks import ALL, FAMILIES, SET_SPECS, all_tasks, family_of


def test_original_keeps_the_study_names():
    fam = FAMILIES["original"]
    assert fam.tasks == tuple(SHAPES)
    assert [fam.complement(s) for s in SHAPES] == [f"not_{s}" for s in SHAPES]
    assert fam.reference == ALL
    assert set(fam.eval_sets) == {*SHAPES, *(f"not_{s}" for s in SHAPES)}


def test_every_family_is_consistent():
    seen = set()
    for name, fam in FAMILIES.items():
        assert fam.name == name and fam.description and fam.tasks
        for t in fam.tasks:
            c = fam.complement(t)
            assert c != t and c in fam.eval_sets and t in fam.eval_sets
        assert set(fam.sets) <= set(SET_SPECS)
        assert all(family_of(s) is fam for s in fam.sets)
        assert not seen & set(fam.sets), "a set belongs to one family"
        seen |= set(fam.sets)
    assert FAMILIES["control"].complement("color_rule") == "size_rule"
    assert FAMILIES["shape_rule"].complement("rule_circle") == "rule_not_circle"
    assert len(all_tasks()) == len(set(all_tasks()))


def test_unknown_names_are_named():
    with pytest.raises(ValueError, match="'hexgrid'"):
        family_of("hexgrid")
    with pytest.raises(ValueError, match="'circle' is not a task of family 'control'"):
        FAMILIES["control"].complement("circle")
