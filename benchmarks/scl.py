"""SCL speed: our 16-panel model vs the original study's 72-image forward, same weights,
same batch, at 80 and 160 px; plus data loading vs model consumption.

    python -m benchmarks.scl [--quick] [--profile]

Rows (``benchmarks.common.row``): training-step and inference throughput in problems/s, ours
and the naive baseline (``benchmarks/naive_scl.py``) timed in the same run; and how many
problems/s batched indexing + ``to_float`` delivers compared with what a training step eats.
``--profile`` prints the top operators of one training step (torch.profiler).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import types

import torch
from torch import nn

from benchmarks.common import row, timeit
from benchmarks.naive_scl import NaiveSCL
from core.config import load
from core.data import to_float
from core.models import build_model
from core.train import Process, split_accuracy


def _model(size: int) -> nn.Module:
    cfg = load("params.yaml", "default")
    torch.manual_seed(0)
    return build_model(dataclasses.replace(cfg.model, arch="scl"), size)


def _train_step(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
                opt: torch.optim.Optimizer):
    def step() -> None:
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _infer(net: nn.Module, x: torch.Tensor):
    @torch.no_grad()
    def fwd() -> None:
        net(x)
    return fwd


def paired(fns: dict, model: nn.Module, repeat: int) -> dict[str, dict]:
    """Time each function ``repeat`` times, interleaved (ours, baseline, ours, ...) so that a
    load change on a shared machine hits both alike; train/eval mode set per function."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeat + 1):  # the first round is warm-up
        for name, fn in fns.items():
            model.train(name.startswith("train"))
            t = timeit(fn, repeat=1, warmup=0)["min"]
            if r:
                times[name].append(t)
    return {k: {"min": min(v), "median": statistics.median(v), "times": v}
            for k, v in times.items()}


def run(quick: bool = False) -> list[dict]:
    torch.set_num_threads(load("params.yaml", "default").train.threads)
    batch = 8 if quick else 32
    repeat = 2 if quick else 3
    rows = []
    for size in (80, 160):
        model = _model(size)
        naive = NaiveSCL(model)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch, 16, size, size), dtype=torch.uint8, generator=g)
        x, y = to_float(images), torch.randint(0, 8, (batch,), generator=g)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        fns = {"train_ours": _train_step(model, x, y, opt),
               "train_naive": _train_step(naive, x, y, opt),
               "infer_ours": _infer(model, x), "infer_naive": _infer(naive, x)}
        res = paired(fns, model, repeat)
        for kind in ("train", "infer"):
            ours = batch / res[f"{kind}_ours"]["median"]
            base = batch / res[f"{kind}_naive"]["median"]
            what = "training step" if kind == "train" else "inference"
            rows.append(row(f"SCL {what}, {size} px, batch {batch}", ours, base, "problems/s",
                            goal=">= 4x" if kind == "train" else "",
                            notes="16 panels encoded once vs 72-image original; same weights",
                            raw={k: v for k, v in res.items() if k.startswith(kind)}))
        if size == 80:  # the memory format build_model picks vs PyTorch's default
            contiguous = _model(size).to(memory_format=torch.contiguous_format)
            opt_c = torch.optim.AdamW(contiguous.parameters(), lr=1e-4)
            fmt = paired({"train_channels_last": _train_step(model, x, y, opt),
                          "train_contiguous": _train_step(contiguous, x, y, opt_c)},
                         model, repeat)
            rows.append(row(f"SCL training step, {size} px, channels-last vs contiguous",
                            batch / fmt["train_channels_last"]["median"],
                            batch / fmt["train_contiguous"]["median"], "problems/s",
                            notes="conv weights channels-last (core.models.build_model)",
                            raw=fmt))
            n = 2000 if not quick else 256
            pool = torch.randint(0, 256, (n, 16, size, size), dtype=torch.uint8, generator=g)

            def load_batch(pool=pool, n=n, g=g) -> None:
                to_float(pool[torch.randint(0, n, (batch,), generator=g)])

            t_load = timeit(load_batch, repeat=20)
            rows.append(row(f"data loading vs training consumption, {size} px", batch /
                            t_load["median"], batch / res["train_ours"]["median"],
                            "problems/s", goal=">= 10x",
                            notes="in-memory uint8 indexing + to_float vs one training step",
                            raw={"load": t_load}))
    rows.append(eval_batch_row(quick))
    return rows


def eval_batch_row(quick: bool) -> dict:
    """Validation inference (``core.train.split_accuracy``: eval mode, batched) at the configured
    ``train.eval_batch_size`` vs a 16x larger batch (256 at the default 16, the value before
    this was measured), default image size, same problems. On 1 thread of this machine small
    batches win: the activations of 16 panels x batch stay in cache."""
    cfg = load("params.yaml", "default")
    size, bs = cfg.data.image_size, cfg.train.eval_batch_size
    n = 16 * bs if quick else 64 * bs
    g = torch.Generator().manual_seed(0)
    split = types.SimpleNamespace(
        images=torch.randint(0, 256, (n, 16, size, size), dtype=torch.uint8, generator=g),
        targets=torch.randint(0, 8, (n,), generator=g))
    model, proc, idx = _model(size), Process(torch.device("cpu"), "fp32"), torch.arange(n)
    res = paired({"infer_configured": lambda: split_accuracy(model, split, idx, bs, proc),
                  "infer_large": lambda: split_accuracy(model, split, idx, 16 * bs, proc)},
                 model, 1 if quick else 3)
    return row(f"SCL validation inference, {size} px: batch {bs} vs {16 * bs}",
               n / res["infer_configured"]["median"], n / res["infer_large"]["median"],
               "problems/s", notes=f"train.eval_batch_size vs 16x (core.train.split_accuracy), "
               f"{torch.get_num_threads()} thread(s)", raw=res)


def profile(size: int = 80, batch: int = 32) -> str:
    """The top operators (self CPU time) of a few training steps, as a table."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    model = _model(size)
    x = torch.rand(batch, 16, size, size)
    y = torch.randint(0, 8, (batch,))
    step = _train_step(model, x, y, torch.optim.AdamW(model.parameters(), lr=1e-4))
    step()
    with prof(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(3):
            step()
    return p.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scl", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the top ops of a train step")
    args = ap.parse_args()
    if args.profile:
        print(profile())
        return
    for r in run(args.quick):
        print(f"{r['what']}: ours {r['ours']:.1f} vs baseline {r['baseline']:.1f} {r['unit']} "
              f"-> {r['ratio']:.2f}x (goal {r['goal'] or '-'})")


if __name__ == "__main__":
    main()
