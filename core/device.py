"""Device and numeric precision, shared by training, masking, evaluation and benchmarks.

Parameters name a device (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and a precision (``fp32``,
``bf16``, ``auto``); code never assumes the CPU. ``resolve_device`` and ``resolve_precision`` turn
the settings into concrete values once per process, ``autocast`` gives the matching context for
forward passes, and ``to_cpu`` makes anything that is saved loadable on a CPU-only machine.

``precision: auto`` picks bf16 autocast where the hardware computes bf16 natively (CUDA devices
with bf16 support; CPUs whose oneDNN build reports native bf16, i.e. AVX512-BF16 or AMX) and fp32
elsewhere. On a CPU without native bf16, autocast emulates it and is slower than fp32: the
benchmarks (``make bench``) show the measured ratio on the machine at hand.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda")  # plus cuda:N
PRECISIONS = ("fp32", "bf16", "auto")


class DeviceError(ValueError):
    """A device or precision setting that this machine cannot honour."""


def check_device_name(name: str, where: str = "device") -> str:
    """Validate the *spelling* of a device setting (no hardware check): one clear error."""
    if name in DEVICES:
        return name
    if name.startswith("cuda:") and name[5:].isdigit():
        return name
    raise DeviceError(f"{where}: expected auto, cpu, cuda or cuda:N, got {name!r}")


def resolve_device(name: str = "auto", where: str = "device") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an explicit CUDA device must exist."""
    check_device_name(name, where)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"{where}: {name!r} asked for, but this torch build sees no CUDA "
                              "device (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"{where}: {name!r} asked for, but only "
                              f"{torch.cuda.device_count()} CUDA device(s) are visible")
    return dev


def cpu_has_native_bf16() -> bool:
    """True when oneDNN on this CPU computes bf16 natively (AVX512-BF16 or AMX)."""
    native = False
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        with contextlib.suppress(Exception):  # private probes: absent in some torch builds
            native = native or bool(getattr(torch._C._cpu, check)())
    return native


def resolve_precision(name: str, device: torch.device, where: str = "precision") -> str:
    """``fp32`` or ``bf16`` for ``device``. ``auto``: bf16 on CPUs with native bf16 (the
    measured on an AVX512-BF16 Xeon: training 1.5x), fp32 elsewhere, CUDA included:
    on an H100 bf16 autocast made SCL's training step 0.84-0.87x and the masked step 0.93-1.04x
    as fast (small convolutions, launch-bound: the casts cost more than they save;
    ``benchmarks/device/h100-160px.json``). ``bf16`` forces it anywhere."""
    if name not in PRECISIONS:
        raise DeviceError(f"{where}: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    if name != "auto":
        return name
    if device.type == "cuda":
        return "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward-pass context for ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise DeviceError(f"precision: expected fp32 or bf16 after resolution, got {precision!r}")


def set_deterministic(device: torch.device) -> None:
    """Deterministic kernels where torch has them (CUDA: cuBLAS workspace, cuDNN flags).

    On CUDA, bit-identity across *different* GPUs or driver versions is not promised by torch;
    on one machine, the same seed gives the same results.
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    use_deterministic(True)


def use_deterministic(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode)`` without its import of torch._inductor.

    The public function imports ``torch._inductor.config`` only to set its ``deterministic``
    flag: 7-9 s per process on the 2-core machine (measured), paid by every stage although
    nothing here compiles with inductor. When inductor is already loaded the public function
    is used, so its flag stays in step.
    """
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode)
    else:
        torch._C._set_deterministic_algorithms(mode)


def to_cpu(obj: Any, copy: bool = False) -> Any:
    """A copy of ``obj`` (tensors in nested dicts/lists/tuples) with every tensor on the CPU;
    with ``copy``, tensors already on the CPU are copied too (nothing shares their storage)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=copy)
    if isinstance(obj, Mapping):
        return {k: to_cpu(v, copy) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v, copy) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v, copy) for v in obj)
    return obj


@contextlib.contextmanager
def inference(model: torch.nn.Module, device: torch.device, precision: str) -> Iterator[None]:
    """Eval mode, no autograd and the precision's autocast; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast(device, precision):
            yield
    finally:
        model.train(was_training)


# glibc mallopt parameters (malloc.h): see keep_freed_memory
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_FREED: bool | None = None


def keep_freed_memory() -> bool:
    """Let this process keep the memory it frees for its next allocations (glibc only; True
    when set). By default glibc hands freed blocks of several MB back to the kernel (``mmap``
    blocks, and the heap top beyond ``M_TRIM_THRESHOLD``), so every step of a model with such
    activations faults its pages in again and the kernel zeroes them: MEASURED (SCL 64 px,
    batch 8, 1 thread) ~7,000 minor page faults per masked step, none with this. Blocks up to
    32 MB come from the heap and the heap is never trimmed below 1 GB of free top: the process
    keeps its peak memory (a few hundred MB for a mask run). Numbers are unchanged (allocation
    only); process-wide, set once, by ``core.masking.MaskedModel`` and by each training process
    (``core.train.setup_process``: ~1.2x the steps per second, measured with two trainings side
    by side)."""
    global _KEEP_FREED
    if _KEEP_FREED is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # not glibc (macOS, Windows)
            _KEEP_FREED = False
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _KEEP_FREED = bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
                mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _KEEP_FREED
