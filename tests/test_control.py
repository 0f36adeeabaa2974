"""The composite positive control (core.control): its measures, its verdict rule, the report
of its result, and one end-to-end run at the ci profile's size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from core import control
from core.config import compose_text
from core.formats import control as controlfile
from core.formats.control import comparison_text
from core.io import atomic_write_text
from paper import numbers
from paper.build import README_BEGIN, README_END, read_control
from paper.build import main as paper_main

ROOT = Path(__file__).resolve().parents[1]


def two_nets() -> control.Composite:
    torch.manual_seed(0)
    return control.Composite({t: nn.Linear(4, 3) for t in control.TASKS})


def mask_of(model: nn.Module, keep: dict[str, int]) -> dict[str, torch.Tensor]:
    """Keep the first ``keep[task]`` weights of each task's network."""
    out = {}
    for n, p in model.named_parameters():
        m = torch.zeros(p.numel(), dtype=torch.bool)
        m[:keep.get(n.split(".")[1], 0)] = True
        out[n] = m.view_as(p)
    return out


def test_composite_sums_the_logits_and_names_weights_by_task():
    m = two_nets()
    x = torch.randn(2, 4)
    assert torch.allclose(m(x), sum(net(x) for net in m.nets.values()))
    names = [n for n, _ in m.named_parameters()]
    assert all(n.split(".")[1] in control.TASKS for n in names)


def test_scrambled_composite_feeds_the_other_network_another_problem():
    m = two_nets()
    m.scrambled = "size_rule"
    x = torch.randn(5, 4)
    want = m.nets["color_rule"](x) + m.nets["size_rule"](x.roll(1, 0))
    assert torch.allclose(m(x), want)
    with pytest.raises(control.ControlError, match=">= 2 problems"):
        m(x[:1])
    with pytest.raises(control.ControlError, match="not one of"):
        control.Composite({t: nn.Linear(4, 3) for t in control.TASKS}, scrambled="shape")


def test_own_share_and_iomin():
    m = two_nets()
    a = mask_of(m, {"color_rule": 9, "size_rule": 3})
    # per tensor: colour weight 9 + bias 3, size weight 3 + bias 3
    assert (control.kept(a), control.kept(a, "color_rule")) == (18, 12)
    assert control.own_share(a, "color_rule") == pytest.approx(12 / 18)
    b = mask_of(m, {"color_rule": 3})
    assert control.iomin(a, b) == 1.0  # b inside a
    empty = mask_of(m, {})
    assert control.own_share(empty, "size_rule") != control.own_share(empty, "size_rule")  # nan
    with pytest.raises(control.ControlError, match="different parameters"):
        control.iomin(a, {k: v for k, v in list(b.items())[:1]})


def test_overlaps_split_same_and_cross_pairs():
    m = two_nets()
    masks = {("color_rule", 0): mask_of(m, {"color_rule": 12}),
             ("color_rule", 1): mask_of(m, {"color_rule": 12}),
             ("size_rule", 0): mask_of(m, {"size_rule": 12}),
             ("size_rule", 1): mask_of(m, {"size_rule": 6})}
    pairs = control.overlaps(masks)
    assert sorted(pairs["same"]) == [1.0, 1.0] and pairs["cross"] == [0.0] * 4


