"""python -m core.raven build: the layout of docs/architecture.md from a profile's DataConfig,
generated or packed from a (fake) public RAVEN folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import SHAPES, load
from core.data import RavenDataset
from core.raven.__main__ import generate, main
from core.raven.attributes import Subset
from core.raven.build import build, spread, subset_exists
from core.raven.store import RavenFileError
from core.tasks import FAMILIES, SET_SPECS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["center_single", "in_center_single_out_center_single"]


def small(**data):
    cfg = load(ROOT / "params.yaml", "ci")
    d = dataclasses.replace(cfg.data, **{"configs": CONFIGS, "n_per_config": 20, "task_n": 10,
                                         "workers": 1, "image_size": 32, **data})
    return dataclasses.replace(cfg, data=d)


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
    # main problems differ from task problems (own seeds per subset)
    a = RavenDataset(out / "main", "train").images[0]
    assert not (a == RavenDataset(out / "tasks" / "circle", "train").images[0]).all()


def test_build_cli_force_and_determinism(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    # the ci profile with fewer, smaller problems (the test builds it three times)
    params.write_text((ROOT / "params.yaml").read_text().replace(
        "task_n: 40", "task_n: 20\n      image_size: 32\n      families: [original, control]"))
    args = ["build", "--params", str(params), "--profile", "ci", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "a"), "--force"]) == 0
    cfg = load(params, "ci")
    b = build(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, workers=2)),
              tmp_path / "b", progress=False)
    files = sorted(p.relative_to(b) for p in b.rglob("*.npz"))
    sets = [*(s for f in cfg.data.families for s in FAMILIES[f].sets), "light", "dark"]
    assert {p.parts[1] for p in files if p.parts[0] == "tasks"} == set(sets)
    shards = sum(subset_exists(c, Subset(**SET_SPECS.get(s, {"color": s})))
                 for c in cfg.data.configs for s in sets)
    assert len(files) == 3 * (len(cfg.data.configs) + shards)
    for f in files:
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
