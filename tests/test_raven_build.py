"""python -m core.raven build: the layout of docs/architecture.md from a profile's DataConfig,
generated or packed from a (fake) public RAVEN folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from core.config import load
from core.data import RavenDataset
from core.raven.__main__ import generate, main
from core.raven.attributes import Subset
from core.raven.build import build, spread, subset_exists
from core.raven.store import MARKER, RavenFileError
from core.tasks import FAMILIES, SET_SPECS, SHAPES

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["center_single", "in_center_single_out_center_single"]


def small(**data):
    """The ci profile, smaller: batches small enough for its few problems."""
    cfg = load(ROOT / "params.yaml", "ci")
    d = dataclasses.replace(cfg.data, **{"configs": CONFIGS, "n_per_config": 20, "task_n": 10,
                                         "workers": 1, "image_size": 32, **data})
    return dataclasses.replace(cfg, data=d,
                               train=dataclasses.replace(cfg.train, batch_size=8),
                               masks=dataclasses.replace(cfg.masks, batch_size=4, n_samples=1))


def write_params(path: Path, cfg) -> Path:
    """A flat parameters file holding ``cfg``."""
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return path


def test_build_layout_and_tasks(tmp_path):
    out = build(small(), tmp_path / "raven", progress=False)
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        ds = RavenDataset(out / "main", split)
        assert len(ds) == 2 * n and ds.image_size == 32
        assert sorted(set(ds.configs)) == CONFIGS
    for s in SHAPES:
        task = RavenDataset(out / "tasks" / s, "train")
        assert len(task) == 6  # task_n 10 -> 5 per configuration -> 3 train each
        assert len(RavenDataset(out / "tasks" / s, "train", task=s)) == len(task)
        other = RavenDataset(out / "tasks" / f"not_{s}", "test")
        assert not other.shapes[:, SHAPES.index(s)].any()
    # colour subsets: light problems carry less ink than dark ones
    light, dark = (RavenDataset(out / "tasks" / c, "train") for c in ("light", "dark"))
    # in_center_single_out_center_single: the outer frame is never dark
    assert len(light) == 6 and len(dark) == 6 and set(dark.configs) == {"center_single"}
    assert light.images.float().mean() > dark.images.float().mean()
    # every set of every family is there, each split readable, answers as the family says
    for fam in FAMILIES.values():
        for name in fam.sets:
            for split in ("train", "val", "test"):
                assert len(RavenDataset(out / "tasks" / name, split)) >= 2
    for split in ("train", "test"):
        z = np.load(out / "tasks" / "rule_circle" / split / "center_single.npz")
        answer = z["attrs"][np.arange(len(z["target"])), 8 + z["target"]]
        assert (answer[..., 0][answer[..., 0] >= 0] == SHAPES.index("circle")).all()
    # main problems differ from task problems (own seeds per subset)
    a = RavenDataset(out / "main", "train").images[0]
    assert not (a == RavenDataset(out / "tasks" / "circle", "train").images[0]).all()


def test_build_cli_force_and_determinism(tmp_path, capsys):
    # the ci profile with fewer, smaller problems (the test builds it three times)
    params = write_params(tmp_path / "params.yaml", small(
        configs=["center_single", "distribute_four"], task_n=20, families=["original", "control"]))
    args = ["build", "--params", str(params), "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "a"), "--force"]) == 0
    cfg = load(params)
    b = build(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=2)),
              tmp_path / "b", progress=False)
    files = sorted(p.relative_to(b) for p in b.rglob("*.npz"))
    sets = [*(s for f in cfg.data.families for s in FAMILIES[f].sets), "light", "dark"]
    assert {p.parts[1] for p in files if p.parts[0] == "tasks"} == set(sets)
    shards = sum(subset_exists(c, Subset(**SET_SPECS.get(s, {"color": s})))
                 for c in cfg.data.configs for s in sets)
    assert len(files) == 3 * (len(cfg.data.configs) + shards)
    for f in [*files, MARKER]:  # the marker too: it does not record the worker count
        assert (tmp_path / "a" / f).read_bytes() == (b / f).read_bytes()


def test_spread():
    assert spread(10, 3) == [4, 3, 3] and sum(spread(500, 7)) == 500


def test_build_from_public_folder(tmp_path):
    pub = tmp_path / "public"
    generate(pub, configs=CONFIGS, n=10, size=64, layout="public", progress=False)
    # one file without our metadata but with a RAVEN xml (Type 5 = circle)
    f = pub / "center_single" / "RAVEN_0_train.npz"
    z = dict(np.load(f))
    np.savez(f, image=z["image"], target=z["target"])
    f.with_suffix(".xml").write_text('<Data><Panels><Panel><Struct><Component><Layout>'
                                     '<Entity Type="5"/></Layout></Component></Struct></Panel>'
                                     '</Panels></Data>')
    out = build(small(public_dir=str(pub), families=["original"]), tmp_path / "raven",
                progress=False)
    ds = RavenDataset(out / "main", "train")
    src = RavenDataset(pub, "train")
    assert len(ds) == len(src) == 12 and ds.image_size == 32
    block = src.images[0].float().reshape(16, 32, 2, 32, 2).mean((2, 4)).round().to(ds.images.dtype)
    assert (ds.images[0] == block).all()
    circle = RavenDataset(out / "tasks" / "circle", "train")
    assert len(circle) >= 1 and bool(circle.shapes[:, SHAPES.index("circle")].all())
    n_not = sum(len(RavenDataset(out / "tasks" / f"not_{s}", "train")) for s in SHAPES)
    assert n_not == int((~ds.shapes).sum())
    assert len(RavenDataset(out / "tasks" / "all", "train")) == len(ds)


def test_build_public_errors(tmp_path):
    with pytest.raises(RavenFileError, match="data.families: shape_rule, control can only be"):
        build(small(public_dir=str(tmp_path)), tmp_path / "o0", progress=False)
    with pytest.raises(RavenFileError, match="public_dir"):
        build(small(public_dir=str(tmp_path / "none"), families=["original"]), tmp_path / "o1", progress=False)
    pub = tmp_path / "public"
    generate(pub, configs=CONFIGS, n=10, size=48, layout="public", progress=False)
    with pytest.raises(RavenFileError, match="block-averaged"):
        build(small(public_dir=str(pub), families=["original"]), tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()
    f = pub / "center_single" / "RAVEN_1_train.npz"
    z = dict(np.load(f))
    np.savez(f, image=z["image"], target=z["target"])
    with pytest.raises(RavenFileError, match="no shape metadata"):
        build(small(public_dir=str(pub), image_size=48, families=["original"]), tmp_path / "o3", progress=False)
    assert not (tmp_path / "o3").exists() and not list(tmp_path.glob(".tmp-*"))


def test_memory_mapped_shards_same_problems(tmp_path):
    """data.mmap: panels stored uncompressed and memory-mapped; the problems are identical."""
    from core.data import ShardImages

    cfg = small(families=["control"])
    a = build(cfg, tmp_path / "a", progress=False)
    b = build(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mmap=True)),
              tmp_path / "b", progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.npz"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.npz"))
    for f in files:
        za, zb = np.load(a / f), np.load(b / f)
        assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)
    plain, mapped = RavenDataset(a / "main", "train"), RavenDataset(b / "main", "train")
    assert isinstance(mapped.images, ShardImages) and isinstance(plain.images, torch.Tensor)
    assert mapped.images.shape == plain.images.shape and len(mapped) == len(plain) == 24
    idx = torch.tensor([23, 0, 13, 5, 13])
    assert torch.equal(mapped.images[idx], plain.images[idx])
    assert torch.equal(mapped.images[3], plain.images[3])
    assert torch.equal(mapped.images[torch.tensor(4)], plain.images[torch.tensor(4)])
    assert torch.equal(mapped.images[1, 8:], plain.images[1, 8:])
    keep = torch.arange(24) % 3 == 0
    assert torch.equal(mapped.images[keep], plain.images[keep])
    assert torch.equal(mapped.images[-1], plain.images[-1])
    assert torch.equal(mapped.images[2:9], plain.images[2:9])
    assert np.array_equal(mapped.images[np.array([1, 2])], plain.images[[1, 2]].numpy())
    assert np.array_equal(mapped.images.numpy(), plain.images.numpy())
    x, y = mapped[7]
    assert torch.equal(x, plain[7][0]) and y == plain[7][1]
    # a task filter keeps the panels on disk too
    t_plain = RavenDataset(a / "main", "test", task="not_triangle")
    t_mapped = RavenDataset(b / "main", "test", task="not_triangle")
    assert isinstance(t_mapped.images, ShardImages)
    assert torch.equal(t_mapped.images[torch.arange(len(t_mapped))], t_plain.images)
    with pytest.raises(IndexError):
        mapped.images[torch.tensor([24])]


# ---- early size checks, --force only on our folders, killed builds, bad shards ----


def test_sets_too_small_fail_in_the_data_stage(tmp_path):
    from core.raven.build import DataSizeError, check_sizes

    # 7 problems over 2 configurations: 4 + 3 -> no val split in either
    with pytest.raises(DataSizeError, match=r"data.task_n: 7 problems over 2 configuration\(s\) "
                                            r"leave set 'triangle' with 0 val"):
        build(small(task_n=7), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()
    cfg = small(task_n=10)  # 6 train problems per set
    cfg = dataclasses.replace(cfg, masks=dataclasses.replace(cfg.masks, batch_size=8))
    with pytest.raises(DataSizeError, match=r"6 train \(< masks.batch_size 8\).*at least 14"):
        check_sizes(cfg)
    cfg = small(n_per_config=10)  # 2 x 6 train problems < train.batch_size 16
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=16))
    with pytest.raises(DataSizeError, match=r"data.n_per_config: 10 problems per configuration"
                                            r".*12 train \(< train.batch_size 16\)"):
        check_sizes(cfg)
    check_sizes(small())
    assert main(["build", "--params", str(write_params(tmp_path / "p.yaml", small(task_n=7))),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2


def test_force_replaces_only_our_folders(tmp_path, monkeypatch, capsys):
    from core.raven.store import OutDirError, check_out_dir

    cfg = small(families=["control"])
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(OutDirError, match=f"no {MARKER} marker"):
        build(cfg, other, force=True, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"
    out = build(cfg, tmp_path / "raven", progress=False)
    about = json.loads((out / MARKER).read_text())  # what the folder was made from
    assert about["command"] == "build" and about["data"]["families"] == ["control"]
    assert build(cfg, out, force=True, progress=False) == out  # ours: replaced
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / ".git").mkdir()
    with pytest.raises(OutDirError, match="repository root"):
        check_out_dir(tmp_path / "repo", True)
    monkeypatch.chdir(out)
    for bad in (".", "..", str(tmp_path)):
        assert main(["generate", "--out", bad, "--configs", "center_single", "--n", "10",
                     "--force", "--quiet"]) == 2
        assert "working directory" in capsys.readouterr().err
    assert not list(tmp_path.glob(".old-*")) and not list(tmp_path.glob(".tmp-*"))
    # an older build without the marker (only problem files in our folders) still counts
    monkeypatch.chdir(tmp_path)
    (out / MARKER).unlink()
    assert check_out_dir(tmp_path / "raven", True)


def test_killed_build_is_cleaned_by_the_next(tmp_path):
    """kill -9 during the data stage leaves .tmp-raven-*; the next run removes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    big = small(n_per_config=3000, families=["control"])
    params = write_params(tmp_path / "big.yaml", big)
    out = tmp_path / "data" / "raven"
    proc = subprocess.Popen([sys.executable, "-m", "core.raven", "build", "--params",
                             str(params), "--out", str(out), "--quiet"], cwd=ROOT)
    deadline = time.time() + 60
    while not list(out.parent.glob(".tmp-raven-*/.pid")) and time.time() < deadline:
        assert proc.poll() is None, "the build ended before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(out.parent.glob(".tmp-raven-*")) and not out.exists()
    assert main(["build", "--params", str(write_params(tmp_path / "p.yaml", small(
        families=["control"]))), "--out", str(out), "--quiet"]) == 0
    assert not list(out.parent.glob(".tmp-*")) and (out / "main").is_dir()
