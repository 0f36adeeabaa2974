"""core.train: learning, adaptive milestones, outputs and provenance, resume byte-identity
(in-process and SIGKILL through the CLI), DDP through the CLI, devices, non-finite stops."""

import copy
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from core import train as T
from core.config import compose, from_dict, load
from core.formats import training as training_log
from core.io import file_sha256
from core.models import build_model, load_checkpoint
from core.raven.store import write_npz

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
CPU = T.Process(torch.device("cpu"), "fp32")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


CI = compose("ci")
torch.set_num_threads(1)  # 2 threads on a loaded 2-core machine: 10x slower steps (measured)


def raw_cfg(**train):
    raw = copy.deepcopy(CI)
    raw["data"]["image_size"] = SIZE
    raw["device"], raw["precision"] = "cpu", "fp32"
    # a small SCL: the tests check the loop, not the architecture (tests/test_models.py does)
    raw["model"].update({"conv_channels": [1, 4, 8], "conv_out": 16, "attr_heads": 4,
                         "attr_hidden": [8], "rel_heads": 4, "rel_hidden": [8, 5],
                         "ff_expansion": 2})
    raw["train"].update({"batch_size": 8, "epochs": 2, "milestones": [50, 70, 90],
                         "val_every": 4, "val_min_every": 1, "milestone_tolerance": 2.0,
                         "checkpoint_every": 3, "threads": 1, "nproc": 1, "val_n": 0,
                         "warmup_steps": 0, "eval_batch_size": 16, "networks": [0, 1],
                         **train})
    return raw


def cfg_of(**train):
    return from_dict(raw_cfg(**train))


def fake_split(n, seed):
    g = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(
        images=torch.randint(0, 256, (n, 16, SIZE, SIZE), dtype=torch.uint8, generator=g),
        targets=torch.randint(0, 8, (n,), generator=g))


def fake_splits(n=(16, 16, 16), fingerprint="fake"):
    return T.Splits(*(fake_split(k, s) for k, s in zip(n, (0, 1, 2))), fingerprint=fingerprint)


def fit(cfg, out, splits=None, evaluate=None, stop_after=None, network=0, proc=CPU,
        evaluate_of=None):
    """The parts of core.train.train, with the test seams: fake data, evaluate (or
    ``evaluate_of(state)``, one that reads the run's state), stop_after."""
    splits = splits or fake_splits()
    state = out / "state"
    run = T.setup_run(cfg, network, splits, proc)
    st = T.start(run, out, state)
    bs = cfg.train.eval_batch_size
    if evaluate_of is not None:
        evaluate = evaluate_of(st)
    if evaluate is None:
        evaluate = T.Evaluator(splits.val, torch.arange(len(splits.val.targets)), bs, proc)
    if not T.train_loop(run, st, splits.train, evaluate, state, stop_after=stop_after):
        return None
    test = T.Evaluator(splits.test, torch.arange(len(splits.test.targets)), bs, proc)
    return T.finish(run, st, test, out, state)


def write_data(root, n=(48, 16, 16)):
    """Tiny packed shards (random panels) in the layout of core.raven."""
    for split, k, seed in zip(("train", "val", "test"), n, (1, 2, 3)):
        ds = fake_split(k, seed)
        write_npz(root / "main" / split / "center_single.npz",
                  {"image": ds.images.numpy(), "target": ds.targets.numpy()})
    return root


def write_params(path, raw):
    path.write_text(yaml.safe_dump(raw))
    return path


def test_loss_decreases_on_a_tiny_set(tmp_path):
    cfg = cfg_of(epochs=15, milestones=[99], lr=1e-2)
    res = fit(cfg, tmp_path, fake_splits((16, 16, 16)), evaluate=lambda m, s: 0.0)
    log = xr.open_dataset(tmp_path / "training.nc")
    loss = log["loss"].values
    assert res.steps == 30 and len(loss) == 30 and res.missing == [99.0]
    assert loss[-5:].mean() < 0.7 * loss[:5].mean()
    assert log["acc"].attrs["units"] == "percent" and "long_name" in log["loss"].attrs
    assert not (tmp_path / "state").exists()  # resume state gone when the run ends


