"""core.data.RavenDataset: packed shards, public per-problem files, task filter, bad inputs."""

import numpy as np
import pytest
import torch

from core.data import RavenDataset, RavenFileError, to_float
from core.raven.store import write_npz


def fake(n, size=16, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (n, 16, size, size), dtype=np.uint8)
    target = rng.integers(0, 8, n).astype(np.int64)
    shapes = np.zeros((n, 5), bool)
    shapes[np.arange(n), np.arange(n) % 5] = True  # one shape per problem
    shapes[0, :] = True                             # problem 0 has every shape
    return image, target, shapes


def test_shards_concatenate_in_name_order(tmp_path):
    a, ta, sa = fake(5, seed=1)
    b, tb, sb = fake(3, seed=2)
    write_npz(tmp_path / "train" / "b_cfg.npz", {"image": b, "target": tb, "shapes": sb})
    write_npz(tmp_path / "train" / "a_cfg.npz", {"image": a, "target": ta, "shapes": sa})
    ds = RavenDataset(tmp_path, "train")
    assert len(ds) == 8 and ds.images.dtype == torch.uint8 and ds.targets.dtype == torch.int64
    assert torch.equal(ds.images[:5], torch.from_numpy(a))
    assert list(ds.configs) == ["a_cfg"] * 5 + ["b_cfg"] * 3
    x, y = ds[6]
    assert x.dtype == torch.float32 and x.shape == (16, 16, 16) and y == int(tb[1])
    assert torch.allclose(x, 1 - torch.from_numpy(b[1]).float() / 255)
    assert torch.equal(to_float(ds.images[[6]])[0], x)


def test_to_float_white_is_zero():
    x = to_float(torch.tensor([255, 0], dtype=torch.uint8))
    assert x.tolist() == [0.0, 1.0]
    with pytest.raises(TypeError):
        to_float(torch.zeros(2))


def test_task_filter(tmp_path):
    image, target, shapes = fake(10)
    write_npz(tmp_path / "val" / "c.npz", {"image": image, "target": target, "shapes": shapes})
    circle = RavenDataset(tmp_path, "val", task="circle")  # circle is index 4: problems 4, 9
    assert torch.equal(circle.targets, torch.from_numpy(target[[4, 9]]))
    not_circle = RavenDataset(tmp_path, "val", task="not_circle")
    assert len(not_circle) == 7  # problem 0 holds a circle too
    with pytest.raises(ValueError, match="unknown task"):
        RavenDataset(tmp_path, "val", task="star")


def test_public_layout(tmp_path):
    image, target, _ = fake(4)
    for i in range(4):
        split = "train" if i < 3 else "test"
        write_npz(tmp_path / "center_single" / f"RAVEN_{i}_{split}.npz",
                  {"image": image[i], "target": target[i]})
    (tmp_path / "center_single" / "RAVEN_2_train.xml").write_text("<Data/>")
    ds = RavenDataset(tmp_path, "train")
    assert len(ds) == 3 and torch.equal(ds.images, torch.from_numpy(image[:3]))
    with pytest.raises(RavenFileError, match="shape metadata"):
        RavenDataset(tmp_path, "train", task="circle")  # files 0, 1 have no xml


def test_public_xml_shapes(tmp_path):
    image, target, _ = fake(2)
    for i in range(2):
        write_npz(tmp_path / "cfg" / f"RAVEN_{i}_val.npz", {"image": image[i], "target": target[i]})
        t = 5 if i == 0 else 1  # circle, triangle
        (tmp_path / "cfg" / f"RAVEN_{i}_val.xml").write_text(
            f'<Data><Panels><Panel><Entity Type="{t}" Size="1"/></Panel></Panels></Data>')
    assert len(RavenDataset(tmp_path, "val", task="circle")) == 1
    assert len(RavenDataset(tmp_path, "val", task="not_triangle")) == 1


@pytest.mark.parametrize("case", ["missing_root", "missing_split", "empty", "corrupt",
                                  "no_target", "bad_dtype", "bad_target", "mixed_size"])
def test_bad_inputs_name_the_path(tmp_path, case):
    image, target, shapes = fake(2)
    root = tmp_path / "root"
    shard = root / "train" / "x.npz"
    if case == "missing_root":
        root = tmp_path / "nothing"
    elif case == "missing_split":
        write_npz(root / "val" / "x.npz", {"image": image, "target": target})
    elif case == "empty":
        (root / "train").mkdir(parents=True)
    elif case == "corrupt":
        write_npz(shard, {"image": image, "target": target})
        shard.write_bytes(shard.read_bytes()[:100])
    elif case == "no_target":
        write_npz(shard, {"image": image})
    elif case == "bad_dtype":
        write_npz(shard, {"image": image.astype(np.float32), "target": target})
    elif case == "bad_target":
        write_npz(shard, {"image": image, "target": target + 8})
    elif case == "mixed_size":
        write_npz(shard, {"image": image, "target": target})
        write_npz(root / "train" / "y.npz", {"image": image[..., :8, :8], "target": target})
    with pytest.raises(RavenFileError) as err:
        RavenDataset(root, "train")
    assert str(root) in str(err.value)


def test_bad_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        RavenDataset(tmp_path, "training")


def test_bad_shapes_array_names_the_file(tmp_path):
    image, target, shapes = fake(4)
    f = tmp_path / "train" / "a_cfg.npz"
    write_npz(f, {"image": image, "target": target, "shapes": shapes[:, :3]})
    with pytest.raises(RavenFileError, match=rf"{f}: 'shapes' must be \[N, 5\] = \[4, 5\].*"
                                             r"got \[4, 3\]"):
        RavenDataset(tmp_path, "train")
    write_npz(f, {"image": image, "target": target, "shapes": shapes[:3]})
    with pytest.raises(RavenFileError, match=rf"{f}: 'shapes'.*got \[3, 5\]"):
        RavenDataset(tmp_path, "train")


@pytest.mark.parametrize("mmap", [False, True])
def test_panel_size_mismatch_between_splits_names_the_file(tmp_path, mmap):
    stored = ("image",) if mmap else ()
    image, target, shapes = fake(4, size=16)
    write_npz(tmp_path / "train" / "a.npz", {"image": image, "target": target, "shapes": shapes},
              stored=stored)
    small_image, _, _ = fake(4, size=8)
    bad = tmp_path / "val" / "a.npz"
    write_npz(bad, {"image": small_image, "target": target, "shapes": shapes}, stored=stored)
    for split in ("train", "val"):
        with pytest.raises(RavenFileError, match=r"panels of size \[(8, 8|16, 16)\], but split"):
            RavenDataset(tmp_path, split)
    with pytest.raises(RavenFileError, match=str(bad)):
        RavenDataset(tmp_path, "train")


@pytest.mark.parametrize("stored", [(), ("image",)])
def test_streamed_parts_write_the_same_bytes(tmp_path, stored):
    image, target, _ = fake(7)
    whole = write_npz(tmp_path / "a.npz", {"image": image, "target": target}, stored=stored)
    parts = write_npz(tmp_path / "b.npz", {"image": [image[:3], image[3:4], image[4:]],
                                           "target": [target[:5], target[5:]]}, stored=stored)
    assert whole.read_bytes() == parts.read_bytes()
