"""Tests of core.metrics: hand-computed metric values, property ranges, the alpha rule, the
CLI end to end on synthetic mask files (format of docs/architecture.md), bad inputs, and
byte-identical output."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core import metrics as M
from core.config import load, mask_runs
from core.schema import validate

ROOT = Path(__file__).resolve().parents[1]
PARAMS = (("vision.conv.weight", (4, 1, 3, 3)), ("vision.conv.bias", (4,)),
          ("relation.fc.weight", (6, 8)), ("logit.weight", (1, 6)))


# --------------------------------------------------------------------------- fixtures


def write_mask(path: Path, run: dict, rng: np.random.Generator, density: float = 0.4,
               params=PARAMS, fingerprint: str = "fp-toy", shared: dict | None = None) -> None:
    """A mask file in the modules-avr-mask/1 format with random masks of ``density``."""
    names = [n for n, _ in params]
    mask, logits = {}, {}
    for n, s in params:
        lg = rng.normal(size=s).astype(np.float32) + float(np.log(density / (1 - density)))
        if shared and n in shared:
            lg = np.where(shared[n], 5.0, lg).astype(np.float32)
        logits[n] = torch.from_numpy(lg)
        mask[n] = logits[n] > 0
    steps = list(range(0, 21, 5))
    torch.save({
        "format": "modules-avr-mask/1", "checkpoint": run["checkpoint"], "task": run["task"],
        "alpha": run["alpha"], "seed": run["seed"], "steps": 20, "arch": "scl",
        "image_size": 80, "model_fingerprint": fingerprint, "names": names,
        "shapes": [list(s) for _, s in params], "mask": mask, "logits": logits,
        "accuracy": {"task": 80.0 - 1e5 * run["alpha"], "not_task": 60.0,
                     "task_inverted": 15.0, "not_task_inverted": 40.0, "task_full": 82.0,
                     "not_task_full": 70.0},
        "curve": {"step": steps, "loss": [2.0 / (1 + s) for s in steps],
                  "task_acc": [50.0 + s for s in steps],
                  "task_inverted_acc": [60.0 - s for s in steps],
                  "density": [100.0 - 2 * s for s in steps]},
        "snapshots": {"param": "relation.fc.weight", "steps": [0, 10, 20],
                      "logits": torch.stack([logits["relation.fc.weight"]] * 3)},
    }, path)


def write_training(path: Path, milestones=(20.0, 25.0, 30.0), style: str = "train") -> None:
    """A training log like core.train writes (``style="train"``: loss/acc, val_epoch and the
    milestone records) or the minimal contract (``"minimal"``: train_loss/train_acc/epoch and
    val_acc only)."""
    steps = np.arange(0, 100, 10)
    val_steps = np.arange(0, 100, 20)
    ds = xr.Dataset(
        {"epoch": ("step", steps // 50),
         "val_acc": ("val_step", np.array([12.5, 21.0, 24.0, 31.0, 33.0]),
                     {"units": "percent"})},
        coords={"step": steps, "val_step": val_steps})
    loss, acc = np.linspace(2.1, 1.0, steps.size), np.linspace(12.5, 40.0, steps.size)
    if style == "train":
        ds = ds.assign(loss=("step", loss), acc=("step", acc, {"units": "percent"}),
                       val_epoch=("val_step", val_steps // 50),
                       milestone_step=("milestone", [20, 55, 60][: len(milestones)]),
                       milestone_val_acc=("milestone", [21.0, 30.5, 31.0][: len(milestones)]))
        ds = ds.assign_coords(milestone=list(milestones))
    else:
        ds = ds.assign(train_loss=("step", loss), train_acc=("step", acc))
    ds.to_netcdf(path, engine="netcdf4")


# the ci profile of the repo's params.yaml with the mask layout these tests assume pinned
LAYOUT = {"train": {"milestones": [20, 25, 30]},
          "masks": {"tasks": ["circle", "square"], "seeds": [0, 1], "alpha": 1.0e-5,
                    "alpha_sweep": [1.0e-5, 1.0e-4]},
          "metrics": {"alpha_tolerance": 5.0, "chance_samples": 10, "ci": 0.95,
                      "alpha_min_seeds": 2, "dispersity_samples": 10}}


@pytest.fixture(scope="module")
def params(tmp_path_factory) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    ci = raw["profiles"].setdefault("ci", {}) or {}
    for section, values in LAYOUT.items():
        ci[section] = {**(ci.get(section) or {}), **values}
    raw["profiles"]["ci"] = ci
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def cfg(params):
    return load(params, "ci")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, cfg, params):
    """A mask folder with every ci run (a shared core kept by every task) and a training log."""
    d = tmp_path_factory.mktemp("inputs")
    masks = d / "masks"
    masks.mkdir()
    rng = np.random.default_rng(0)
    core_ = {n: np.random.default_rng(1).random(s) < 0.1 for n, s in PARAMS}
    for run in mask_runs(cfg):
        write_mask(masks / f"{run['key']}.pt", run, rng, shared=core_)
    write_training(d / "training.nc")
    return masks, d / "training.nc", params


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    masks, training, params = inputs
    out = tmp_path_factory.mktemp("out")
    assert M.main(["--masks", str(masks), "--training", str(training), "--params", str(params),
                   "--profile", "ci", "--out", str(out)]) == 0
    return out


def _copy_masks(inputs, tmp_path) -> Path:
    masks = tmp_path / "masks"
    shutil.copytree(inputs[0], masks)
    return masks


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


@pytest.mark.parametrize("p", [0.05, 0.3, 0.8])
def test_normalised_dispersity_of_random_masks_is_one(p):
    rng = np.random.default_rng(2)
    shapes = [(32, 16, 3, 3), (80, 64), (200,), (16, 9)]
    norms = [M.dispersity_norm([rng.random(s) < p for s in shapes], 100, 0) for _ in range(10)]
    assert np.mean(norms) == pytest.approx(1.0, abs=0.05)


def test_normalised_dispersity_of_clustered_mask_is_small():
    m = np.zeros((40, 40), bool)
    m[30:35, 30:35] = True  # a tight block far from the origin
    assert M.dispersity_norm([m], 50, 0) < 0.2


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


def test_chance_upper_quantile():
    rng = np.random.default_rng(4)
    mean_iomin, _ = M.chance_overlap([50, 20], [80, 30], [200, 100])
    hi_iomin, hi_iou = M.chance_upper([50, 20], [80, 30], [200, 100], 2000, 0.95, rng)
    assert mean_iomin < hi_iomin <= 100
    assert 0 < hi_iou < hi_iomin
    assert all(np.isnan(M.chance_upper([5], [5], [10], 0, 0.95, rng)))


def test_remove_shared_on_toy_modules():
    masks = {"a": np.array([1, 1, 0, 1], bool), "b": np.array([1, 0, 1, 1], bool),
             "c": np.array([1, 1, 1, 1], bool)}
    specific, shared = M.remove_shared(masks)
    assert shared.tolist() == [True, False, False, True]
    assert specific["a"].tolist() == [False, True, False, False]
    assert specific["b"].tolist() == [False, False, True, False]
    assert specific["c"].tolist() == [False, True, True, False]


def _acc(values):
    """acc_task array (checkpoint 2, task 2, alpha 3, seed 2) from nested lists."""
    return xr.DataArray(np.array(values, float), dims=("checkpoint", "task", "alpha", "seed"),
                        coords={"checkpoint": ["c1", "c2"], "task": ["t1", "t2"],
                                "alpha": [1e-6, 1e-5, 1e-4], "seed": [0, 1]})


def test_alpha_selection_rule():
    nan = np.nan
    acc = _acc([[[[89, 89], [86, 86], [80, 80]], [[89, 89], [89, 89], [89, 89]]],
                [[[80, 80], [70, 70], [90, nan]], [[80, 80], [60, 60], [90, nan]]]])
    full = xr.full_like(acc, 90.0)
    ok, sel = M.select_alpha(acc, full, tolerance=5.0, min_seeds=2)
    # c1: 1e-4 loses 10 points on t1 -> the largest alpha within 5 points of both is 1e-5
    assert sel.sel(checkpoint="c1") == 1e-5
    assert ok.sel(checkpoint="c1", task="t1").values.tolist() == [1, 1, 0]
    # c2: 1e-4 has one seed (not a candidate); none within tolerance -> best worst margin
    assert sel.sel(checkpoint="c2") == 1e-6
    assert ok.sel(checkpoint="c2", task="t1", alpha=1e-4) == 0
    ok1, sel1 = M.select_alpha(acc, full, tolerance=5.0, min_seeds=1)
    assert sel1.sel(checkpoint="c2") == 1e-4  # one seed suffices now
    _, sel0 = M.select_alpha(acc, full, tolerance=100.0, min_seeds=2)
    assert sel0.values.tolist() == [1e-4, 1e-5]
    empty = xr.full_like(acc, np.nan)
    ok_e, sel_e = M.select_alpha(empty, full, 5.0, 1)
    assert np.isnan(sel_e).all() and np.isnan(ok_e).all()


def test_mean_ci():
    da = xr.DataArray([[1.0, 2.0, 3.0], [4.0, np.nan, np.nan]], dims=("x", "seed"))
    ci = M.mean_ci(da, "seed", 0.95)
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n), sd = 1
    assert ci["mean"].values.tolist() == [2.0, 4.0]
    assert ci["upper"].values[0] == pytest.approx(2 + half)
    assert ci["lower"].values[0] == pytest.approx(2 - half)
    assert np.isnan(ci["lower"].values[1]) and ci["n"].values.tolist() == [3, 1]


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


def test_files_match_schema_and_are_documented(built):
    for name in ("modules", "layers", "sharing", "curves"):
        with xr.open_dataset(built / f"{name}.nc") as ds:
            validate(ds, name)
            for attr in ("Conventions", "title", "source", "references"):
                assert ds.attrs[attr]
            for var in ds.variables:
                assert ds[var].attrs.get("units") and ds[var].attrs.get("long_name"), var


def test_modules_values_match_the_mask_files(built, inputs, cfg):
    masks_dir = inputs[0]
    mods = xr.open_dataset(built / "modules.nc")
    layers = xr.open_dataset(built / "layers.nc")
    run = mask_runs(cfg)[0]
    d = torch.load(masks_dir / f"{run['key']}.pt", weights_only=True)
    parts = [d["mask"][n].numpy() for n, _ in PARAMS]
    at = dict(checkpoint=run["checkpoint"], task=run["task"], alpha=run["alpha"],
              seed=run["seed"])
    assert float(mods["sparsity"].sel(at)) == pytest.approx(M.sparsity(parts))
    assert float(mods["dispersity"].sel(at)) == pytest.approx(M.dispersity(parts))
    assert float(mods["acc_task_full"].sel(at)) == 82.0
    assert float(mods["n_masked"]) == sum(int(np.prod(s)) for _, s in PARAMS)
    kept = layers["kept"].sel(at).values
    assert kept.tolist() == [int(p.sum()) for p in parts]
    assert float(layers["share"].sel(at).sum()) == pytest.approx(100.0)
    assert layers["subnet"].values.tolist() == ["vision", "vision", "relation", "logit"]
    # the sweep alpha exists only at the last checkpoint with the first seed
    sweep = mods["sparsity"].sel(alpha=1e-4)
    assert np.isnan(sweep.sel(checkpoint="scl_20")).all()
    assert np.isfinite(sweep.sel(checkpoint="scl_30", seed=0)).all()
    assert np.isnan(sweep.sel(checkpoint="scl_30", seed=1)).all()
    # alpha rule: 1e-4 has one seed (< alpha_min_seeds = 2), so 1e-5 everywhere
    assert mods["selected_alpha"].values.tolist() == [1e-5] * 3
    seed_iou = mods["seed_iou"].sel(checkpoint="scl_20", task="circle", alpha=1e-5)
    assert np.diag(seed_iou.values).tolist() == [100.0, 100.0]
    assert 0 < float(M.seed_agreement(seed_iou)) < 100
    # checkpoint facts from the log's milestone records
    assert mods["ckpt_step"].values.tolist() == [20.0, 55.0, 60.0]
    assert mods["ckpt_val_acc"].values.tolist() == [21.0, 30.5, 31.0]


def test_sharing_and_removal(built):
    sh = xr.open_dataset(built / "sharing.nc")
    mods = xr.open_dataset(built / "modules.nc")
    iomin, iou = sh["iomin"], sh["iou"]
    assert (iomin.sel(task="circle", other_task="circle") == 100).all()
    np.testing.assert_allclose(iomin.values, iomin.transpose(
        "checkpoint", "other_task", "task", "seed").values)
    assert (iou <= iomin + 1e-9).all()
    # the toy masks share a core kept by every task: overlap well above chance
    off = dict(task="circle", other_task="square")
    assert (iomin.sel(off) > sh["iomin_chance"].sel(off)).all()
    assert (sh["iomin_chance_upper"].sel(off) >= sh["iomin_chance"].sel(off) - 5).all()
    assert (sh["n_shared"] > 0).all()
    # after removal of the weights kept by both, the pair shares nothing
    assert (sh["iomin_specific"].sel(off) == 0).all()
    assert (mods["sparsity_specific"] >= mods["sparsity"]).sel(alpha=1e-5).all()
    assert sh["alpha"].values.tolist() == [1e-5] * 3


def test_curves(built):
    cv = xr.open_dataset(built / "curves.nc")
    assert cv.attrs["snapshot_param"] == "relation.fc.weight"
    assert cv["mask_step"].values.tolist() == [0, 5, 10, 15, 20]
    at = dict(checkpoint="scl_20", task="circle", alpha=1e-5, seed=0)
    assert cv["acc_task"].sel(at).values.tolist() == [50, 55, 60, 65, 70]
    kp = cv["keep_prob"]
    assert kp.sizes["snap_row"] == 6 and kp.sizes["snap_col"] == 8
    assert float(kp.min()) >= 0 and float(kp.max()) <= 1
    assert cv["train_loss"].sizes["train_step"] == 10 and cv["val_acc"].values[-1] == 33.0


def test_same_inputs_give_identical_bytes(inputs, cfg, tmp_path):
    masks, training, _ = inputs
    digests = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        M.write(M.build(masks, training, cfg, source="test", progress=False), out)
        digests.append({n: hashlib.sha256((out / f"{n}.nc").read_bytes()).hexdigest()
                        for n in ("modules", "layers", "sharing", "curves")})
        assert not list(out.glob(".tmp-*"))
    assert digests[0] == digests[1]


def test_checkpoint_facts_from_a_minimal_log(tmp_path, cfg):
    path = tmp_path / "training.nc"
    write_training(path, style="minimal")
    log = M.read_training(path)
    assert np.isnan(log["val_epoch"]).all() and "milestone" not in log
    coords = M._ckpt_coords(cfg, log)
    # milestones 20/25/30 first reached at val steps 20/60/60 (val acc 21/31/31)
    assert coords["ckpt_step"][1] == [20.0, 60.0, 60.0]
    assert coords["ckpt_val_acc"][1] == [21.0, 31.0, 31.0]
    write_training(path, milestones=(50.0, 70.0, 90.0))
    with pytest.raises(M.MetricsError, match="milestone 20 of train.milestones not in"):
        M._ckpt_coords(cfg, M.read_training(path))


def test_training_log_in_fractions_is_converted(tmp_path):
    path = tmp_path / "training.nc"
    xr.Dataset({"train_loss": ("step", [1.0]), "train_acc": ("step", [0.5], {"units": "1"}),
                "epoch": ("step", [0.0]), "val_acc": ("val_step", [0.25], {"units": "1"})}
               ).to_netcdf(path)
    log = M.read_training(path)
    assert log["train_acc"].tolist() == [50.0] and log["val_acc"].tolist() == [25.0]
    assert log["train_step"].tolist() == [0]


# --------------------------------------------------------------------------- bad inputs


def test_empty_mask_folder(tmp_path, cfg):
    with pytest.raises(M.MetricsError, match=f"{tmp_path}: no mask files"):
        M.load_masks(tmp_path, cfg)
    with pytest.raises(M.MetricsError, match="mask folder not found"):
        M.load_masks(tmp_path / "nope", cfg)


def test_missing_run(inputs, cfg, tmp_path):
    masks = _copy_masks(inputs, tmp_path)
    key = mask_runs(cfg)[3]["key"]
    (masks / f"{key}.pt").unlink()
    with pytest.raises(M.MetricsError, match=f"{key}.pt: mask file missing"):
        M.load_masks(masks, cfg, progress=False)


def test_unloadable_mask_file(inputs, cfg, tmp_path):
    masks = _copy_masks(inputs, tmp_path)
    key = mask_runs(cfg)[2]["key"]
    data = (masks / f"{key}.pt").read_bytes()
    (masks / f"{key}.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(M.MetricsError, match=f"{key}.pt: cannot load mask file"):
        M.load_masks(masks, cfg, progress=False)


def test_masks_of_different_models(inputs, cfg, tmp_path):
    masks = _copy_masks(inputs, tmp_path)
    run = mask_runs(cfg)[5]
    write_mask(masks / f"{run['key']}.pt", run, np.random.default_rng(0), fingerprint="other")
    with pytest.raises(M.MetricsError, match=f"{run['key']}.pt: model fingerprint differs"):
        M.load_masks(masks, cfg, progress=False)
    bigger = PARAMS[:3] + (("logit.weight", (1, 7)),)
    write_mask(masks / f"{run['key']}.pt", run, np.random.default_rng(0), params=bigger)
    with pytest.raises(M.MetricsError, match="parameter shapes differs .* different models"):
        M.load_masks(masks, cfg, progress=False)


def test_mask_of_wrong_shape_or_run(inputs, cfg, tmp_path):
    masks = _copy_masks(inputs, tmp_path)
    run = mask_runs(cfg)[1]
    path = masks / f"{run['key']}.pt"
    d = torch.load(path, weights_only=True)
    d["mask"]["logit.weight"] = torch.zeros(6, dtype=torch.bool)
    torch.save(d, path)
    with pytest.raises(M.MetricsError, match=r"mask of 'logit.weight' has shape \(6,\)"):
        M.load_masks(masks, cfg, progress=False)
    other = mask_runs(cfg)[0]
    write_mask(path, other, np.random.default_rng(0))
    with pytest.raises(M.MetricsError, match=f"{run['key']}.pt: .* expected"):
        M.load_masks(masks, cfg, progress=False)
    d = torch.load(masks / f"{other['key']}.pt", weights_only=True)
    del d["accuracy"]
    torch.save(d, path)
    with pytest.raises(M.MetricsError, match="key 'accuracy' missing"):
        M.load_masks(masks, cfg, progress=False)


def test_bad_training_log(inputs, cfg, tmp_path):
    path = tmp_path / "training.nc"
    xr.Dataset({"train_loss": ("step", [1.0]), "epoch": ("step", [0.0]),
                "val_acc": ("val_step", [10.0])}).to_netcdf(path)
    with pytest.raises(M.MetricsError, match=f"{path}: variable 'train_acc' \\(or 'acc'\\) "
                                             "missing"):
        M.read_training(path)
    path.write_text("not netcdf")
    with pytest.raises(M.MetricsError, match=f"{path}: cannot read as netCDF"):
        M.read_training(path)
    with pytest.raises(M.MetricsError, match="training log not found"):
        M.read_training(tmp_path / "missing.nc")


def test_cli_reports_errors_and_writes_nothing(inputs, tmp_path, capsys):
    _, training, params = inputs
    out = tmp_path / "out"
    code = M.main(["--masks", str(tmp_path), "--training", str(training), "--params",
                   str(params), "--profile", "ci", "--out", str(out)])
    assert code == 2
    assert "no mask files" in capsys.readouterr().err
    assert not out.exists()


def test_notebook_stage(inputs, tmp_path):
    from core.notebook import run

    masks, training, params = inputs
    out = tmp_path / "metrics"
    run(ROOT / "analysis" / "module_metrics.ipynb", None,
        {"params": str(params), "masks": str(masks), "training": str(training),
         "out": str(out), "profile": "ci"})
    for name in ("modules", "layers", "sharing", "curves"):
        with xr.open_dataset(out / f"{name}.nc") as ds:
            validate(ds, name)
