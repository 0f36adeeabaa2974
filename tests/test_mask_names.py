"""The mask file's name: written by core.formats.masks.mask_name, read back by parse_mask_name and
matched by MASK_FILE, the one place the pattern is spelled out (sweep and metrics use them)."""

import pytest

from core.formats import evals
from core.formats.masks import MASK_FILE, mask_name, mask_path, parse_mask_name
from core.sweep import sweep


@pytest.mark.parametrize("task,alpha,seed", [("circle", 1e-5, 0), ("rule_not_circle", 2.2e-6, 3),
                                             ("a-b", 1e-10, 12), ("all", 3.0e-4, 1)])
def test_name_round_trips(task, alpha, seed):
    stem = mask_name(task, alpha, seed)
    assert parse_mask_name(stem) == (task, float(f"{alpha:.3e}"), seed)
    assert MASK_FILE.fullmatch(mask_path("root", "scl_50", task, alpha, seed).name)


@pytest.mark.parametrize("stem", ["circle", "circle-a1e-5", "circle-s0", "circle-a0.5-s1",
                                  "circle-a1e-5-s", "-a1e-5-s0"])
def test_other_names_are_refused(stem):
    with pytest.raises(ValueError, match=f"mask key '{stem}' is not <set>-a<alpha>-s<seed>"):
        parse_mask_name(stem)
    assert not MASK_FILE.fullmatch(stem + ".pt")


def test_one_pattern_for_sweep_and_evals(tmp_path):
    assert sweep.MASK_FILE is MASK_FILE
    with pytest.raises(evals.EvalsError, match="x.nc.*mask key 'circle-s0'"):
        evals._parse_stem("circle-s0", tmp_path / "x.nc")
