"""core.formats.masks: the one home of the mask file (record, atomic save, validated load)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from core.formats import masks as mf

NAMES, SHAPES = ["a.weight", "a.bias"], [(3, 2), (3,)]


def result(seed: int = 0) -> SimpleNamespace:
    """What ``core.masking.train_mask`` returns, for two small parameters."""
    g = torch.Generator().manual_seed(seed)
    logits = {n: torch.randn(s, generator=g) for n, s in zip(NAMES, SHAPES)}
    # a channels-last-like view and a non-contiguous tensor: the record copies them
    logits["a.weight"] = logits["a.weight"].t().contiguous().t()
    return SimpleNamespace(
        names=NAMES, shapes=SHAPES, fingerprint=mf.fingerprint(NAMES, SHAPES), logits=logits,
        mask={n: t > 0 for n, t in logits.items()},
        curve={"step": [0, 5, 10], "loss": [2.0, 1.5, 1.4], "ce": [2.0, 1.5, 1.4],
               "task_acc": [30.0, 40.0, 40.5],
               "density": [100.0, 60.0, 59.5]},
        snapshots={"param": "a.weight", "steps": [0, 10],
                   "logits": torch.stack([logits["a.weight"]] * 2)},
        convergence={"density_change": 0.5, "acc_change": 0.5, "window_start": 5.0,
                     "window_end": 10.0},
        converged=True)


ACC = {k: 50.0 for k in mf.ACCURACY_KEYS}


def record(**kw) -> dict:
    args = {"checkpoint": "scl_90", "task": "circle", "alpha": 3e-5, "seed": 1, "steps": 10,
            "arch": "scl", "image_size": 16, "network": 2, "family": "original",
            "settings": {"masks": {"steps": 10}, "alpha": 3e-5, "data": {"circle": "ab"}}}
    return mf.mask_record(result(), ACC, **{**args, **kw})


class Tiny(nn.Module):
    def __init__(self, n: int = 3):
        super().__init__()
        self.a = nn.Linear(2, n)


def test_record_round_trip_and_same_bytes(tmp_path):
    rec = record()
    p1 = mf.save_mask(tmp_path / "x" / "one.pt", rec)
    p2 = mf.save_mask(tmp_path / "two.pt", record())
    assert p1.read_bytes() == p2.read_bytes()  # bytes do not depend on the file name
    assert not list(tmp_path.rglob(".tmp-*"))
    back = mf.load_mask(p1, Tiny(), expect={"network": 2, "checkpoint": "scl_90",
                                            "task": "circle", "alpha": 3e-5, "seed": 1})
    assert set(back) == set(mf.FILE_KEYS)
    assert back["format"] == mf.FORMAT and back["converged"] is True
    assert back["settings"] == {"masks": {"steps": 10}, "alpha": 3e-5, "data": {"circle": "ab"}}
    assert back["curve"]["ce"] == [2.0, 1.5, 1.4]  # extra curve keys are kept
    for n in NAMES:
        assert back["logits"][n].is_contiguous() and back["logits"][n].device.type == "cpu"
        assert torch.equal(back["mask"][n], back["logits"][n] > 0)
    flat = mf.mask_flat(back)
    assert flat.dtype == np.bool_ and flat.shape == (9,)
    ds = mf.curve_dataset(back)
    assert list(ds.mask_step.values) == [0, 5, 10] and ds.density.attrs["units"] == "percent"


def test_names_and_paths():
    assert mf.mask_name("circle", 3e-5, 0) == "circle-a3e-5-s0"
    assert mf.mask_name("rule_not_circle", 2.2e-6, 12) == "rule_not_circle-a2p2e-6-s12"
    assert mf.mask_path("data/masks/net1", "scl_90", "circle", 1e-4, 2).as_posix() == \
        "data/masks/net1/scl_90/circle-a1e-4-s2.pt"


def test_record_refuses_incomplete_or_unplain_inputs():
    with pytest.raises(mf.MaskError, match="accuracy: lacks not_task_full"):
        mf.mask_record(result(), {k: 1.0 for k in mf.ACCURACY_KEYS[:-1]}, checkpoint="c",
                       task="t", alpha=1.0, seed=0, steps=1, arch="scl", image_size=16)
    with pytest.raises(mf.MaskError, match="settings: not plain JSON data"):
        record(settings={"x": object()})
    with pytest.raises(mf.MaskError, match="settings: not plain JSON data"):
        record(settings={"x": math.nan})


def _corrupt(rec: dict, how: str) -> dict:
    rec = dict(rec)
    if how == "missing":
        del rec["convergence"]
    elif how == "shape":
        rec["mask"] = {**rec["mask"], "a.bias": torch.zeros(4, dtype=torch.bool)}
    elif how == "dtype":
        rec["logits"] = {**rec["logits"], "a.bias": torch.zeros(3, dtype=torch.float64)}
    elif how == "fingerprint":
        rec["shapes"] = [[2, 3], [3]]
    elif how == "curve":
        rec["curve"] = {**rec["curve"], "density": [1.0]}
    elif how == "accuracy":
        rec["accuracy"] = {"task": 1.0}
    elif how == "type":
        rec["seed"] = "1"
    elif how == "snapshot":
        rec["snapshots"] = {**rec["snapshots"], "logits": torch.zeros(3, 3, 2)}
    return rec


@pytest.mark.parametrize("how,match", [
    ("missing", "mask file lacks keys convergence"),
    ("shape", r"mask\['a.bias'\] is not a torch.bool tensor of shape \(3,\)"),
    ("dtype", r"logits\['a.bias'\] is not a torch.float32 tensor"),
    ("fingerprint", "model_fingerprint does not match its names and shapes"),
    ("curve", "curve lists are empty or of different lengths"),
    ("accuracy", "accuracy must hold task, not_task"),
    ("type", "seed is '1', expected int"),
    ("snapshot", r"snapshots.logits must be a tensor of shape \[2, 3, 2\]"),
])
def test_load_names_the_file_and_the_problem(tmp_path, how, match):
    path = mf.save_mask(tmp_path / "bad.pt", _corrupt(record(), how))
    with pytest.raises(mf.MaskError, match=rf"bad\.pt: {match}"):
        mf.load_mask(path)


def test_load_refuses_other_runs_models_and_files(tmp_path):
    path = mf.save_mask(tmp_path / "m.pt", record())
    with pytest.raises(mf.MaskError, match=r"m\.pt: seed is 1, expected 2"):
        mf.load_mask(path, expect={"seed": 2})
    with pytest.raises(mf.MaskError, match=r"m\.pt: alpha is 3e-05, expected 0.0001"):
        mf.load_mask(path, expect={"alpha": 1e-4})
    with pytest.raises(mf.MaskError, match=r"m\.pt: mask is for another model"):
        mf.load_mask(path, Tiny(4))
    with pytest.raises(mf.MaskError, match=r"m\.pt: mask is for another model"):
        mf.load_mask(path, SimpleNamespace(fingerprint="0" * 64))  # a MaskedModel stand-in
    with pytest.raises(mf.MaskError, match=r"gone\.pt: mask file not found"):
        mf.load_mask(tmp_path / "gone.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(mf.MaskError, match=r"cut\.pt: not a readable mask file"):
        mf.load_mask(cut)
    old = mf.save_mask(tmp_path / "old.pt", {**record(), "format": "modules-avr-mask/1"})
    with pytest.raises(mf.MaskError, match=r"old\.pt: not a mask file \(format "
                                           r"'modules-avr-mask/1', expected"):
        mf.load_mask(old)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(mf.MaskError, match=r"list\.pt: not a mask file \(format 'list'"):
        mf.load_mask(tmp_path / "list.pt")