def test_adaptive_validation_keeps_milestones_within_tolerance(tmp_path):
    # accuracy rises 1.5 points per step: far from a milestone checks are sparse, near one
    # they are dense enough for every kept checkpoint to be within +-2 points
    def acc(step):
        return min(99.0, 12.5 + 1.5 * step)

    calls = []

    def evaluate(model, step):
        calls.append(step)
        return acc(step)

    cfg = cfg_of(epochs=40, val_min_every=1, val_every=40)
    res = fit(cfg, tmp_path, evaluate=evaluate)
    assert res.missing == [] and res.steps == max(calls)
    assert len(calls) < res.steps  # fewer checks than steps
    log = xr.open_dataset(tmp_path / "training.nc")
    for m in (50, 70, 90):
        r = res.reached[m]
        assert abs(r["val_acc"] - m) <= 2.0 and r["val_acc"] == acc(r["step"])
        _, meta = load_checkpoint(tmp_path / f"scl_{m}.pt", arch="scl")
        assert (meta["milestone"], meta["step"], meta["val_acc"]) == (m, r["step"], r["val_acc"])
        assert meta["network"] == 0
    assert (log["milestone_within_tolerance"].values == 1).all()
    np.testing.assert_allclose(log["milestone_error"].values,
                               log["milestone_val_acc"].values - [50, 70, 90])
    assert list(log["val_step"].values) == calls


def pilot_curve(step):
    """Validation accuracy of the default profile's pilot (a logistic through 50% at step 374
    and 70% at step 600, from chance 12.5% to a plateau at 89%)."""
    lo, hi = 12.5, 89.0
    logit = [math.log((a - lo) / (hi - a)) for a in (50.0, 70.0)]
    w = (600 - 374) / (logit[1] - logit[0])
    return lo + (hi - lo) / (1 + math.exp(-(step - 374 + w * logit[0]) / w))


@pytest.mark.filterwarnings("ignore::core.train.MilestoneWarning")
def test_noisy_validation_keeps_milestones_within_tolerance(tmp_path):
    # the real schedule (validate) on the pilot curve measured on 2000 problems (binomial
    # noise), default settings: checkpoints within +-2 points, far fewer checks than steps
    cfg = cfg_of(milestones=[50, 70, 85], val_min_every=10, val_every=200)
    run = T.setup_run(cfg, 0, fake_splits(), CPU)
    run.n_val = 2000
    rng = np.random.default_rng(0)
    errors, checks = [], []
    for _ in range(30):
        st = T.State(next_val=cfg.train.val_min_every)
        while len(st.reached) < 3:
            st.step = st.next_val
            T.validate(run, st, lambda m, s: rng.binomial(2000, pilot_curve(s) / 100) / 20,
                       tmp_path)
        errors += [r["val_acc"] - m for m, r in st.reached.items()]
        checks.append(len(st.val_steps))
    errors = np.abs(errors)
    assert (errors <= 2.0).mean() >= 0.95 and errors.max() < 4, sorted(errors)[-5:]
    assert np.mean(checks) < 60  # of ~800 steps to 85%


def test_validation_interval():
    vi = T.validation_interval
    assert vi([], 50, 2, 5, 100) == 5 and vi([(10, 20.0)], 50, 2, 5, 100) == 5
    assert vi([(10, 20.0), (20, 19.0)], 50, 2, 5, 100) == 100  # not rising: the longest
    # slope 1 point/step, 32 points to 52: FRACTION of that
    assert vi([(10, 10.0), (20, 20.0)], 50, 2, 5, 100) == int(T.FRACTION * 32)
    assert vi([(10, 10.0), (20, 49.0)], 50, 2, 5, 100) == 5  # steep and near: the shortest
    assert vi([(0, 12.0), (100, 13.0)], 50, 2, 5, 100) == 100
    # noisy checks: the true accuracy may be 2 SE higher, so the next check comes sooner
    rising = [(100, 40.0), (200, 45.0)]  # 0.05 points/step, 7 points to 52
    assert abs(vi(rising, 50, 2, 5, 100) - T.FRACTION * 7 / 0.05) <= 1  # (floor of a fit)
    assert abs(vi(rising, 50, 2, 5, 100, noise=1.5) - T.FRACTION * 4 / 0.05) <= 1
    # a plateau just below a milestone: the longest (a crossing by noise cannot overshoot far)
    assert vi([(100, 49.0), (200, 49.0)], 50, 2, 5, 100, noise=1.6) == 100
    # the slope comes from the validations of the last 2 x hi steps, fitted through noise
    # (hi 20: the jump at step 0 is outside, flat; hi 50: inside, rising)
    hist = [(0, 0.0), (10, 20.0), (20, 21.0), (30, 19.0), (40, 22.0), (50, 20.0)]
    assert vi(hist, 50, 2, 5, 20) == 20 and vi(hist, 50, 2, 5, 50) < 50
    # a slow climb right below a milestone: not every lo steps, but every tol / 2 of rise
    slow = [(0, 88.0), (200, 89.6)]  # 0.008 points/step, 0.4 points below 90
    assert vi(slow, 90, 2, 10, 200, noise=1.1) == int(2 / 2 / 0.008)