@pytest.mark.parametrize("args, match", [
    (["--n", "10"], "--n"), (["--milestone", "120"], "--milestone"),
    (["--steps", "0"], "--steps"), (["--workers", "0"], "--workers"),
    (["--seeds", "0", "0"], "--seeds"),
    # the pipeline's settings path (core.config.check_field): non-finite and out of range
    (["--lr", "inf"], "--lr (masks.lr): expected a finite number"),
    (["--alpha", "inf"], "--alpha (masks.alpha): expected a finite number"),
    (["--alpha", "1e30"], "--alpha: 1e+30 is outside the plausible range"),
    (["--lr", "1e300"], "--lr: 1e+300 is outside the plausible range"),
    (["--tolerance", "nan"], "--tolerance (control.tolerance): expected a finite"),
    (["--tolerance", "-5"], "--tolerance (control.tolerance): expected a number > 0"),
    (["--noise-anneal", "nan"], "--noise-anneal (masks.noise_anneal): expected a finite"),
    (["--readout=-inf"], "--readout (masks.readout): expected a finite"),
])
def test_bad_settings_get_one_clear_error(args, match, capsys, tmp_path):
    assert control.main(["run", "--out", str(tmp_path / "c"), *args]) == 1
    assert match in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_comparison_says_what_the_verdicts_support():
    def res(steps, passes):
        return {"masks": {"steps": steps, "lr": 0.05}, "verdict": {"passes": passes}}
    assert comparison_text([res(200, True)]) == ""
    assert "stop too early" in comparison_text([res(200, False), res(2000, True)])
    assert "not been shown able" in comparison_text([res(200, False), res(2000, False)])
    assert comparison_text([res(200, True), res(2000, True)]).startswith(
        "The profile's mask settings (200 steps, lr 0.05) pass")
    low = res(6000, True)
    low["masks"]["readout"] = -1.0  # a read-out threshold other than 0 is named
    assert ("fail the control and 2000 steps, lr 0.05; 6000 steps, lr 0.05, read-out logit > -1 "
            "pass it") in comparison_text([res(200, False), res(2000, True), low])


def test_read_result_names_the_file(tmp_path):
    with pytest.raises(control.ControlError, match="not found"):
        controlfile.read_result(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"profile": "ci"}')
    with pytest.raises(control.ControlError, match="bad.json: not a control.json"):
        controlfile.read_result(bad)


def test_committed_result_is_reported_in_readme_and_paper():
    """Every committed control result (control.json first) is what results/control/README.md
    (generated) and control.tex say."""
    results = read_control(ROOT / "results/control")
    result = controlfile.read_result(ROOT / "results/control/control.json")
    assert results[0] == result and len(results) == len(list((ROOT / "results/control").glob("*.json")))
    assert results[0]["settings"]["steps"] is None  # the profile's own mask settings
    section = (ROOT / "results/control/README.md").read_text()
    assert all(controlfile.summary_text(r) in section for r in results)
    assert comparison_text(results) in section
    tex = numbers.control_tex([result])
    assert result["verdict"]["text"].split(":")[0] in tex
    assert tex.count(r"\\") >= len(result["rows"]) + 1
    assert "Not run" in numbers.control_tex([])


@pytest.mark.slow
def test_end_to_end_at_ci_size(tmp_path):
    """Data, two specialists, four masks of the composite, control.json, its README."""
    params = tmp_path / "params.yaml"
    atomic_write_text(params, compose_text("ci"))
    out = tmp_path / "control"
    assert control.main(["run", "--params", str(params), "--out", str(out), "--n", "60",
                         "--milestone", "10", "--tolerance", "45", "--no-progress"]) == 0
    result = json.loads((out / "control.json").read_text())
    assert len(result["rows"]) == 4
    assert len(result["iomin"]["same"]) == 2 and len(result["iomin"]["cross"]) == 4
    assert result["masks"]["steps"] > 0 and result["verdict"]["text"]
    assert result["settings"]["scramble"] is True
    # its bytes depend on the params alone: no clock, no worker count (those go to timing.json)
    assert "seconds" not in result and "workers" not in result["settings"]
    assert not any("seconds" in r for r in result["rows"])
    assert sorted(controlfile.read_timing(out)) == [f"{t}-s{s}" for t in control.TASKS
                                                    for s in (0, 1)]
    for r in result["rows"]:
        assert r["kept_color_rule"] + r["kept_size_rule"] > 0 and 0 <= r["own"] <= 1
        assert 0 <= r["acc_own_only"] <= 100 and r["inert_color_rule"] >= 0
    assert (out / "masks" / "color_rule-s0.pt").is_file()
    # the specialists are reused: a second run (other mask steps) trains no network
    ck = out / "train/color_rule/scl_10.pt"
    before = ck.stat().st_mtime_ns
    assert control.main(["run", "--params", str(params), "--out", str(out), "--n", "60",
                         "--milestone", "10", "--tolerance", "45", "--steps", "5",
                         "--no-progress"]) == 0
    assert ck.stat().st_mtime_ns == before
    assert json.loads((out / "control.json").read_text())["masks"]["steps"] == 5
    # ... and so does a params file whose masks section differs (training does not read it)
    other = yaml.safe_load(compose_text("ci"))
    other["masks"]["readout"] = -1.0
    params2 = tmp_path / "params2.yaml"
    atomic_write_text(params2, yaml.safe_dump(other))
    assert control.main(["run", "--params", str(params2), "--out", str(out), "--n", "60",
                         "--milestone", "10", "--tolerance", "45", "--steps", "5",
                         "--no-progress"]) == 0
    assert ck.stat().st_mtime_ns == before
    assert json.loads((out / "control.json").read_text())["masks"]["readout"] == -1.0
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_BEGIN}\n{README_END}\nx\n")
    results = ROOT / "results" / "ci"
    args = ["readme", "--params", str(results / "params.yaml"), "--metrics",
            str(results / "metrics"), "--readme", str(readme), "--control"]
    assert paper_main([*args, str(out / "control.json")]) == 0
    section = (out / "README.md").read_text()  # beside the control.json given
    assert section.strip().endswith(controlfile.summary_text(json.loads(
        (out / "control.json").read_text())).strip())
    assert paper_main([*args, str(tmp_path / "missing.json")]) == 2


