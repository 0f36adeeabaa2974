"""core.models: shapes, sub-network names, 16-panel == 72-image logits, checkpoint errors."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from core.config import SUBNETS, load
from core.models import (
    CheckpointError,
    build_model,
    checkpoint_dict,
    load_checkpoint,
    subnet_of,
)

CFG = load("params.yaml", "default")


def _naive():
    """benchmarks/ is not an installed package: load the baseline from its file."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "naive_scl.py"
    spec = importlib.util.spec_from_file_location("naive_scl", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.naive_forward


naive_forward = _naive()


def model_cfg(arch="scl"):
    return dataclasses.replace(CFG.model, arch=arch)


@pytest.mark.parametrize("arch", ["scl", "cnn_mlp"])
@pytest.mark.parametrize("size", [80, 160])
def test_forward_shape_and_subnets(arch, size):
    torch.manual_seed(0)
    model = build_model(model_cfg(arch), size)
    out = model(torch.rand(2, 16, size, size))
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    heads = {subnet_of(n) for n, _ in model.named_parameters()}
    assert heads <= set(SUBNETS) and "vision" in heads and "logit" in heads
    if arch == "scl":
        assert heads == set(SUBNETS)


def test_wrong_input_shape():
    model = build_model(model_cfg(), 32)
    with pytest.raises(ValueError, match=r"\[B, 16, H, W\]"):
        model(torch.rand(2, 9, 32, 32))


def test_subnet_of_rejects_unknown_prefix():
    assert subnet_of("relation.0.weight") == "relation"
    with pytest.raises(ValueError, match="not a sub-network"):
        subnet_of("encoder.0.weight")


@pytest.mark.parametrize("size", [80, 160])
def test_16_panel_forward_equals_72_image_forward(size):
    torch.manual_seed(1)
    model = build_model(model_cfg(), size)
    # a few training steps so BatchNorm running statistics are not the identity
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        loss = model(torch.rand(3, 16, size, size)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = torch.rand(4, 16, size, size)
    with torch.no_grad():
        ours, naive = model(x), naive_forward(model, x)
    torch.testing.assert_close(ours, naive, rtol=1e-5, atol=1e-5)
    # and the candidates matter: swapping two candidates swaps their logits
    x2 = x.clone()
    x2[:, [8, 9]] = x[:, [9, 8]]
    with torch.no_grad():
        swapped = model(x2)
    torch.testing.assert_close(swapped[:, [1, 0]], ours[:, [0, 1]], rtol=1e-5, atol=1e-5)


def test_bad_model_hyperparameters():
    with pytest.raises(ValueError, match="model.conv_out"):
        build_model(dataclasses.replace(CFG.model, attr_heads=7), 80)


def save_ckpt(path, arch="scl", size=32):
    torch.manual_seed(0)
    model = build_model(model_cfg(arch), size)
    torch.save(checkpoint_dict(model, model_cfg(arch), size, 50.0, 10, 1, 51.5), path)
    return model


def test_checkpoint_roundtrip_weights_only(tmp_path):
    path = tmp_path / "scl_50.pt"
    model = save_ckpt(path)
    raw = torch.load(path, weights_only=True)
    assert {"arch", "model", "image_size", "state_dict", "milestone", "step", "epoch",
            "val_acc"} <= set(raw)
    loaded, meta = load_checkpoint(path, arch="scl")
    assert meta["step"] == 10 and meta["val_acc"] == 51.5 and meta["image_size"] == 32
    assert not loaded.training
    x = torch.rand(2, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "scl_70.pt"
    save_ckpt(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"scl_70\.pt: not a readable checkpoint"):
        load_checkpoint(path)


def test_wrong_architecture_checkpoint(tmp_path):
    path = tmp_path / "cnn_mlp_50.pt"
    save_ckpt(path, arch="cnn_mlp")
    with pytest.raises(CheckpointError, match=r"cnn_mlp_50\.pt: architecture 'cnn_mlp', "
                                              r"expected 'scl'"):
        load_checkpoint(path, arch="scl")
    raw = torch.load(path, weights_only=True)
    raw["arch"] = raw["model"]["arch"] = "scl"  # claims SCL, holds CNN-MLP weights
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(path)


def test_not_a_checkpoint_and_missing(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"x\.pt: not a model checkpoint .*arch"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_from_a_state_dict_with_extra_facts(tmp_path):
    torch.manual_seed(0)
    model = build_model(model_cfg(), 32)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the model moves on; the snapshot is kept
    ck = checkpoint_dict(snapshot, model_cfg(), 32, 50.0, 7, 0, 49.2,
                         extra={"network": 3, "train_hash": "abc"})
    torch.save(ck, tmp_path / "scl_50.pt")
    loaded, meta = load_checkpoint(tmp_path / "scl_50.pt", arch="scl")
    assert (meta["network"], meta["train_hash"], meta["val_acc"]) == (3, "abc", 49.2)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    assert all(v.is_contiguous() for v in ck["state_dict"].values())  # no memory format in files