def test_overshoot_keeps_the_validation_before_or_warns(tmp_path):
    seq = {1: 30.0, 2: 49.0, 3: 60.0, 4: 60.0, 5: 80.0}  # 70: from 60 to 80, no closer one

    cfg = cfg_of(epochs=10, milestones=[50, 70], val_every=1)
    with pytest.warns(T.MilestoneWarning, match=r"milestone 70%: val acc 80.00% .*\+10.00 "
                                                r"points off"):
        res = fit(cfg, tmp_path, evaluate=lambda m, s: seq[s])
    # 50 was crossed at 60% (step 3): the model of step 2 (49%) is kept instead
    assert res.reached[50]["step"] == 2 and res.reached[50]["val_acc"] == 49.0
    assert res.reached[70]["step"] == 5
    log = xr.open_dataset(tmp_path / "training.nc")
    assert list(log["milestone_within_tolerance"].values) == [1, 0]
    assert list(log["milestone_step"].values) == [2, 5]
    # the fallback checkpoint holds the weights of step 2, not those of step 3
    again = tmp_path / "again"
    seq2 = {1: 30.0, 2: 51.0, 3: 60.0, 4: 60.0, 5: 71.0}
    fit(cfg, again, evaluate=lambda m, s: seq2[s])
    a = load_checkpoint(tmp_path / "scl_50.pt")[0].state_dict()
    b = load_checkpoint(again / "scl_50.pt")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def jump(model, step):
    """A validation curve that jumps from 20% to 80% within steps 12-18 (10 points a step)."""
    return float(min(80, max(20, 20 + 10 * (step - 12))))


def test_a_jump_past_milestones_is_replayed_to_the_exact_steps(tmp_path):
    # checks every 10 steps see 20% then 80%: training is rewound to the check before and
    # replayed (deterministically, across epochs: 2 steps per epoch here) with denser checks
    # until each milestone is kept at the step where the curve meets it
    splits = fake_splits((16, 16, 16))
    cfg = cfg_of(epochs=20, milestones=[50, 70], val_min_every=10, val_every=10)
    res = fit(cfg, tmp_path / "a", splits, evaluate=jump)
    assert {m: (r["step"], r["val_acc"]) for m, r in res.reached.items()} == \
        {50: (15, 50.0), 70: (17, 70.0)}
    log = xr.open_dataset(tmp_path / "a" / "training.nc")
    assert (log["milestone_within_tolerance"].values == 1).all()
    assert list(log["rewind_from_step"].values) == [20, 16, 26, 18]
    assert list(log["rewind_to_step"].values) == [10, 14, 16, 16]
    assert list(log["rewind_milestone"].values) == [50, 50, 70, 70]
    assert list(log["val_step"].values) == [10, 12, 14, 15, 16, 17]  # replaced checks gone
    assert len(log["loss"]) == res.steps == 17
    # the same weights and per-step log as a run that validated at every step
    dense = fit(cfg_of(epochs=20, milestones=[50, 70], val_min_every=1, val_every=1),
                tmp_path / "b", splits, evaluate=jump)
    assert dense.reached[50]["step"] == 15 and dense.steps == 17
    for m in (50, 70):
        a = load_checkpoint(tmp_path / "a" / f"scl_{m}.pt")[0].state_dict()
        b = load_checkpoint(tmp_path / "b" / f"scl_{m}.pt")[0].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(log["loss"].values,
                                  xr.open_dataset(tmp_path / "b" / "training.nc")["loss"].values)
    # killed in the middle of a replay (23 steps in: 20 + 3 replayed), resumed: same bytes
    cfg_c = cfg_of(epochs=20, milestones=[50, 70], val_min_every=10, val_every=10,
                   checkpoint_every=1)
    fit(cfg_c, tmp_path / "c", splits, evaluate=jump)
    assert fit(cfg_c, tmp_path / "d", splits, evaluate=jump, stop_after=23) is None
    fit(cfg_c, tmp_path / "d", splits, evaluate=jump)
    for name in ("scl_50.pt", "scl_70.pt", "training.nc"):
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "d" / name).read_bytes()
    assert T.should_rewind([50], 53.0, {"step": 0, "val_acc": 47.0, "optimizer": {}}, 5, 2.0)
    assert not T.should_rewind([50], 53.0, {"step": 4, "val_acc": 47.0, "optimizer": {}}, 5,
                               2.0)  # one step apart: nothing to resolve
    assert not T.should_rewind([50], 53.0, {"step": 0, "val_acc": 48.5, "optimizer": {}}, 5,
                               2.0)  # the check before is within tolerance: kept instead


