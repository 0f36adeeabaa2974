"""core/plots.py: the headline metric (flat, from summary.json) and the curve images that
`dvc plots show` embeds (readable offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from core import config as C
from core import plots

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "results" / "ci" / "metrics" / "summary.json"  # every family masked


def test_headline_is_flat_and_reads_summary() -> None:
    summary = json.loads(SUMMARY.read_text())
    h = plots.headline(summary)
    assert all(isinstance(v, (int, float, str)) or v is None for v in h.values())
    assert 10 <= len(h) <= 20
    cks = summary["checkpoints"]
    last = list(cks)[-1]
    m = last.rsplit("_", 1)[-1]
    fam = cks[last]["families"]
    assert h["profile"] == summary["profile"]
    assert h["milestones"] == sum(e["val_acc"]["n"] == len(summary["networks"])
                                  for e in cks.values())
    def r(iv):  # the headline's rounding; None where no mask converged (the ci profile)
        return None if iv.get("mean") is None else round(iv["mean"], 1)

    assert h[f"val@{m}"] == r(cks[last]["val_acc"])
    assert h[f"sparsity@{m}"] == r(fam["original"]["sparsity"])
    assert h[f"shape.sparsity@{m}"] == r(fam["shape_rule"]["sparsity"])
    assert h[f"cross@{m}"] == r(fam["original"]["iomin"]["cross_task"])
    assert h[f"ctrl.same@{m}"] == r(fam["control"]["iomin"]["same_task"])
    assert fam["control"]["iomin"]["verdict"].startswith(h["ctrl.sharing"] + " (")
    # a family without masks at a checkpoint has no key there (no column of nulls)
    first = list(cks)[0]
    if not cks[first]["families"]["shape_rule"]["runs"]:
        assert f"shape.sparsity@{first.rsplit('_', 1)[-1]}" not in h
    assert "control" not in h  # no composite control given
    passed = {"verdict": {"passes": True}}
    assert plots.headline(summary, passed)["control"] == "pass"
    assert plots.headline(summary, {"verdict": {"passes": False}})["control"] == "fail"


def _training(tmp: Path, net: int) -> None:
    ds = xr.Dataset({"loss": ("step", np.array([2.0, 1.5, 1.25])),
                     "val_acc": ("val_step", np.array([20.0, 55.5]))},
                    coords={"step": [1, 2, 3], "val_step": [2, 3]})
    (tmp / f"net{net}").mkdir(parents=True)
    ds.to_netcdf(tmp / f"net{net}" / "training.nc", engine="netcdf4")


def test_images_are_byte_stable_pngs_and_headline_written(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    C.write_params("ci", out=params)
    nets = C.load(params).train.networks
    for n in nets:
        _training(tmp_path / "train", n)
    (tmp_path / "masks").mkdir()
    digests = []
    for i in range(2):
        out = tmp_path / f"plots{i}"
        paths = plots.write(params, tmp_path / "train", tmp_path / "masks", out, SUMMARY,
                            out / "headline.json")
        names = sorted(p.name for p in paths)
        assert names == ["headline.json", "mask_accuracy.png", "mask_density.png",
                         "training.png", "validation.png"]
        for p in paths:
            if p.suffix == ".png":
                data = p.read_bytes()
                assert data[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in data
        digests.append({p.name: p.read_bytes() for p in paths})
    assert digests[0] == digests[1]
    assert json.loads(digests[0]["headline.json"]) == plots.headline(
        json.loads(SUMMARY.read_text()))


def test_bad_summary_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = tmp_path / "params.yaml"
    C.write_params("ci", out=params)
    for n in C.load(params).train.networks:
        _training(tmp_path / "train", n)
    bad = tmp_path / "summary.json"
    bad.write_text('{"checkpoints": {}}')
    args = ["--params", str(params), "--train", str(tmp_path / "train"), "--masks",
            str(tmp_path), "--out", str(tmp_path / "p"), "--headline", str(tmp_path / "h.json")]
    assert plots.main([*args, "--summary", str(bad)]) == 2
    assert f"{bad}: not a summary.json of core.metrics" in capsys.readouterr().err
    assert plots.main([*args, "--summary", str(tmp_path / "none.json")]) == 2
    assert "none.json: file not found (expected the summary written by `python -m core.metrics`)" in (
        capsys.readouterr().err)
    assert not (tmp_path / "h.json").exists()
