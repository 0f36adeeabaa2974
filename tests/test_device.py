"""core.device: device and precision settings, determinism, CPU copies."""

from __future__ import annotations

import pytest
import torch

from core import device as dv


def test_device_names_are_checked() -> None:
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert dv.check_device_name(ok) == ok
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", ""):
        with pytest.raises(dv.DeviceError, match="device: expected auto, cpu, cuda or cuda:N"):
            dv.check_device_name(bad)


def test_auto_picks_cuda_only_when_available() -> None:
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert dv.resolve_device("auto").type == want
    assert dv.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a CPU-only build")
def test_explicit_cuda_without_cuda_is_one_clear_error() -> None:
    with pytest.raises(dv.DeviceError, match="sees no CUDA device"):
        dv.resolve_device("cuda:0", "device")


def test_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert dv.resolve_precision("fp32", cpu) == "fp32"
    assert dv.resolve_precision("bf16", cpu) == "bf16"
    assert dv.resolve_precision("auto", cpu) == ("bf16" if dv.cpu_has_native_bf16() else "fp32")
    with pytest.raises(dv.DeviceError, match="precision: expected one of fp32, bf16, auto"):
        dv.resolve_precision("fp16", cpu)


def test_autocast_changes_the_compute_dtype_only_for_bf16() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    cpu = torch.device("cpu")
    with dv.autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32
    with dv.autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16


def test_inference_restores_training_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model.train()
    with dv.inference(model, torch.device("cpu"), "fp32"):
        assert not model.training
        out = model(torch.randn(5, 3))
        assert not out.requires_grad
    assert model.training


def test_to_cpu_copies_nested_tensors() -> None:
    x = torch.ones(2, requires_grad=True)
    out = dv.to_cpu({"a": [x, (x, 3)], "b": "s"})
    assert out["b"] == "s" and out["a"][1][1] == 3
    assert out["a"][0].device.type == "cpu" and not out["a"][0].requires_grad
    # copy=True: no storage shared with the original (a snapshot that later steps cannot
    # change in place); the default shares CPU tensors
    y = torch.zeros(3)
    snap = dv.to_cpu({"s": [y]}, copy=True)
    assert dv.to_cpu(y).data_ptr() == y.data_ptr()
    y.add_(1)
    assert snap["s"][0].sum() == 0


def test_deterministic_switch_round_trips() -> None:
    before = torch.are_deterministic_algorithms_enabled()
    try:
        dv.use_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled()
        dv.use_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        dv.use_deterministic(before)
