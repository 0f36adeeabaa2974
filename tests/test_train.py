"""core.train: learning, milestone logic, outputs, resume byte-identity, DDP smoke, errors."""

import copy
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from core import train as T
from core.config import _read_yaml, from_dict, resolve
from core.models import load_checkpoint
from core.raven.store import write_npz

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32


def raw_cfg(**train):
    raw = resolve(_read_yaml(ROOT / "params.yaml"), "ci")
    raw["data"]["image_size"] = SIZE
    raw["train"].update({"batch_size": 8, "epochs": 2, "milestones": [50, 70, 90],
                         "val_every": 2, "checkpoint_every": 3, "threads": 1, "nproc": 1,
                         "val_n": 0, "warmup_steps": 0, **train})
    return raw


def cfg_of(**train):
    return from_dict(raw_cfg(**train))


def fake_split(n, seed):
    g = torch.Generator().manual_seed(seed)
    return types.SimpleNamespace(
        images=torch.randint(0, 256, (n, 16, SIZE, SIZE), dtype=torch.uint8, generator=g),
        targets=torch.randint(0, 8, (n,), generator=g))


def write_data(root, n=(48, 16, 16)):
    """Tiny packed shards (random panels) in the layout of core.raven."""
    for split, k, seed in zip(("train", "val", "test"), n, (1, 2, 3)):
        ds = fake_split(k, seed)
        write_npz(root / "main" / split / "center_single.npz",
                  {"image": ds.images.numpy(), "target": ds.targets.numpy()})
    return root


def write_params(path, raw):
    body = {k: v for k, v in raw.items() if k != "profile"}
    path.write_text(yaml.safe_dump({"profile": "default", "profiles": {"default": body}}))
    return path


def test_loss_decreases_on_a_tiny_set(tmp_path):
    cfg = cfg_of(epochs=25, milestones=[99], lr=3e-3)
    data = fake_split(16, 0)
    res = T.train(cfg, tmp_path, tmp_path, datasets=(data, data, data), progress=False,
                  strict=False, evaluate=lambda m, s: 0.0)
    log = xr.open_dataset(tmp_path / "training.nc")
    loss = log["loss"].values
    assert res.steps == 50 and len(loss) == 50
    assert loss[-5:].mean() < 0.7 * loss[:5].mean()
    assert log["acc"].attrs["units"] == "percent" and "long_name" in log["loss"].attrs


def test_milestones_from_a_stub_metric_sequence(tmp_path):
    # per epoch: 2 steps (16 problems / batch 8); near-milestone checks every 2 steps
    seq = iter([40.0, 66.0, 71.0, 86.0, 92.0, 99.0])
    calls = []

    def stub(model, step):
        calls.append(step)
        return next(seq)

    data = fake_split(16, 0)
    cfg = cfg_of(epochs=10, milestones=[50, 70, 90], val_every=1, near_margin=5.0)
    res = T.train(cfg, tmp_path, tmp_path, datasets=(data, data, data), evaluate=stub,
                  progress=False)
    # epoch ends at steps 2, 4; at 4 (66%, within 5 of 70) it checks every step: 5, 6 ...
    assert calls == [2, 4, 5, 6, 7]
    assert {m: r["step"] for m, r in res.reached.items()} == {50: 4, 70: 5, 90: 7}
    assert res.missing == [] and res.steps == 7  # stopped after the last milestone
    for m, step, acc in ((50, 4, 66.0), (70, 5, 71.0), (90, 7, 92.0)):
        _, meta = load_checkpoint(tmp_path / f"scl_{m}.pt", arch="scl")
        assert (meta["milestone"], meta["step"], meta["val_acc"]) == (m, step, acc)
    log = xr.open_dataset(tmp_path / "training.nc")
    assert list(log["val_step"].values) == calls
    assert list(log["milestone_step"].values) == [4, 5, 7]
    assert not (tmp_path / "last.pt").exists()


def test_missing_milestones_listed_and_reached_ones_kept(tmp_path):
    data = fake_split(16, 0)
    cfg = cfg_of(epochs=2, milestones=[50, 70, 90])
    with pytest.raises(T.MilestonesNotReached, match=r"milestone\(s\) 70%, 90% .*"
                                                     r"checkpoints written for 50%"):
        T.train(cfg, tmp_path, tmp_path, datasets=(data, data, data),
                evaluate=lambda m, s: 55.0, progress=False)
    assert (tmp_path / "scl_50.pt").exists() and not (tmp_path / "scl_70.pt").exists()
    (tmp_path / "scl_90.pt").write_bytes(b"stale")  # from some earlier run
    with pytest.raises(T.MilestonesNotReached):
        T.train(cfg, tmp_path, tmp_path, datasets=(data, data, data),
                evaluate=lambda m, s: 20.0, progress=False)
    assert not list(tmp_path.glob("scl_*.pt"))  # a fresh run never leaves stale checkpoints
    T.train(cfg, tmp_path, tmp_path, datasets=(data, data, data), strict=False,
            evaluate=lambda m, s: 55.0, progress=False)
    assert list(xr.open_dataset(tmp_path / "training.nc")["milestone_step"].values) == \
        [2, -1, -1]