def test_milestone_helpers():
    prev = {"val_acc": 48.5}
    assert T.keep_for(50, 53.0, prev, 2.0) is prev
    assert T.keep_for(50, 51.0, prev, 2.0) is None  # within tolerance: the crossing itself
    assert T.keep_for(50, 53.0, {"val_acc": 47.0}, 2.0) is None  # not closer
    far = {"val_acc": 46.0}
    assert T.keep_for(50, 55.0, far, 2.0) is far  # both off: the closer one
    assert T.keep_for(50, 53.0, None, 2.0) is None
    assert T.schedule_factor(0, 10, 100, "cosine") == 0.1
    assert T.schedule_factor(100, 10, 100, "cosine") == pytest.approx(0.0)
    assert T.schedule_factor(50, 0, 100, "constant") == 1.0


@pytest.mark.filterwarnings("ignore::core.train.MilestoneWarning")
def test_missing_milestones_listed_and_reached_ones_kept(tmp_path):
    data = write_data(tmp_path / "raven")
    cfg = cfg_of(epochs=2, milestones=[50, 70, 90])
    out, state = tmp_path / "out", tmp_path / "state"
    with pytest.raises(T.MilestonesNotReached, match=r"milestone\(s\) 50%, 70%, 90% .*"
                                                     r"checkpoints written for none"):
        T.train(cfg, 0, data, out, state, progress=False)
    assert (out / "training.nc").exists() and not list(out.glob("scl_*.pt"))
    res = fit(cfg, tmp_path / "b", evaluate=lambda m, s: 55.0)
    assert res.missing == [70, 90] and (tmp_path / "b" / "scl_50.pt").exists()
    assert list(xr.open_dataset(tmp_path / "b" / "training.nc")["milestone_step"].values) == \
        [1, -1, -1]


def test_a_run_that_never_left_chance_is_told_how_to_leave_it():
    cfg = cfg_of(epochs=2, milestones=[50, 70])
    stuck = T.not_reached_message(cfg, 750, [50, 70], [], 15.9)
    assert "milestone(s) 50%, 70%" in stuck and "written for none" in stuck
    assert "never left chance" in stuck and "train.warmup_steps" in stuck
    slow = T.not_reached_message(cfg, 750, [70], [50], 61.0)
    assert "written for 50%" in slow and "never left chance" not in slow


def stuck_first(st):
    """Validation at chance for the first attempt, 49 then 51% after a restart."""
    return lambda model, step: 14.0 if st.attempt == 0 else (49.0 if step < 3 else 51.0)


