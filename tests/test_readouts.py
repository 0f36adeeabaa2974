"""core/readouts.py: a run's checkpoints and bit-packed mask read-outs, for committing with the
results of a reference run; loading one back gives the mask file's read-out exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import synthetic as syn  # tests/synthetic.py: the test-only input builders
import torch

from core import readouts
from core.formats.masks import load_mask


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = syn.config(**syn.SMALL)
    masks, train = syn.write_inputs(root, cfg)
    return masks, train, syn.write_params(root / "params.yaml", **syn.SMALL), cfg


def test_export_round_trip_and_bytes(run, tmp_path: Path) -> None:
    masks, train, params, cfg = run
    digests = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        paths = readouts.export(params, train, masks, out)
        digests.append({p.relative_to(out).as_posix(): p.read_bytes() for p in paths})
        assert not list(out.rglob(".tmp-*"))
    assert digests[0] == digests[1]
    net, ck = cfg.train.networks[0], cfg.checkpoints[-1]
    assert digests[0][f"net{net}/{ck}.ckpt.pt"] == (train / f"net{net}" / f"{ck}.pt").read_bytes()
    files = sorted((masks / f"net{net}" / ck).glob("*.pt"))
    packed = tmp_path / "out0" / f"net{net}" / f"{ck}.pt"
    for f in files:
        rec = load_mask(f)
        got = readouts.load_module(packed, f.stem)
        assert list(got) == list(rec["names"])
        for name in rec["names"]:
            assert torch.equal(got[name], rec["mask"][name])
    # one bit a weight, a fraction of the mask files' size
    assert packed.stat().st_size < sum(f.stat().st_size for f in files) / 4


def test_errors_name_the_file(run, tmp_path: Path) -> None:
    masks, train, params, cfg = run
    out = tmp_path / "out"
    readouts.export(params, train, masks, out)
    packed = out / f"net{cfg.train.networks[0]}" / f"{cfg.checkpoints[0]}.pt"
    with pytest.raises(readouts.ReadoutError, match=r"no mask 'nothing' \(there: "):
        readouts.load_module(packed, "nothing")
    with pytest.raises(readouts.ReadoutError, match="not found"):
        readouts.load_module(tmp_path / "none.pt", "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(readouts.ReadoutError, match="no mask files of networks"):
        readouts.export(params, train, empty, tmp_path / "o2")
    assert readouts.main(["show", str(packed)]) == 0