def test_settings_come_from_the_params_control_section(tmp_path):
    raw = yaml.safe_load(compose_text("ci"))
    raw["control"].update(n=77, milestone=12.5, seeds=[3, 4], eval_n=9)
    params = tmp_path / "params.yaml"
    atomic_write_text(params, yaml.safe_dump(raw))
    from core.config import load
    cfg = load(params)
    s = control.settings(cfg)
    assert (s.n, s.milestone, s.seeds, s.eval_n, s.workers) == (77, 12.5, (3, 4), 9,
                                                                  cfg.masks.workers)
    assert control.settings(cfg, n=90, seeds=None).n == 90  # an option overrides, None not


def test_masks_stage_names_what_is_missing(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    atomic_write_text(params, compose_text("ci"))
    assert control.main(["masks", "--params", str(params), "--out", str(tmp_path / "c"),
                         "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "color_rule task set is missing" in err and "control_train" in err
    assert not (tmp_path / "c" / "control.json").exists()


@pytest.mark.slow
def test_the_pipeline_stages_train_then_mask(tmp_path):
    """`train` (the control_train stage) then `masks` (the control stage): the same result
    as `run`, the masks stage trains no network."""
    params = tmp_path / "params.yaml"
    atomic_write_text(params, compose_text("ci"))
    out = tmp_path / "c"
    common = ["--params", str(params), "--out", str(out), "--no-progress"]
    assert control.main(["train", *common]) == 0
    assert not (out / "control.json").exists()
    ck = out / "train/color_rule/scl_1.pt"
    before = ck.stat().st_mtime_ns
    assert control.main(["masks", *common]) == 0
    assert ck.stat().st_mtime_ns == before
    result = controlfile.read_result(out / "control.json")
    assert result["masks"]["estimator"] == "hard_concrete"  # the method is recorded
    assert result["settings"]["n"] == 60 and len(result["rows"]) == 4


def test_module_verdicts_need_the_control_for_shared():
    ok = numbers.control_state([{"verdict": {"passes": True}, "masks": {"steps": 5}}],
                               {"steps": 5})
    assert ok == (True, "the composite control passed at these settings")
    other = numbers.control_state([{"verdict": {"passes": True}, "masks": {"steps": 5}}],
                                  {"steps": 6})
    assert other[0] is False and "other mask settings" in other[1]
    failed = numbers.control_state([{"verdict": {"passes": False}, "masks": {"steps": 5}}],
                                   {"steps": 5})
    assert failed[0] is False and "failed" in failed[1]
    assert numbers.control_state([], {})[0] is False
    v = numbers.module_verdict
    assert v("distinct (cross-task overlap below ...)", failed) == "distinct modules shown"
    assert v("not distinct (cross-task as high)", ok) == "shared modules shown"
    assert v("not shown distinct (intervals overlap)", ok) == "shared modules shown"
    assert v("not distinct (cross-task as high)", failed).startswith(
        "not testable (the composite control failed")
    assert v("not testable (one task masked)", ok) == "not testable (one task masked)"