def test_interrupted_run_resumes_to_identical_bytes(tmp_path):
    data = (fake_split(40, 0), fake_split(16, 1), fake_split(16, 2))
    cfg = cfg_of(epochs=3, milestones=[1, 99], checkpoint_every=4)
    a, b = tmp_path / "a", tmp_path / "b"
    T.train(cfg, a, a, datasets=data, progress=False, strict=False)
    T.train(cfg, b, b, datasets=data, progress=False, strict=False, stop_after=10)
    assert (b / "last.pt").exists() and not (b / "training.nc").exists()
    res = T.train(cfg, b, b, datasets=data, progress=False, strict=False)
    assert res.steps == 15
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) == ["scl_1.pt", "training.nc"]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_resume_state_of_other_parameters_is_refused(tmp_path):
    data = (fake_split(40, 0), fake_split(16, 1), fake_split(16, 2))
    T.train(cfg_of(milestones=[99]), tmp_path, tmp_path, datasets=data, progress=False,
            strict=False, stop_after=4)
    with pytest.raises(T.ConfigError, match=r"last\.pt: resume state of a run with other"):
        T.train(cfg_of(milestones=[99], lr=1e-3), tmp_path, tmp_path, datasets=data,
                progress=False, strict=False)


def run_cli(args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "core.train", "--no-progress", *args],
                            cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_and_restart_gives_identical_checkpoints(tmp_path):
    data = write_data(tmp_path / "raven", n=(96, 16, 16))
    params = write_params(tmp_path / "params.yaml",
                          raw_cfg(epochs=5, milestones=[1, 99], checkpoint_every=5,
                                  batch_size=8))
    args = ["--params", str(params), "--data", str(data)]
    ref = run_cli([*args, "--out", str(tmp_path / "ref")])
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 1 and "milestone(s) 99%" in err, err

    target = tmp_path / "killed"
    proc = run_cli([*args, "--out", str(target)])
    deadline = time.time() + 120
    while not (target / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (target / "training.nc").exists()
    again = run_cli([*args, "--out", str(target)])
    out, err = again.communicate(timeout=300)
    assert again.returncode == 1 and "resuming from" in out
    assert not list(target.glob(".tmp-*"))
    for name in ("scl_1.pt", "training.nc"):
        assert (target / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


@pytest.mark.slow
def test_ddp_two_processes_smoke(tmp_path):
    data = write_data(tmp_path / "raven", n=(64, 16, 16))
    params = write_params(tmp_path / "params.yaml",
                          raw_cfg(epochs=2, milestones=[1, 2], nproc=2, batch_size=8))
    out = tmp_path / "out"
    proc = run_cli(["--params", str(params), "--data", str(data), "--out", str(out)])
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    model, meta = load_checkpoint(out / "scl_2.pt", arch="scl")
    assert meta["image_size"] == SIZE
    log = xr.open_dataset(out / "training.nc")
    assert log.sizes["step"] >= 1 and np.isfinite(log["milestone_test_acc"].values).all()
    assert sorted(p.name for p in out.iterdir()) == ["scl_1.pt", "scl_2.pt", "training.nc"]


def test_data_errors(tmp_path):
    cfg = cfg_of()
    with pytest.raises(T.DataError, match=r"nowhere: data folder not found"):
        T.train(cfg, tmp_path / "nowhere", tmp_path / "out", progress=False)
    (tmp_path / "empty" / "main").mkdir(parents=True)
    with pytest.raises(T.DataError, match=r"empty/main: cannot read split 'train'"):
        T.train(cfg, tmp_path / "empty", tmp_path / "out", progress=False)
    data = write_data(tmp_path / "raven")
    (data / "main" / "test" / "center_single.npz").unlink()
    with pytest.raises(T.DataError, match=r"main: cannot read split 'test'"):
        T.train(cfg, data, tmp_path / "out", progress=False)
    bad = copy.deepcopy(raw_cfg())
    bad["data"]["image_size"] = 48
    with pytest.raises(T.DataError, match=r"panels are 32 px but data.image_size is 48"):
        T.train(from_dict(bad), write_data(tmp_path / "r2"), tmp_path / "out",
                progress=False)


@pytest.mark.slow
def test_notebook_runs_on_tiny_data(tmp_path):
    from core import notebook

    data = write_data(tmp_path / "raven", n=(32, 16, 16))
    params = write_params(tmp_path / "params.yaml", raw_cfg(epochs=1, milestones=[1, 2]))
    out = tmp_path / "train"
    notebook.run(ROOT / "analysis" / "train_scl.ipynb", tmp_path / "train.html",
                 {"params": str(params), "profile": "default", "data_dir": str(data),
                  "out_dir": str(out)}, cwd=ROOT)
    assert (out / "scl_2.pt").exists() and (out / "training.nc").exists()
    assert "milestone_test_acc" in (tmp_path / "train.html").read_text()


def test_milestone_helpers():
    assert T.milestones_crossed(75.0, [50, 70, 90], {}) == [50, 70]  # a jump saves both
    assert T.milestones_crossed(75.0, [50, 70, 90], {50: {}}) == [70]
    assert not T.is_near(None, [50, 70], {}, 5.0)  # no validation yet: counts as 0%
    assert T.is_near(None, [50, 70], {}, 60.0)
    assert T.is_near(45.0, [50, 70], {}, 5.0) and not T.is_near(44.9, [50, 70], {}, 5.0)
    assert not T.is_near(66.0, [50, 70], {50: {}, 70: {}}, 5.0)
    assert T.lr_factor(0, 10, 100, "cosine") == 0.1
    assert T.lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0)
    assert T.lr_factor(50, 0, 100, "constant") == 1.0
