"""core.tasks: the task families' names, complements and references."""

import pytest

from core.tasks import ALL, FAMILIES, SET_SPECS, SHAPES, all_tasks, family_of, shape_of


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


def test_shape_of():
    assert [shape_of(n) for n in ("circle", "not_circle", "rule_circle", "rule_not_circle")] == \
        ["circle"] * 4
    assert shape_of("all") is shape_of("rule_all") is shape_of("color_rule") is None
    with pytest.raises(ValueError, match="'star'"):
        shape_of("star")


def test_unknown_names_are_named():
    with pytest.raises(ValueError, match="'hexgrid'"):
        family_of("hexgrid")
    with pytest.raises(ValueError, match="'circle' is not a task of family 'control'"):
        FAMILIES["control"].complement("circle")


# ---- each family's defining property, on generated problems ----------------------------------

import numpy as np  # noqa: E402
from scipy.stats import chi2_contingency  # noqa: E402

from core.raven.attributes import CONSTANT, TYPE, Subset  # noqa: E402
from core.raven.check import passing  # noqa: E402
from core.raven.generate import Job, run_job  # noqa: E402

MULTI = "in_distribute_four_out_center_single"


def problems(name, configuration="center_single", n=40, answers="iraven"):
    return run_job(Job(configuration, Subset(**SET_SPECS[name]), 0, n, 0, 32, answers))


def answer_types(a):
    """Set of entity types of each problem's answer panel."""
    out = []
    for attrs, t in zip(a["attrs"], a["target"]):
        types = attrs[8 + t][..., 0]
        out.append(set(types[types >= 0].tolist()))
    return out


def check_unique(a, configuration):
    for attrs, rules, t in zip(a["attrs"], a["rules"], a["target"]):
        ok = passing(attrs, rules, configuration)
        assert ok.sum() == 1 and ok[t]


@pytest.mark.parametrize("configuration", ["center_single", MULTI])
@pytest.mark.parametrize("answers", ["iraven", "raven"])
def test_shape_rule_answer_needs_the_shape(configuration, answers):
    s = "circle"
    k = SHAPES.index(s)
    task = problems(f"rule_{s}", configuration, answers=answers)
    comp = problems(f"rule_not_{s}", configuration, answers=answers)
    for a in (task, comp):
        check_unique(a, configuration)
        n_comp = 2 if configuration == MULTI else 1
        # every component's Type follows a non-constant rule (Progression / Distribute_Three)
        assert (a["rules"][:, :n_comp, 1, 0] != CONSTANT).all()
        assert (a["rules"][:, :n_comp, 1, 2] == TYPE).all()
        for attrs, t in zip(a["attrs"], a["target"]):
            ans = attrs[8 + t]
            # a wrong candidate equal to the answer except in the Type of its entities
            only_type = [c for c in range(8) if c != t
                         and (attrs[8 + c][..., 1:] == ans[..., 1:]).all()
                         and (attrs[8 + c][..., 0] != ans[..., 0]).any()]
            assert only_type
    assert all(ts == {k} for ts in answer_types(task))
    if configuration == "center_single" and answers == "iraven":
        # the answer's shape is on exactly half the candidates: "pick the s candidate" without
        # the context reaches 1/4 at most (chance 1/8), never the task
        types = task["attrs"][:, 8:, 0, 0, 0]
        assert ((types == k).sum(1) == 4).all()
    assert all(k not in ts for ts in answer_types(comp))
    assert any(k in ts for ts in (set(x[:8, ..., 0].ravel().tolist()) for x in comp["attrs"]))


def test_shape_rule_complement_matches_the_rule_mix():
    """Task and complement differ only in the answer shape: the rule kinds of every group and
    the candidate branching have the same distribution (chi-square test, fixed seeds)."""
    n = 300
    task, comp = problems("rule_square", n=n), problems("rule_not_square", n=n)
    for g in range(1, 4):
        table = [np.bincount(a["rules"][:, 0, g, 0], minlength=4) for a in (task, comp)]
        table = np.array(table)[:, np.array(table).sum(0) > 0]
        assert chi2_contingency(table).pvalue > 0.01, g
    # the answer's size and colour values
    for col, n_values in ((1, 6), (2, 10)):
        table = np.array([np.bincount(a["attrs"][np.arange(n), 8 + a["target"], 0, 0, col],
                                      minlength=n_values) for a in (task, comp)])
        table = table[:, table.sum(0) > 0]
        assert chi2_contingency(table).pvalue > 0.01, col
    # candidates: how many differ from the answer in type / size / color
    for col in range(3):
        counts = []
        for a in (task, comp):
            diff = [int(sum((at[8 + c][0, 0, col] != at[8 + t][0, 0, col]) for c in range(8)))
                    for at, t in zip(a["attrs"], a["target"])]
            counts.append(np.bincount(diff, minlength=9))
        table = np.array(counts)[:, np.array(counts).sum(0) > 0]
        if table.shape[1] > 1:
            assert chi2_contingency(table).pvalue > 0.01, col
    # the original family's complement is not matched: its Type rules are never all constant
    orig = problems("not_square", n=100)
    assert (orig["rules"][:, 0, 1, 0] != CONSTANT).any()
    assert (problems("square", n=50)["rules"][:, 0, 1, 0] == CONSTANT).all()


@pytest.mark.parametrize("configuration", ["center_single", MULTI])
def test_control_one_ruled_group(configuration):
    n_comp = 2 if configuration == MULTI else 1
    for name, g in (("color_rule", 3), ("size_rule", 2)):
        a = problems(name, configuration)
        check_unique(a, configuration)
        rules = a["rules"][:, :n_comp, :, 0]
        others = [h for h in range(4) if h != g]
        assert (rules[:, :, others] == CONSTANT).all()
        assert (rules[:, :, g] != CONSTANT).any(1).all()  # in some component, every problem
    both = problems("one_rule", configuration, n=60)["rules"][:, :n_comp, :, 0]
    colour = (both[:, :, 3] != CONSTANT).any(1)
    size = (both[:, :, 2] != CONSTANT).any(1)
    assert (colour ^ size).all() and 10 < colour.sum() < 50


def test_config_choices_are_the_families():
    import dataclasses

    from core.config import DataConfig

    meta = {f.name: f.metadata for f in dataclasses.fields(DataConfig)}
    assert tuple(meta["families"]["choices"]) == tuple(FAMILIES)