def test_a_network_stuck_at_chance_is_reinitialised(tmp_path):
    splits = fake_splits((40, 16, 16))  # 5 steps per epoch
    settings = dict(epochs=3, milestones=[50, 99], restart_after=6, max_restarts=2, val_every=3,
                    checkpoint_every=4)
    cfg = cfg_of(**settings)
    res = fit(cfg, tmp_path / "a", splits, evaluate_of=stuck_first)
    log = xr.open_dataset(tmp_path / "a" / "training.nc")
    assert log.attrs["restarts"] == 1 and log.attrs["init_seed"] == T.init_seed(0, 1) != 0
    assert 6 <= int(log["restart_steps"][0]) <= 6 + 3 and float(log["restart_best_val_acc"][0]) == 14
    # the kept attempt's steps only: a full schedule again, the milestone in its own steps
    assert res.steps == 15 and len(log["loss"]) == 15 and res.missing == [99]
    assert 3 <= res.reached[50]["step"] <= 6
    _, meta = load_checkpoint(tmp_path / "a" / "scl_50.pt")
    assert meta["init_seed"] == T.init_seed(0, 1) and meta["network"] == 0
    # killed in the second attempt and resumed: the bytes of an uninterrupted run
    b = tmp_path / "b"
    assert fit(cfg, b, splits, evaluate_of=stuck_first, stop_after=10) is None
    fit(cfg, b, splits, evaluate_of=stuck_first)
    for name in ("scl_50.pt", "training.nc"):
        assert (tmp_path / "a" / name).read_bytes() == (b / name).read_bytes(), name
    # a run that leaves chance, or has no restarts left, or restart_after 0: no restart
    cases = (({}, 30.0), ({"max_restarts": 0}, 14.0), ({"restart_after": 0}, 14.0))
    for i, (kw, acc) in enumerate(cases):
        c = tmp_path / f"c{i}"
        fit(cfg_of(**{**settings, **kw}), c, splits, evaluate=lambda m, s, acc=acc: acc)
        with xr.open_dataset(c / "training.nc") as log:
            assert log.attrs["restarts"] == 0 and log.attrs["init_seed"] == 0
            assert log.sizes.get("restart", 0) == 0


def test_restarts_stop_at_max_restarts_and_say_so(tmp_path):
    splits = fake_splits((40, 16, 16))
    cfg = cfg_of(epochs=2, milestones=[50], restart_after=4, max_restarts=2, val_every=2)
    res = fit(cfg, tmp_path, splits, evaluate=lambda m, s: 14.0)
    with xr.open_dataset(tmp_path / "training.nc") as log:
        assert log.attrs["restarts"] == 2 and list(log["restart_best_val_acc"].values) == [14, 14]
        assert log.attrs["init_seed"] == T.init_seed(0, 2)
    assert res.missing == [50] and res.steps == 10
    msg = T.not_reached_message(cfg, 10, [50], [], 14.0, restarts=2)
    assert "never left chance" in msg and "after 2 re-initialisation(s)" in msg
    assert "more train.max_restarts" in msg


def test_restart_reinitialises_weights_optimiser_and_schedule():
    cfg = cfg_of(restart_after=1, max_restarts=1, warmup_steps=3)
    run = T.setup_run(cfg, 1, fake_splits(), CPU)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    x, y = fake_split(8, 5).images.float(), torch.zeros(8, dtype=torch.long)
    T.train_step(run, x, y, 1)
    st = T.State(step=1, val_acc=[12.0])
    assert T.should_restart(cfg, st)
    T.restart(run, st)
    assert st.attempt == 1 and st.step == 0 and st.restarts == [[1, 12.0]] and not st.val_acc
    assert not T.should_restart(cfg, T.State(step=5, val_acc=[12.0], attempt=1))
    torch.manual_seed(T.init_seed(1, 1))
    fresh = build_model(cfg.model, SIZE).state_dict()
    now = run.model.state_dict()
    assert all(torch.equal(now[k], fresh[k]) for k in fresh)
    assert not all(torch.equal(now[k], before[k]) for k in before)
    assert not run.opt.state and run.sched.last_epoch == 0
    assert run.opt.param_groups[0]["lr"] == pytest.approx(cfg.train.lr / 3)  # warm-up again
    seeds = {T.init_seed(n, a) for n in range(20) for a in range(4)}
    assert len(seeds) == 80 and T.init_seed(7, 0) == 7
    # not at chance, a milestone reached, too early: no restart
    assert not T.should_restart(cfg, T.State(step=5, val_acc=[12.0, 40.0]))
    assert not T.should_restart(cfg, T.State(step=5, val_acc=[12.0], reached={50.0: {}}))
    assert not T.should_restart(cfg_of(restart_after=9, max_restarts=1),
                                T.State(step=5, val_acc=[12.0]))


