"""How close the SCL training step and the masked step come to the machine's limit.

    python -m benchmarks.flops [--quick]

FLOPs of one step (forward + backward; the optimiser's element-wise work is not counted) come
from ``torch.utils.flop_counter.FlopCounterMode``; the peak is a large ``torch.mm`` measured in
the same run, dtype and thread count. Rows (``benchmarks.common.row``), for fp32 and bf16
(``torch.autocast``): achieved GFLOP/s of the step vs that peak (ratio = share of the peak);
and bf16 vs fp32 problems/s of each step (ratio > 1: bf16 faster). On a CPU without native
bf16 (no AVX512-BF16/AMX) bf16 is emulated and slower; ``precision: auto`` then picks fp32.
Steps are timed interleaved (fp32, bf16, fp32, ...) so a load change on a shared machine hits
both alike; the median of the repeats is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import row, timeit
from core.config import load
from core.data import to_float
from core.device import autocast, cpu_has_native_bf16
from core.masking import MaskedModel
from core.models import build_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CPU = torch.device("cpu")


def peak_gflops(precision: str, n: int, repeat: int) -> float:
    """GFLOP/s of an ``n`` x ``n`` matrix product in ``precision`` (best of ``repeat``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(DTYPES[precision])
    b = torch.randn(n, n, generator=g).to(DTYPES[precision])
    t = timeit(lambda: torch.mm(a, b), repeat=repeat)["min"]
    return 2 * n**3 / t / 1e9


def _model(size: int) -> nn.Module:
    cfg = load("params.yaml", "default")
    torch.manual_seed(0)
    return build_model(dataclasses.replace(cfg.model, arch="scl"), size)


def _batch(size: int, batch: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = to_float(torch.randint(0, 256, (batch, 16, size, size), dtype=torch.uint8, generator=g))
    return x.to(dev), torch.randint(0, 8, (batch,), generator=g).to(dev)


def train_step(size: int, batch: int, precision: str,
               dev: torch.device = CPU) -> Callable[[], None]:
    """One SCL training step (AdamW) at ``size`` px in ``precision`` on ``dev``."""
    model = _model(size).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = _batch(size, batch, dev)

    def step() -> None:
        with autocast(dev, precision):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def masked_step(size: int, batch: int, precision: str,
                dev: torch.device = CPU) -> Callable[[], None]:
    """One mask-training step (``core.masking.MaskedModel``: sampled mask, masked forward,
    cross-entropy + alpha * sum of logits, Adam on the logits) in ``precision`` on ``dev``."""
    masked = MaskedModel(_model(size), init=3.0, precision=precision, device=dev)
    opt = torch.optim.Adam([masked.flat], lr=5e-2)
    g = torch.Generator().manual_seed(1)
    x, y = _batch(size, batch, dev)

    def step() -> None:
        loss = F.cross_entropy(masked(x, masked.sample(g, 1.0)), y) + 3e-5 * masked.flat.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def interleaved(fns: dict[str, Callable[[], None]], repeat: int) -> dict[str, list[float]]:
    """Seconds per call of each function, timed in turns after one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeat + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append(time.perf_counter() - t0)
    return times


def run(quick: bool = False) -> list[dict]:
    threads = load("params.yaml", "default").train.threads
    torch.set_num_threads(threads)
    size = load("params.yaml", "default").data.image_size
    batch, repeat, n = (8, 2, 1024) if quick else (32, 5, 2048)
    native = "native bf16" if cpu_has_native_bf16() else "no native bf16 (emulated)"
    rows = []
    for kind, make in (("training step", train_step), ("masked step", masked_step)):
        flops = count_flops(make(size, batch, "fp32"))
        fns = {p: make(size, batch, p) for p in DTYPES}
        times = interleaved(fns, repeat)
        med = {p: statistics.median(t) for p, t in times.items()}
        for p in DTYPES:
            peak = peak_gflops(p, n, 3)
            rows.append(row(f"SCL {kind} {p}, {size} px, batch {batch}: achieved vs peak",
                            flops / med[p] / 1e9, peak, "GFLOP/s",
                            notes=f"{flops / 1e9:.2f} GFLOP/step (FlopCounterMode, fwd+bwd); "
                                  f"peak: torch.mm {n}x{n} {p}, {threads} threads; {native}",
                            raw={"times": times[p], "flops": flops, "peak_gflops": peak}))
        rows.append(row(f"SCL {kind}, {size} px, batch {batch}: bf16 autocast vs fp32",
                        batch / med["bf16"], batch / med["fp32"], "problems/s",
                        notes=f"{native}; interleaved medians of {repeat}, shared CPU",
                        raw=times))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.flops",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in run(args.quick):
        print(f"{r['what']}: {r['ours']:.3g} vs {r['baseline']:.3g} {r['unit']} "
              f"-> {r['ratio']:.3f}x  ({r['notes']})")


if __name__ == "__main__":
    main()
