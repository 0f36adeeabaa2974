"""Planted modules with HARMFUL distractors (core/planted.py): at the default profile's mask
settings, masking must find exactly the planted weights, the tasks' masks must not overlap,
Csordas et al.'s complement protocol must report what the planted modules do, and a continued
mask must stay where it is. These are the planted checks of the validation suite
(core/validate.py) with its rules; alpha by the study's rule, never by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core import planted as P
from core import validate as V
from core.config import load

torch.set_num_threads(1)
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def profile():
    cfg = load(PARAMS, "default")
    return cfg.masks, cfg.metrics.alpha_tolerance


@pytest.fixture(scope="module")
def mild():
    mc, tol = profile()
    return V.planted_recovery(mc, tol, P.MILD)


@pytest.mark.slow
def test_profile_settings_recover_each_planted_module(mild):
    for r in mild["rows"]:
        assert r["iou"] >= V.RECOVERY_IOU and r["accuracy"] == 100.0, r
    assert mild["max_cross_iomin"] <= V.OVERLAP_MAX
    assert mild["passes"]


@pytest.mark.slow
def test_profile_settings_recover_modules_among_strong_distractors():
    mc, tol = profile()
    strong = V.planted_recovery(mc, tol, P.STRONG)
    assert strong["passes"], [(r["kept"], r["iou"], r["accuracy"]) for r in strong["rows"]]


@pytest.mark.slow
def test_profile_settings_continued_masks_stay(mild):
    mc, tol = profile()
    cont = V.planted_continuation(mc, tol, mild)
    assert cont["passes"], cont["rows"]


def test_the_planted_truth_of_the_complement_protocol():
    """What a perfect method would report: every module adds noise to the other tasks'
    problems, so without task K's module the other tasks gain (negative drops, ~-0.25: a
    bound of 'near zero' on them rejects the truth), and task K falls to chance."""
    m, modules = P.build(P.MILD)
    test = {t: P.data(P.MILD, [t], 1024, 40 + t) for t in range(P.MILD.tasks)}
    truth = P.complement_truth(m, modules, test, V.COMPLEMENT_LEFT_OUT)
    assert truth[V.COMPLEMENT_LEFT_OUT] >= 0.8
    assert all(-0.35 <= truth[t] <= -0.15 for t in truth if t != V.COMPLEMENT_LEFT_OUT), truth


@pytest.mark.slow
def test_profile_settings_pass_the_complement_protocol():
    mc, tol = profile()
    c = V.planted_complement(mc, tol)
    print("complement protocol: relative drops", c["drop"], "planted truth", c["truth"])
    assert all(g > 10.0 for g in c["gain"].values()), c["gain"]
    assert c["drop"][V.COMPLEMENT_LEFT_OUT] >= 0.5
    assert c["max_error"] <= V.COMPLEMENT_TOL, (c["drop"], c["truth"])
    assert c["passes"]
