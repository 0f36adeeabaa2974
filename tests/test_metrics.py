"""Tests of core.metrics and core.stats: hand-computed metric values and intervals, the alpha
rule, property ranges, and the stage end to end on synthetic inputs with planted answers
(tests/synthetic.py): labelled datasets, nulls, verdicts, convergence and degeneracy filters,
provenance, bad inputs and byte-identical output."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import synthetic as syn  # tests/synthetic.py: the test-only input builders
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core import metrics as M
from core import stats as S
from core.config import load
from core.formats.metrics import FILES, metrics_hash, open_metrics
from core.metrics.summary import _failing, _min_int

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built():
    return syn.built_metrics()


@pytest.fixture(scope="module")
def data(built):
    out, _, _ = built
    return {n: open_metrics(out, n) for n in FILES}


@pytest.fixture(scope="module")
def summary(built):
    return json.loads((built[0] / "summary.json").read_text())


@pytest.fixture()
def inputs(tmp_path):
    """A fresh, smaller input tree (2 networks, 1 checkpoint) a test may damage."""
    cfg = syn.config(networks=(0, 1), seeds=(0, 1), train={"milestones": [20.0]})
    masks, train = syn.write_inputs(tmp_path, cfg, families=("control",))
    return masks, train, cfg


# --------------------------------------------------------------------------- hand-computed


def test_sparsity_of_known_mask():
    masks = [np.array([[1, 0], [0, 0]], bool), np.array([1, 1, 0, 0], bool)]
    assert M.sparsity(masks) == pytest.approx(100 * 5 / 8)
    assert M.sparsity([np.zeros(3, bool)]) == 100.0
    assert M.sparsity([np.ones((2, 2), bool)]) == 0.0


def test_dispersity_hand_values():
    L = 1000
    assert M.tensor_dispersity(np.ones(L, bool)) == pytest.approx((L + 1) / (3 * (L - 1)))
    assert M.tensor_dispersity(np.ones(L, bool)) == pytest.approx(1 / 3, abs=1e-3)
    single = np.zeros((4, 5), bool)
    single[2, 3] = True
    assert M.tensor_dispersity(single) == 0.0
    origin = np.zeros(7, bool)
    origin[0] = True
    assert M.tensor_dispersity(origin) == 0.0  # mean index at the origin: defined as 0
    two = np.zeros((1, 3), bool)
    two[0, 0] = two[0, 2] = True  # indices (0,0), (0,2): variance (0, 1), mean (0, 1)
    assert M.tensor_dispersity(two) == pytest.approx(1.0)
    # empty tensors count as 0 in the mean over tensors: (2/3 + 0) / 2
    assert M.dispersity([np.ones(3, bool), np.zeros(4, bool)]) == pytest.approx(1 / 3)


def test_random_dispersity_reference():
    # full tensor: exact; one or no kept entry: 0; sampled mean matches a direct simulation
    assert M.tensor_dispersity_random((10,), 10, 5) == pytest.approx(11 / 27)
    assert M.tensor_dispersity_random((3, 4), 1, 5) == 0.0
    assert M.tensor_dispersity_random((3, 4), 0, 0) == 0.0
    rng = np.random.default_rng(1)
    direct = []
    for _ in range(2000):
        m = np.zeros(35, bool)
        m[rng.choice(35, 10, replace=False)] = True
        direct.append(M.tensor_dispersity(m.reshape(5, 7)))
    assert M.tensor_dispersity_random((5, 7), 10, 2000, 0) == pytest.approx(np.mean(direct),
                                                                             rel=0.03)
    # the analytic ratio of expectations is close for many kept entries
    assert M.tensor_dispersity_random((64, 9), 300, 0) == pytest.approx(
        M.tensor_dispersity_random((64, 9), 300, 400, 0), rel=0.02)
    with pytest.raises(ValueError, match="kept=13"):
        M.tensor_dispersity_random((3, 4), 13)


def _norm(masks, samples=100):
    kept = [int(m.sum()) for m in masks]
    return M.dispersity(masks) / M.dispersity_random([m.shape for m in masks], kept, samples, 0)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.8])
def test_normalised_dispersity_of_random_masks_is_one(p):
    rng = np.random.default_rng(2)
    shapes = [(32, 16, 3, 3), (80, 64), (200,), (16, 9)]
    norms = [_norm([rng.random(s) < p for s in shapes]) for _ in range(10)]
    assert np.mean(norms) == pytest.approx(1.0, abs=0.05)


def test_normalised_dispersity_of_clustered_mask_is_small():
    m = np.zeros((40, 40), bool)
    m[30:35, 30:35] = True  # a tight block far from the origin
    assert _norm([m], 50) < 0.2


def test_overlap_of_known_pairs():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 1], bool)
    iomin, iou = M.overlap(a, b)
    assert iomin == pytest.approx(100 * 2 / 3)
    assert iou == pytest.approx(100 * 2 / 5)
    assert M.overlap(a, a) == (100.0, 100.0)
    assert M.overlap(a, ~a) == (0.0, 0.0)
    assert np.isnan(M.overlap(a, np.zeros(5, bool))[0])
    with pytest.raises(ValueError, match="different sizes"):
        M.overlap(a, b[:4])


def test_chance_iomin_is_the_larger_density():
    # analytic: one tensor with densities p = 0.1 <= q = 0.3 -> IoMin = 100 q
    iomin, iou = M.chance_overlap([100], [300], [1000])
    assert iomin == pytest.approx(30.0)
    assert iou == pytest.approx(100 * 30 / (400 - 30))
    # and two actual independent random masks agree
    rng = np.random.default_rng(3)
    n = 200_000
    sampled = M.overlap(rng.random(n) < 0.1, rng.random(n) < 0.3)[0]
    assert sampled == pytest.approx(30.0, abs=1.0)
    # global densities hide per-tensor structure: per-tensor chance is higher here
    per_tensor = M.chance_overlap([90, 10], [90, 210], [100, 900])[0]
    global_ = M.chance_overlap([100], [300], [1000])[0]
    assert per_tensor > global_


def test_remove_shared_on_toy_modules():
    masks = {"a": np.array([1, 1, 0, 1], bool), "b": np.array([1, 0, 1, 1], bool),
             "c": np.array([1, 1, 1, 1], bool)}
    specific, shared = M.remove_shared(masks)
    assert shared.tolist() == [True, False, False, True]
    assert specific["a"].tolist() == [False, True, False, False]
    assert specific["b"].tolist() == [False, False, True, False]
    assert specific["c"].tolist() == [False, True, True, False]


def test_alpha_selection_rule():
    nan = np.nan
    v = np.array([[[[89, 89], [86, 86], [80, 80]], [[89, 89], [89, 89], [89, 89]]],
                  [[[80, 80], [70, 70], [90, nan]], [[80, 80], [60, 60], [90, nan]]]], float)
    acc = xr.DataArray(np.stack([v, v - 0.5]), dims=M.RUN,
                       coords={"network": [0, 1], "checkpoint": ["c1", "c2"],
                               "task": ["t1", "t2"], "alpha": [1e-6, 1e-5, 1e-4],
                               "seed": [0, 1]})
    full = xr.full_like(acc, 90.0)
    ok, sel = M.select_alpha(acc, full, tolerance=5.0, min_seeds=2)
    # c1: 1e-4 loses 10 points on t1 -> the largest alpha within 5 points of both is 1e-5
    assert sel.sel(checkpoint="c1") == 1e-5
    assert ok.sel(checkpoint="c1", task="t1").values.tolist() == [1, 1, 0]
    # c2: 1e-4 has one seed per network (not a candidate); none ok -> best worst margin
    assert sel.sel(checkpoint="c2") == 1e-6
    _, sel1 = M.select_alpha(acc, full, tolerance=5.0, min_seeds=1)
    assert sel1.sel(checkpoint="c2") == 1e-4  # one seed suffices now
    # a network without any run at an alpha makes that alpha no candidate
    gap = acc.copy()
    gap.loc[{"network": 1, "alpha": 1e-5}] = nan
    assert M.select_alpha(gap, full, 5.0, 2)[1].sel(checkpoint="c1") == 1e-6
    ok_e, sel_e = M.select_alpha(xr.full_like(acc, nan), full, 5.0, 1)
    assert np.isnan(sel_e).all() and np.isnan(ok_e).all()
    # runs that exist but are degenerate (accuracy NaN) fail the tolerance; all degenerate:
    # the smallest candidate alpha
    deg = acc.where(acc.alpha != 1e-5)
    ok_d, sel_d = M.select_alpha(deg, full, 5.0, 2, exists=xr.ones_like(acc, bool))
    assert sel_d.sel(checkpoint="c1") == 1e-6 and ok_d.sel(checkpoint="c1", alpha=1e-5).all() == 0
    _, sel_all = M.select_alpha(xr.full_like(acc, nan), full, 5.0, 2,
                                exists=xr.ones_like(acc, bool))
    assert sel_all.values.tolist() == [1e-6, 1e-6]
    # a task with no mask at all at a checkpoint (masks.families_last) does not count there
    absent = acc.copy()
    absent.loc[{"checkpoint": "c1", "task": "t1"}] = nan
    ok_a, sel_a = M.select_alpha(absent, full, 5.0, 2)
    assert sel_a.sel(checkpoint="c1") == 1e-4  # t2 alone: within 5 points at every alpha
    assert np.isnan(ok_a.sel(checkpoint="c1", task="t1")).all()
    assert sel_a.sel(checkpoint="c2") == 1e-6


def test_mean_ci_and_nested_ci():
    da = xr.DataArray([[1.0, 2.0, 3.0], [4.0, np.nan, np.nan]], dims=("x", "seed"))
    ci = S.mean_ci(da, "seed", 0.95)
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 1
    assert ci["mean"].values.tolist() == [2.0, 4.0]
    assert ci["upper"].values[0] == pytest.approx(2 + half)
    assert np.isnan(ci["lower"].values[1]) and ci["n"].values.tolist() == [3, 1]
    # nested: seeds averaged within a network first, then the interval across networks
    nested = xr.DataArray([[1.0, 3.0, np.nan], [4.0, 4.0, 4.0], [6.0, np.nan, np.nan]],
                          dims=("network", "seed"))
    iv = S.interval(nested, 0.95)
    assert (iv.mean, iv.n) == (pytest.approx(4.0), 3)  # network means 2, 4, 6
    assert iv.upper == pytest.approx(4 + 4.302652729911275 * 2 / np.sqrt(3))
    assert S.Interval.of(S.nested_ci(nested, 0.95)).upper == pytest.approx(iv.upper)
    one = S.interval(nested.isel(network=[0]), 0.95)
    assert one.n == 1 and np.isnan(one.lower) and not one.finite


def _iv(mean, half=1.0, n=3):
    return S.Interval(mean, mean - half, mean + half, n)


def test_verdicts_follow_the_intervals():
    assert S.distinct_verdict(_iv(50), _iv(90)).startswith("distinct")
    assert S.distinct_verdict(_iv(88, 3), _iv(90, 3)).startswith("not shown distinct")
    assert S.distinct_verdict(_iv(92), _iv(90)).startswith("not distinct")
    assert S.distinct_verdict(_iv(90), S.Interval(50, np.nan, np.nan, 1)) == (
        "not testable (the same-task overlap rests on 1 network: an interval needs at least two "
        "networks)")
    assert S.trend_verdict(_iv(10), spread=3.0, sign=+1) == "reproduced"
    assert "spread between networks" in S.trend_verdict(_iv(10), spread=12.0, sign=+1)
    assert S.trend_verdict(_iv(-10), spread=1.0, sign=+1) == "not reproduced"
    assert S.trend_verdict(_iv(-10), spread=1.0, sign=-1) == "reproduced"
    assert "includes no change" in S.trend_verdict(_iv(0.5), spread=0.0, sign=+1)
    assert S.drop_verdict(_iv(30), _iv(2)).startswith("specific")
    assert S.drop_verdict(_iv(3), _iv(3)).startswith("not specific")
    assert "degenerate" in S.drop_verdict(S.Interval(np.nan, np.nan, np.nan, 0), _iv(1))


def test_records_to_labelled_dataset():
    rows = [{"network": 0, "task": "a", "x": 1.0}, {"network": 1, "task": "b", "x": 2.0}]
    ds = M.to_dataset(rows, ("network", "task"), {"network": [0, 1, 2], "task": ["b", "a"]})
    assert ds["x"].dims == ("network", "task")
    assert ds["x"].sel(network=0, task="a") == 1.0
    assert np.isnan(ds["x"].sel(network=0, task="b")) and np.isnan(ds["x"].sel(network=2)).all()
    with pytest.raises(M.MetricsError, match="two records for"):
        M.to_dataset(rows + rows[:1], ("network", "task"), {"network": [0, 1], "task": ["a"]})


# --------------------------------------------------------------------------- properties

bools = arrays(bool, st.integers(1, 60))


@settings(max_examples=60, deadline=None)
@given(st.lists(bools, min_size=1, max_size=4))
def test_sparsity_range(masks):
    assert 0.0 <= M.sparsity(masks) <= 100.0


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 80).flatmap(lambda n: st.tuples(arrays(bool, n), arrays(bool, n))))
def test_iou_below_iomin(pair):
    iomin, iou = M.overlap(*pair)
    if not np.isnan(iomin):
        assert 0.0 <= iou <= iomin + 1e-9 <= 100.0 + 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 50), st.integers(0, 50), st.integers(0, 50)),
                min_size=1, max_size=4))
def test_chance_ranges(tensors):
    sizes = [n for n, _, _ in tensors]
    ka = [min(a, n) for n, a, _ in tensors]
    kb = [min(b, n) for n, _, b in tensors]
    iomin, iou = M.chance_overlap(ka, kb, sizes)
    if sum(ka) and sum(kb):
        assert 0.0 <= iou <= iomin + 1e-9 <= 100.0 + 1e-9


@settings(max_examples=40, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 6))))
def test_dispersity_nonnegative(mask):
    assert M.tensor_dispersity(mask) >= 0.0


# --------------------------------------------------------------------------- end to end


def test_files_match_schema_and_carry_provenance(data, built):
    _, cfg, _ = built
    for name, ds in data.items():
        assert ds.attrs["config_hash"] == metrics_hash(cfg), name
        assert ds.attrs["profile"] == "ci"
    md = data["modules"]
    assert md["network"].values.tolist() == [0, 1, 2]
    assert md["family"].sel(task="color_rule") == "control"
    assert md["family"].sel(task="circle") == "original"
    # achieved milestone accuracies per network, from each training.nc
    assert md["ckpt_val_acc"].sel(network=2).values.tolist() == pytest.approx([20.9, 30.9])
    # network 1 was re-initialised once (its log says so); logs without restart attributes
    # (written before restarts existed) mean the network's own seed and none
    assert md["init_seed"].values.tolist() == [0, 123456, 2]
    assert md["restarts"].values.tolist() == [0, 1, 0]
    for name, ds in data.items():
        assert ds["restarts"].values.tolist() == [0, 1, 0], name


def test_restarts_in_summary(summary):
    assert summary["restarts"] == {"1": 1}


def test_modules_values_match_the_mask_files(data, built):
    out, _, _ = built
    md = data["modules"]
    path = out.parent / "masks" / "net1" / "scl_30" / "square-a1e-5-s1.pt"
    rec = torch.load(path, weights_only=True)
    masks = [rec["mask"][n].numpy() for n in rec["names"]]
    at = md.sel(network=1, checkpoint="scl_30", task="square", alpha=1e-5, seed=1)
    assert float(at["sparsity"]) == pytest.approx(M.sparsity(masks))
    assert float(at["dispersity"]) == pytest.approx(M.dispersity(masks))
    assert float(at["converged"]) == float(rec["converged"])
    assert float(md["n_masked"]) == syn.N
    # accuracies from evals.nc: select split drives alpha, report split is reported
    assert float(at["acc_full_report"]) == pytest.approx(55 + 15 + 1)
    assert float(at["acc_report"]) == pytest.approx(71 - 1 - 1 + 0.3)
    ly = data["layers"].sel(network=1, checkpoint="scl_30", task="square", alpha=1e-5, seed=1)
    assert ly["kept"].values.tolist() == [float(m.sum()) for m in masks]
    assert float(ly["share"].sum()) == pytest.approx(100.0)


def test_convergence_flags_and_selected_alpha(data, summary):
    md = data["modules"]
    # one mask file per checkpoint folder is planted unconverged
    per_folder = (md["converged"] == 0).sum(["task", "alpha", "seed"])
    assert (per_folder == 1).all()
    # alpha: both alphas lose < 5 points on the select split -> the largest
    assert md["selected_alpha"].values.tolist() == [3e-5, 3e-5]
    fam = summary["checkpoints"]["scl_30"]["families"]["control"]
    assert fam["runs"] == 3 * 2 * 2 and fam["converged"] + fam["excluded_unconverged"] == 12


def test_density_change_constant_reads_the_curve_before_the_anneal():
    steps, dens = [0, 40, 80, 120, 160, 200], [100, 40, 30, 25, 24.9, 24.9]
    # anneal over the last half: starts at step 100, last two logged steps 40 and 80:
    # 10 points per 40 steps = 10 points per 20% of the run
    assert M.density_change_constant(steps, dens, 0.5) == pytest.approx(10.0)
    # a constant rate: the run's last two logged steps (0.0 per 40 steps)
    assert M.density_change_constant(steps, dens, 0.0) == pytest.approx(0.0)
    # a 100-step run logged every 10: anneal from step 50, last two logged 40 and 50 (2
    # points per 10 steps), scaled to 20% of the run (20 steps): 4 points
    assert M.density_change_constant(list(range(0, 101, 10)),
                                     [100, 60, 50, 45, 42, 40, 39, 39, 39, 39, 39],
                                     0.5) == pytest.approx(4.0)
    # fewer than two logged steps before the anneal: not measurable
    assert np.isnan(M.density_change_constant([0, 200], [100, 20], 0.5))


def test_plateau_count_in_summary(data, summary):
    md = data["modules"]
    assert "density_change_constant" in md
    fam = summary["checkpoints"]["scl_30"]["families"]["control"]
    assert 0 <= fam["plateaued"] <= fam["runs"]
    pl = md["density_change_constant"].sel(checkpoint="scl_30", alpha=md["selected_alpha"].sel(
        checkpoint="scl_30"), task=["color_rule", "size_rule"])
    assert fam["plateaued"] == int((pl <= 1.0).sum())


def test_sharing_pairs_and_nulls(data):
    sh = data["sharing"]
    at = sh.sel(network=0, checkpoint="scl_20")
    # a mask with itself and pairs across families are not computed
    assert np.isnan(at["iomin"].sel(task="circle", other_task="circle", seed=0, other_seed=0))
    assert np.isnan(at["iomin"].sel(task="circle", other_task="color_rule")).all()
    same = float(at["iomin"].sel(task="circle", other_task="circle", seed=0, other_seed=1))
    assert 0 < same <= 100
    # chance: IoMin of random masks is below the planted overlap
    pair = at.sel(task="color_rule", other_task="size_rule", seed=0, other_seed=0)
    assert float(pair["iomin_chance"]) < float(pair["iomin"])
    assert float(sh["alpha"].sel(checkpoint="scl_20")) == 3e-5


def test_verdicts_on_planted_data(summary):
    last = summary["checkpoints"]["scl_30"]["families"]
    # control modules are planted distinct, original ones are reruns of one module
    assert last["control"]["iomin"]["verdict"].startswith("distinct")
    assert not last["original"]["iomin"]["verdict"].startswith("distinct")
    for fam in ("control", "original"):
        io = last[fam]["iomin"]
        assert io["chance"]["mean"] < io["cross_task"]["mean"]
        assert io["same_task"]["n"] == 3
    # selective ablation: control specific, original not; original inverted is degenerate
    assert last["control"]["selective_drop"]["verdict"].startswith("specific")
    assert last["original"]["selective_drop"]["verdict"].startswith("not specific")
    inv = last["original"]["inverted_drop"]
    assert inv["degenerate_excluded"] > 0 and inv["own"]["mean"] is None
    assert "degenerate" in inv["verdict"]
    # complement protocol: the control complement mask loses only its task's set
    comp = last["control"]["complement_drop"]
    assert comp["own"]["mean"] == pytest.approx(0.5, abs=0.05)
    assert comp["verdict"].startswith("specific")
    assert "not testable" in last["original"]["complement_drop"]["verdict"]
    # planted: density falls over checkpoints -> sparsity trend beyond the network spread
    assert summary["trends"]["original"]["sparsity"]["verdict"] == "reproduced"
    assert summary["checkpoints"]["scl_20"]["val_acc"]["n"] == 3
    assert summary["checkpoints"]["scl_20"]["report_problems_min"] == 400


def test_curves(data):
    cv = data["curves"]
    assert cv["train_acc"].dims == ("network", "train_step")
    assert cv["val_acc"].sel(network=1).values[0] == pytest.approx(12.5 + 10 - 1)
    d = cv["density"].sel(network=0, checkpoint="scl_20", task="circle", alpha=3e-5, seed=0)
    assert d.values[0] == 100.0 and d.values[-1] < 100.0
    assert cv.attrs["snapshot_param"] == "relation.fc.weight"
    assert np.isfinite(cv["keep_prob"].sel(checkpoint="scl_30", task="circle")).any()


def test_same_inputs_give_identical_bytes(inputs, tmp_path):
    masks, train, cfg = inputs
    digests = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        ds = M.build(masks, train, cfg, source="test", progress=False)
        M.write(ds, out, M.summarize(ds, cfg))
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.iterdir())})
        assert not list(out.glob(".tmp-*"))
    assert digests[0] == digests[1] and len(digests[0]) == len(FILES) + 1


# --------------------------------------------------------------------------- bad inputs


def test_missing_folder_or_evaluations(inputs):
    masks, train, cfg = inputs
    with pytest.raises(M.MetricsError, match="mask folder not found"):
        M.build(masks / "nope", train, cfg, progress=False)
    (masks / "net1" / "scl_20" / "evals.nc").unlink()
    with pytest.raises(M.MetricsError, match=r"net1/scl_20/evals.nc: file not found"):
        M.build(masks, train, cfg, progress=False)
    shutil.rmtree(masks / "net1")
    with pytest.raises(M.MetricsError, match=r"net1/scl_20: no mask files"):
        M.build(masks, train, cfg, progress=False)


def test_stale_or_incomplete_evaluations(inputs):
    masks, train, cfg = inputs
    d = masks / "net0" / "scl_20"
    extra = d / "color_rule-a1e-5-s0.pt"
    shutil.copy(extra, d / "color_rule-a1e-5-s7.pt")
    with pytest.raises(M.MetricsError, match="no evaluation of mask 'color_rule-a1e-5-s7'"):
        M.build(masks, train, cfg, progress=False)
    with pytest.raises(M.MetricsError, match="holds run 'color_rule-a1e-5-s0'"):
        M.read_mask_record(d / "color_rule-a1e-5-s7.pt", 0, "scl_20")
    (d / "color_rule-a1e-5-s7.pt").unlink()
    extra.unlink()
    with pytest.raises(M.MetricsError, match="evaluates mask 'color_rule-a1e-5-s0', which has "
                                             "no mask file"):
        M.build(masks, train, cfg, progress=False)


def test_mask_in_the_wrong_place_or_broken(inputs):
    masks, train, cfg = inputs
    src = masks / "net0" / "scl_20" / "size_rule-a1e-5-s1.pt"
    dst = masks / "net1" / "scl_20" / "size_rule-a1e-5-s1.pt"
    shutil.copy(src, dst)
    with pytest.raises(M.MetricsError, match="made for net0/scl_20, found under net1/scl_20"):
        M.build(masks, train, cfg, progress=False)
    dst.write_bytes(src.read_bytes()[:100])
    with pytest.raises(M.MetricsError, match="size_rule-a1e-5-s1.pt"):
        M.build(masks, train, cfg, progress=False)


def test_training_log_of_another_run_is_refused(inputs):
    masks, train, cfg = inputs
    other = syn.config(networks=(0, 1), train={"milestones": [20.0], "lr": 0.1})
    with pytest.raises(M.MetricsError, match=r"net0/training.nc: trained with other "
                                             r"parameters than profile 'ci'"):
        M.build(masks, train, other, progress=False)
    (train / "net1" / "scl_20.pt").write_bytes(b"another checkpoint")
    with pytest.raises(M.MetricsError, match=r"net1/training.nc: does not match .*scl_20.pt "
                                             r"\(sha256 differs"):
        M.build(masks, train, cfg, progress=False)
    (train / "net0" / "training.nc").write_text("not netcdf")
    with pytest.raises(M.MetricsError, match="net0/training.nc: cannot read as netCDF"):
        M.build(masks, train, cfg, progress=False)


def test_cli_reports_errors_and_writes_nothing(inputs, tmp_path, capsys):
    _, train, _ = inputs
    params = syn.write_params(tmp_path / "params.yaml", networks=(0, 1))
    out = tmp_path / "out"
    code = M.main(["--masks", str(tmp_path / "none"), "--train", str(train), "--params",
                   str(params), "--out", str(out)])
    assert code == 2
    assert "mask folder not found" in capsys.readouterr().err
    assert not out.exists()


def test_notebook_stage(inputs, tmp_path):
    from core.notebook import run

    masks, train, _ = inputs
    params = syn.write_params(tmp_path / "params.yaml", networks=(0, 1),
                              train={"milestones": [20.0]})
    cfg = load(params)
    out = tmp_path / "nb"
    run(ROOT / "analysis" / "module_metrics.ipynb", None,
        {"params": str(params), "masks": str(masks), "train": str(train), "out": str(out)})
    for name in FILES:
        assert open_metrics(out, name, metrics_hash(cfg)).sizes["network"] == 2
    assert json.loads((out / "summary.json").read_text())["profile"] == "ci"


def test_real_sweep_output(tmp_path):
    """The interface with core.sweep / core.masking: metrics on what a (tiny) sweep writes."""
    import test_sweep  # its tiny checkpoints, task sets and params

    from core import sweep

    train, data = test_sweep.make_inputs(tmp_path)
    params = test_sweep.small_params(tmp_path, steps=2)
    cfg = load(params)
    sweep.Sweep(cfg, 0, train, data, tmp_path / "masks" / "net0", log=lambda m: None).run()
    syn.write_training(train, cfg, 0)
    res = M.run(tmp_path / "masks", tmp_path / "train", params, tmp_path / "metrics",
                progress=False)
    md = res["modules"]
    assert md["task"].values.tolist() == ["circle"] and md.sizes["network"] == 1
    assert np.isfinite(md["sparsity"]).sum() == len(sweep.plan(cfg))
    assert set(res["summary"]["checkpoints"]) == set(cfg.checkpoints)


def test_fewest_report_problems_ignore_pairs_not_evaluated():
    """evals.nc holds n_problems 0 where the plan evaluates nothing (e.g. an alpha-sweep mask
    on another task's set): the summary's fewest problems is over evaluated pairs only."""
    assert _min_int(xr.DataArray([0, 400, 12, np.nan])) == 12
    assert _min_int(xr.DataArray([0, 0])) is None


def test_tasks_outside_the_alpha_tolerance_are_named():
    """The selection rule falls back to the best worst-task margin when no alpha is within
    metrics.alpha_tolerance: the summary names the tasks whose modules lose more."""
    ok = xr.DataArray([[[1.0, 0.0], [0.0, 0.0], [np.nan, np.nan]]], dims=("checkpoint", "task",
                      "alpha"), coords={"checkpoint": ["scl_50"], "task": ["a", "b", "c"],
                                        "alpha": [1e-6, 1e-5]})
    assert _failing(ok, "scl_50", 1e-5) == ["a", "b"]  # c: not masked there
    assert _failing(ok, "scl_50", 1e-6) == ["b"]
    assert _failing(ok, "scl_50", float("nan")) == []


def test_a_mask_that_never_trained_is_excluded_and_counted(inputs):
    """A run whose logits stayed uniform (here: all at one value, read-out keeping every
    weight) was recorded 'converged' by the old rule (its curve is flat); the metrics flag it
    not converged, leave it out of every verdict and count it."""
    masks, train, cfg = inputs
    from core.formats.masks import load_mask, save_mask

    path = masks / "net0" / "scl_20" / "color_rule-a3e-5-s0.pt"
    rec = load_mask(path)
    assert rec["converged"]
    rec["mask"] = {n: torch.ones_like(m) for n, m in rec["mask"].items()}
    rec["logits"] = {n: torch.full_like(t, 1.2251) for n, t in rec["logits"].items()}
    save_mask(path, rec)
    assert "all ended equal" in M.read_mask_record(path, 0, "scl_20").degenerate
    assert not M.read_mask_record(path, 0, "scl_20").converged
    ds = M.build(masks, train, cfg, source="test", progress=False)
    md = ds["modules"]
    run = dict(network=0, checkpoint="scl_20", task="color_rule", alpha=3e-5, seed=0)
    assert float(md["converged"].sel(**run)) == 0
    summary = M.summarize(ds, cfg)
    assert summary["degenerate_runs"] == 1
    fam = summary["checkpoints"]["scl_20"]["families"]["control"]
    if summary["checkpoints"]["scl_20"]["alpha"] == 3e-5:  # counted where verdicts are made
        assert fam["excluded_degenerate"] == 1
        assert fam["converged"] + fam["excluded_unconverged"] == fam["runs"]