def test_interrupted_run_resumes_to_identical_bytes(tmp_path):
    splits = fake_splits((40, 16, 16))
    cfg = cfg_of(epochs=3, milestones=[20, 99], checkpoint_every=4, val_every=3)

    def acc(model, step):  # crosses 20 between two checks, so the fallback path is exercised
        return 19.0 if step < 7 else 30.0

    a, b = tmp_path / "a", tmp_path / "b"
    fit(cfg, a, splits, evaluate=acc)
    assert fit(cfg, b, splits, evaluate=acc, stop_after=10) is None
    assert (b / "state" / "last.pt").exists() and not (b / "training.nc").exists()
    (b / "state" / ".tmp-last-k1ll3d.pt").write_bytes(b"a write cut short by SIGKILL")
    res = fit(cfg, b, splits, evaluate=acc)
    assert res.steps == 15
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) == ["scl_20.pt", "training.nc"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_resume_state_of_other_parameters_or_data_is_refused(tmp_path):
    splits = fake_splits((40, 16, 16))
    fit(cfg_of(milestones=[99]), tmp_path, splits, stop_after=4)
    with pytest.raises(T.ResumeError, match=r"last\.pt: resume state of another run "
                                            r"\(config\.train\.lr: 0\.005 in the saved state"):
        fit(cfg_of(milestones=[99], lr=1e-3), tmp_path, splits)
    other = T.Splits(splits.train, splits.val, splits.test, fingerprint="rebuilt")
    with pytest.raises(T.ResumeError, match=r"data fingerprint \(the data changed\): 'fake'"):
        fit(cfg_of(milestones=[99]), tmp_path, other)
    with pytest.raises(T.ResumeError, match=r"network: 0 in the saved state, 1 now"):
        fit(cfg_of(milestones=[99]), tmp_path, splits, network=1)
    # more networks in the profile do not change network 0's run
    res = fit(cfg_of(milestones=[99], networks=[0, 1, 2]), tmp_path, splits)
    assert res.steps == 10
    # resume state of the old single-network layout, or a broken file: one clear error
    (tmp_path / "state").mkdir()
    torch.save({"fingerprint": {}, "state": {}}, tmp_path / "state" / "last.pt")
    with pytest.raises(T.ResumeError, match=r"last\.pt: not resume state of core\.train"):
        fit(cfg_of(milestones=[99]), tmp_path, splits)
    (tmp_path / "state" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(T.ResumeError, match=r"last\.pt: not a readable resume state"):
        fit(cfg_of(milestones=[99]), tmp_path, splits)


def test_data_fingerprint_follows_content(tmp_path):
    data = write_data(tmp_path / "raven")
    fp = T.data_fingerprint(data / "main")
    assert fp == T.data_fingerprint(shutil.copytree(data, tmp_path / "copy") / "main")
    (data / "main" / "val" / ".tmp-x.npz").write_bytes(b"partial")
    assert T.data_fingerprint(data / "main") == fp
    ds = fake_split(16, 9)  # other answers, same counts
    write_npz(data / "main" / "val" / "center_single.npz",
              {"image": ds.images.numpy(), "target": ds.targets.numpy()})
    assert T.data_fingerprint(data / "main") != fp


@pytest.mark.filterwarnings("ignore::core.train.MilestoneWarning")
def test_training_dir_provenance_is_checked(tmp_path):
    cfg = cfg_of(epochs=2, milestones=[50, 70])
    fit(cfg, tmp_path / "a", evaluate=lambda m, s: 60.0)
    fit(cfg, tmp_path / "b", fake_splits((24, 16, 16)), evaluate=lambda m, s: 80.0)
    log = training_log.check(tmp_path / "a", cfg)
    assert log.attrs["network"] == 0 and log.attrs["data_fingerprint"] == "fake"
    assert len(log.attrs["config_hash"]) == 64 and log.attrs["precision"] == "fp32"
    assert log["checkpoint_sha256"].values[0] == file_sha256(tmp_path / "a" / "scl_50.pt")
    assert log["checkpoint_sha256"].values[1] == ""
    with pytest.raises(training_log.TrainingLogError, match=r"train hash differs"):
        training_log.check(tmp_path / "a", cfg_of(epochs=3, milestones=[50, 70]))
    (tmp_path / "a" / "scl_50.pt").write_bytes((tmp_path / "b" / "scl_50.pt").read_bytes())
    with pytest.raises(training_log.TrainingLogError,
                       match=r"a/training.nc: does not match .*scl_50.pt"):
        training_log.check(tmp_path / "a")
    (tmp_path / "a" / "scl_50.pt").unlink()
    with pytest.raises(training_log.TrainingLogError, match=r"scl_50.pt: checkpoint listed in"):
        training_log.check(tmp_path / "a")


def test_non_finite_loss_or_parameter_stops_with_step_and_quantity(tmp_path):
    cfg = cfg_of(milestones=[99])
    splits = fake_splits()
    run = T.setup_run(cfg, 0, splits, CPU)
    x, y = T.take(splits.train.images, torch.arange(8), CPU.device), splits.train.targets[:8]
    with torch.no_grad():
        next(run.model.parameters()).fill_(float("nan"))
    with pytest.raises(T.NonFiniteError, match=r"step 3: training loss is nan \(not finite\)"):
        T.train_step(run, x, y, 3)
    # a finite but absurd learning rate (outside its plausible range: allowed explicitly):
    # the run stops at the first non-finite quantity
    absurd = from_dict({**raw_cfg(milestones=[99], lr=1e15, grad_clip=0.0),
                        "outside_range": ["train.lr"]})
    with pytest.raises(T.NonFiniteError, match=r"^step [12]: (training loss is|parameter)"):
        fit(absurd, tmp_path, splits)
    assert not (tmp_path / "training.nc").exists()
    model = T.setup_run(cfg, 0, splits, CPU).model
    T.check_finite(model, 1)
    with torch.no_grad():
        dict(model.named_parameters())["relation.2.weight"][0, 0] = float("inf")
    with pytest.raises(T.NonFiniteError, match=r"step 7: parameter relation.2.weight is not"):
        T.check_finite(model, 7)


class Devices(TorchDispatchMode):
    """Records the device and dtype of every tensor an operator receives or returns."""

    def __init__(self):
        super().__init__()
        self.devices, self.conv_dtypes = set(), set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves((args, kwargs, out)):
            # uint8 panels and int64 indices start on the CPU (the data); 0-dim tensors are
            # optimiser step counters, which torch keeps on the CPU by design
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 0:
                self.devices.add(t.device.type)
        if "convolution" in func.__name__:
            self.conv_dtypes.add(args[0].dtype)
        return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_tensor_of_a_step_is_on_the_chosen_device(tmp_path, device, precision):
    proc = T.Process(torch.device(device), precision)
    cfg = cfg_of(milestones=[99])
    splits = fake_splits()
    run = T.setup_run(cfg, 0, splits, proc)
    idx = torch.arange(8)
    x = T.take(splits.train.images, idx, proc.device)
    y = splits.train.targets[idx].to(proc.device)
    with Devices() as seen:
        T.train_step(run, x, y, 1)
        T.split_accuracy(run.model, splits.val, torch.arange(16), 8, proc)
    assert seen.devices == {device}
    assert seen.conv_dtypes == {torch.bfloat16 if precision == "bf16" else torch.float32}
    st = T.State()
    T.validate(run, st, lambda m, s: 99.5, tmp_path)  # saves scl_99.pt
    ck = torch.load(tmp_path / "scl_99.pt", weights_only=True)
    assert {v.device.type for v in ck["state_dict"].values()} == {"cpu"}
    assert {v.dtype for v in ck["state_dict"].values() if v.is_floating_point()} == \
        {torch.float32}
    T.save_state(run, st, tmp_path)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    leaves = torch.utils._pytree.tree_leaves(saved)
    assert {t.device.type for t in leaves if isinstance(t, torch.Tensor)} == {"cpu"}


def run_cli(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "core.train", "--no-progress", *args],
                            cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::core.train.MilestoneWarning")
def test_sigkill_and_restart_gives_identical_outputs(tmp_path):
    data = write_data(tmp_path / "raven", n=(96, 16, 16))
    params = write_params(tmp_path / "params.yaml",
                          raw_cfg(epochs=4, milestones=[1, 99], checkpoint_every=5,
                                  val_every=6, val_min_every=3))

    target = tmp_path / "killed"
    args = ["--params", str(params), "--net", "1", "--data", str(data),
            "--out", str(target / "out"), "--state", str(target / "st")]
    # the uninterrupted reference, in this process (the code below the CLI)
    with pytest.raises(T.MilestonesNotReached, match=r"milestone\(s\) 99%"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", T.MilestoneWarning)
        T.train(load(params), 1, data, tmp_path / "ref" / "out", tmp_path / "ref" / "st",
                progress=False)
    proc = run_cli(args)
    deadline = time.time() + 120
    while not (target / "st" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (target / "out" / "training.nc").exists()
    # as `dvc repro` does before re-running a stage: the stage's outputs are deleted
    for p in (target / "out").glob("*"):
        p.unlink()
    again = run_cli(args)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 1 and "resuming from" in out, err
    assert not list((target / "out").glob(".tmp-*")) and not (target / "st").exists()
    for name in ("scl_1.pt", "training.nc"):
        assert (target / "out" / name).read_bytes() == \
            (tmp_path / "ref" / "out" / name).read_bytes(), name
    log = xr.open_dataset(target / "out" / "training.nc")
    assert log.attrs["network"] == 1 and log.attrs["data_fingerprint"] == \
        T.data_fingerprint(data / "main")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::core.train.MilestoneWarning")
def test_ddp_two_processes_through_the_entry_point(tmp_path):
    data = write_data(tmp_path / "raven", n=(64, 16, 16))
    params = write_params(tmp_path / "params.yaml",
                          raw_cfg(epochs=2, milestones=[1, 2], nproc=2, batch_size=8))
    out = tmp_path / "out"
    proc = run_cli(["--params", str(params), "--net", "0", "--data", str(data),
                    "--out", str(out), "--state", str(tmp_path / "state")])
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "2 process(es)" in stdout
    _, meta = load_checkpoint(out / "scl_2.pt", arch="scl")
    assert meta["image_size"] == SIZE
    log = training_log.check(out)
    assert log.attrs["processes"] == 2 and np.isfinite(log["milestone_test_acc"].values).all()
    assert sorted(p.name for p in out.iterdir()) == ["scl_1.pt", "scl_2.pt", "training.nc"]


def test_cli_errors(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", raw_cfg())
    data = write_data(tmp_path / "raven")
    base = ["--params", str(params), "--data", str(data), "--out", str(tmp_path / "o"),
            "--state", str(tmp_path / "s"), "--no-progress"]
    assert T.main([*base, "--net", "5"]) == 1
    assert "--net 5: not one of train.networks [0, 1]" in capsys.readouterr().err
    write_params(params, raw_cfg(val_min_every=50, val_every=10))
    assert T.main([*base, "--net", "0"]) == 1
    assert "train.val_min_every (50) must not exceed train.val_every (10)" in \
        capsys.readouterr().err


def test_data_errors(tmp_path):
    cfg = cfg_of()
    args = (tmp_path / "out", tmp_path / "state")
    with pytest.raises(T.DataError, match=r"nowhere: data folder not found"):
        T.train(cfg, 0, tmp_path / "nowhere", *args, progress=False)
    (tmp_path / "empty" / "main").mkdir(parents=True)
    with pytest.raises(T.DataError, match=r"empty/main: cannot read split 'train'"):
        T.train(cfg, 0, tmp_path / "empty", *args, progress=False)
    data = write_data(tmp_path / "raven")
    (data / "main" / "test" / "center_single.npz").unlink()
    with pytest.raises(T.DataError, match=r"main: cannot read split 'test'"):
        T.train(cfg, 0, data, *args, progress=False)
    bad = copy.deepcopy(raw_cfg())
    bad["data"]["image_size"] = 48
    with pytest.raises(T.DataError, match=r"panels are 16 px but data.image_size is 48"):
        T.train(from_dict(bad), 0, write_data(tmp_path / "r2"), *args, progress=False)


def test_batches_from_memory_mapped_or_numpy_panels_match_tensors(tmp_path):
    from core.data import ShardImages

    ds = fake_split(12, 4)
    arr = ds.images.numpy()
    np.save(tmp_path / "panels.npy", arr)
    mapped = np.load(tmp_path / "panels.npy", mmap_mode="r")
    idx = torch.tensor([5, 0, 11, 5])
    want = T.take(ds.images, idx, CPU.device)
    for images in (arr, ShardImages([mapped[:7], mapped[7:]])):
        assert torch.equal(T.take(images, idx, CPU.device), want)
