"""The validation suite's pieces: the planted networks' truth, inert-weight pruning, the hard
concrete estimator, the continuation schedule and the verdict rules (core/validate.py,
core/planted.py, core/control.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from core import control
from core import planted as P
from core import validate as V
from core.config import load
from core.masking import MaskedModel, accuracy, penalty, prune_inert, sample_hard_concrete

torch.set_num_threads(1)
V_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def settings(**kw):
    return dataclasses.replace(V.planted_settings(load(V_PARAMS, "default").masks), **kw)


@pytest.mark.parametrize("spec", [P.MILD, P.STRONG])
def test_planted_truth_holds(spec):
    acc = P.check_truth(spec)
    for t in range(spec.tasks):
        assert acc[f"module_{t}"] == 100.0
        assert acc[f"other_{t}"] < 30.0  # another task's module cannot solve it
    if spec is P.STRONG:  # strong distractors: >= 30 points below the module alone
        assert max(acc[f"full_{t}"] for t in range(spec.tasks)) <= 70.0


def test_check_truth_rejects_a_network_whose_distractors_do_not_harm():
    with pytest.raises(ValueError, match="truth does not hold"):
        P.check_truth(P.Spec(distractor=0.0, noise_units=1, noise_inputs=1, classes=2))


def test_prune_inert_drops_dead_and_zero_weights_only():
    m, modules = P.build(P.MILD)
    mm = MaskedModel(m)
    mask = {n: t.clone() for n, t in modules[0].items()}
    mask["l1.weight"][30:, 30:] = True  # noise units' inputs: dead without their outputs
    mask["l1.bias"][:] = True  # zero-valued weights
    pruned, lost = prune_inert(mm, mask, P.data(P.MILD, [0], 128, 1))
    assert lost == P.n_on(mask) - P.n_on(modules[0])
    assert P.iou(pruned, modules[0]) == 1.0
    # a live weight stays: the noise units with their outputs change the logits
    live = {n: t.clone() for n, t in mask.items()}
    live["l2.weight"][:, 30:] = True
    pruned, _ = prune_inert(mm, live, P.data(P.MILD, [0], 128, 1))
    assert bool(pruned["l1.weight"][30:, 30:].all()) and bool(pruned["l2.weight"][:, 30:].all())


def test_hard_concrete_masks_are_exact_zeros_and_ones_with_a_gradient_between():
    m, _ = P.build(P.MILD)
    mm = MaskedModel(m, init=0.0)
    g = torch.Generator().manual_seed(0)
    z = torch.cat([v.flatten() for v in sample_hard_concrete(mm, g, 2 / 3).values()])
    assert 0.0 <= float(z.min()) and float(z.max()) <= 1.0
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    z.sum().backward()
    assert mm.flat.grad is not None and bool((mm.flat.grad != 0).any())
    # no noise: the deterministic read-out is 1 exactly where the logit is > 0 at large logits
    with torch.no_grad():
        mm.flat.fill_(5.0)
    z = torch.cat([v.flatten() for v in sample_hard_concrete(mm, g, 2 / 3, 0.0).values()])
    assert bool((z == 1).all())


def test_penalties():
    s = torch.tensor([-50.0, 0.0, 50.0])
    st = settings(estimator="straight_through")
    hc = settings(estimator="hard_concrete", tau=2 / 3)
    assert float(penalty(s, st)) == 0.0
    # the expected number of non-zero hard concrete gates: ~0, P(z > 0) at s=0, ~1
    assert float(penalty(s, hc)) == pytest.approx(1.0 + float(torch.sigmoid(torch.tensor(
        2 / 3 * 2.3979))), abs=1e-3)


def test_continuation_extends_the_constant_phase_by_half_and_replays_the_tail():
    mc = settings(steps=2000, lr_anneal=0.5, noise_anneal=0.2)
    cfg, steps = V.continuation_settings(mc)
    assert steps == 2000  # 1000 more constant steps + the 1000-step tail
    assert cfg.lr_anneal * steps == pytest.approx(1000) and cfg.noise_anneal * steps == \
        pytest.approx(400)
    cfg, steps = V.continuation_settings(settings(steps=1000, lr_anneal=0.0, noise_anneal=0.0))
    assert steps == 500 and cfg.lr_anneal == 0.0


def test_a_continued_mask_starts_from_the_run_it_continues():
    m, _ = P.build(P.MILD)
    mc = settings(steps=60, log_every=20)
    tr, cu = P.data(P.MILD, [0], 256, 10), P.data(P.MILD, [0], 64, 20)
    first = V.train_mask(m, mc, tr, cu, alpha=0.01, seed=0, steps=60)
    more = V.train_mask(m, mc, tr, cu, alpha=0.01, seed=1, steps=20, start=first)
    assert more.curve["density"][0] == first.curve["density"][-1]
    assert more.curve["task_acc"][0] == first.curve["task_acc"][-1]


def rows(own_functional, acc=60.0, own_only=60.0):
    return [{"task": t, "seed": s, "own": 0.5, "own_functional": own_functional,
             f"acc_{t}": acc, "acc_own_only": own_only} for t in control.TASKS for s in (0, 1)]


@pytest.mark.parametrize("own, cross, same, passes", [
    (0.9, [0.2, 0.25], [0.7, 0.8], True),
    (0.6, [0.2, 0.25], [0.7, 0.8], False),   # functional weights straddle both networks
    (0.9, [0.85, 0.2], [0.8, 0.9], False),   # one cross pair as close as a rerun
    (0.9, [0.8, 0.8], [0.8, 0.9], False),    # ties are not separation
])
def test_control_verdict_reads_functional_weights_and_separation(own, cross, same, passes):
    v = control.verdict(rows(own), {"cross": cross, "same": same})
    assert v["passes"] is passes and v["truth"] is True
    assert v["text"].startswith("passes" if passes else "fails")


def test_control_verdict_is_not_testable_when_a_mask_uses_the_other_network():
    v = control.verdict(rows(0.9, acc=60.0, own_only=40.0), {"cross": [0.1], "same": [0.9]})
    assert v["passes"] is False and v["truth"] is False and "not testable" in v["text"]
    assert "uses the other network" in v["text"]


def test_verdict_without_a_same_task_pair_is_not_testable():
    v = control.verdict(rows(0.9), {"cross": [0.1], "same": []})
    assert v["passes"] is False and v["separated"] is None and "not testable" in v["text"]


def test_select_alpha_is_the_largest_within_tolerance_of_the_best():
    m, _ = P.build(P.MILD)
    acc = {1e-3: 100.0, 3e-3: 97.0, 1e-2: 96.0, 3e-2: 80.0, 1e-1: 10.0}

    class Fake:
        def __init__(self, a):
            self.curve = {"task_acc": [acc[a]]}

    alpha, grid = V.select_alpha(m, settings(), P.data(P.MILD, [0], 16, 1),
                                 P.data(P.MILD, [0], 16, 2), 5.0,
                                 lambda *a, alpha, **k: Fake(alpha))
    assert alpha == 1e-2 and grid == acc
    assert accuracy(MaskedModel(m).forward_fn(None), P.data(P.MILD, [0], 16, 2)) < 100.0


def fake_result(passes=True) -> dict:
    rows = [{"iou": 1.0, "accuracy": 100.0}]
    return {
        "name": "default", "profile": "default", "commit": "abc123def4567", "passes": passes,
        "masks": {"estimator": "hard_concrete", "steps": 2000, "batch_size": 8, "lr": 0.05,
                  "lr_anneal": 0.0, "alpha": 1e-4, "prune_n": 256},
        "checks": {
            "planted": {"passes": True, "mild": {"rows": rows, "max_cross_iomin": 0.0},
                        "strong": {"rows": rows, "max_cross_iomin": 0.0}},
            "complement": {"passes": True, "drop": {"0": -0.25}, "truth": {"0": -0.25}},
            "control": {"passes": passes, "verdict": {"text": "passes: ..."},
                        "rows": [{"own_functional": 0.98}], "iomin": {"cross": [0.1],
                                                                        "same": [0.7]}},
            "faithful": {"passes": True, "rows": [{"masked": 90.0, "unmasked": 88.0}]},
            "continuation": {"passes": passes, "rows": [{"density_change": 0.5, "iomin": 1.0,
                                                         "iou": 0.95}]}}}


def test_validation_table_says_every_verdict_with_its_numbers(tmp_path):
    from core.formats import validation as VF
    text = VF.markdown(fake_result(False))
    assert "NOT every check passes" in text and text.count("| pass |") == 3
    assert text.count("| FAIL |") == 2 and "masked 90.0 vs unmasked 88.0%" in text
    tex = VF.latex(fake_result())
    assert tex.count(r"\\") >= 6 and "FAIL" not in tex
    path = tmp_path / "default.json"
    path.write_text(json.dumps(fake_result()))
    assert VF.read(path)["passes"] is True
    path.write_text("{}")
    with pytest.raises(VF.ValidationFileError, match="default.json: not a result"):
        VF.read(path)
    with pytest.raises(VF.ValidationFileError, match="not found"):
        VF.read(tmp_path / "none.json")


def test_validate_refuses_overrides_outside_masks(capsys):
    assert V.main(["train.lr=0.1", "--only", "planted"]) == 1
    assert "expected masks.<key>=<value>" in capsys.readouterr().err


def test_the_control_check_reuses_the_pipelines_control_made_at_these_settings(tmp_path,
                                                                             monkeypatch):
    """A control.json of the control stage at exactly these settings is the check's result
    (nothing trains); made at other settings, it is not read (and never overwritten)."""
    from core.formats.control import CONTROL_MASK_KEYS
    cfg = load(V_PARAMS, "ci")
    s = control.settings(cfg, workers=1)
    mc, alpha = control.mask_settings(cfg, s)
    made = {"profile": "ci", "settings": dataclasses.asdict(s),
            "masks": {**{k: getattr(mc, k) for k in CONTROL_MASK_KEYS}, "alpha": alpha},
            "reference": {}, "iomin": {"same": [0.7], "cross": [0.0]},
            "verdict": {"passes": True, "text": "passes"},
            "rows": [{"task": "color_rule", "seed": 0, "density": 1.0, "own": 1.0,
                      "own_functional": 1.0, "acc_own_only": 50.0, "pruned": 0,
                      "converged": True, "seconds": 1.0,
                      **{f"{p}_{t}": 0 for p in ("kept", "inert", "acc")
                         for t in control.TASKS}}]}
    (tmp_path / "control.json").write_text(json.dumps(made))
    got = V.run_control(cfg, tmp_path, workers=2)  # the worker count does not matter
    assert got["passes"] and got["rows"][0]["own_functional"] == 1.0
    made["masks"]["steps"] += 1  # other settings: the pipeline's file is not the check's
    (tmp_path / "control.json").write_text(json.dumps(made))
    before = (tmp_path / "control.json").read_bytes()
    calls = []
    monkeypatch.setattr(control, "prepare", lambda c, s, out, progress: calls.append(out) or (
        {}, {}))
    monkeypatch.setattr(control, "make_masks", lambda c, s, out, d, k: calls.append(out) or {
        **made, "verdict": {"passes": False, "text": "new"}})
    assert V.run_control(cfg, tmp_path, workers=1)["passes"] is False
    assert calls == [tmp_path, tmp_path / "validation"]  # new masks beside, not over, its own
    assert (tmp_path / "control.json").read_bytes() == before
