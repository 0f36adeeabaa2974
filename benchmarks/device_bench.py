"""Throughput of the paper profile's steps on an accelerator (or any device), fp32 vs bf16.

    python -m benchmarks.device_bench [--device auto|cuda|cpu] [--size 160] [--out FILE.json]
    python -m benchmarks.device_bench readme [--readme docs/gpu.md]   # its measured section

What the paper profile's cost depends on, measured (not assumed) on the device at hand, with
the SCL of ``params.yaml`` at ``--size`` px: problems/s of the training step (AdamW) at batch
16 (the paper profile's) and 32; of inference (eval mode, no grad) at batch 512 (the paper's
``train.eval_batch_size``); problem passes/s of the mask-training step
(``core.masking.MaskedModel``) at batch 8 (the paper's chunk: 32 problems in 4 chunks, one
mask sample each), 32 and 128 (what batching several runs' work would reach); and a large
matrix product's TFLOP/s as the device's peak. Each in fp32 and under bf16 autocast, timed
interleaved after warm-up with the device synchronised (median of the repeats). Prints a
table and writes JSON. Measured files live in ``benchmarks/device/``; docs/gpu.md's section on
the paper profile's cost is written from them (:func:`readme_text`, :func:`estimate`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.flops import DTYPES, _batch, _model, masked_step, train_step
from core.config import load
from core.device import autocast, resolve_device


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fns: dict[str, Callable[[], None]], dev: torch.device, repeat: int,
          inner: int) -> dict[str, float]:
    """Median seconds per call of each function (``inner`` calls per timing, interleaved)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeat + 1):
        for name, fn in fns.items():
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(dev)
            if r:  # round 0: warm-up (cuDNN autotuning, allocator)
                times[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def infer_step(size: int, batch: int, precision: str, dev: torch.device) -> Callable[[], None]:
    model = _model(size).to(dev).eval()
    x, _ = _batch(size, batch, dev)

    @torch.no_grad()
    def step() -> None:
        with autocast(dev, precision):
            model(x)
    return step


def peak_tflops(precision: str, dev: torch.device, n: int) -> float:
    a = torch.randn(n, n, device=dev, dtype=DTYPES[precision])
    b = torch.randn(n, n, device=dev, dtype=DTYPES[precision])
    t = timed({"mm": lambda: torch.mm(a, b)}, dev, 3, 5)["mm"]
    return 2 * n**3 / t / 1e12


def run(device: str, size: int, quick: bool = False, only: list[str] | None = None,
        peak: bool = True) -> dict:
    dev = resolve_device(device)
    torch.manual_seed(0)
    repeat, inner = (2, 2) if quick else (5, 10)
    cases = [("train", b, train_step) for b in (16, 32)] + [("infer", 512, infer_step)] + \
            [("masked", b, masked_step) for b in (8, 32, 128)]
    if only:
        cases = [c for c in cases if f"{c[0]}:{c[1]}" in only]
    out: dict = {"device": str(dev), "size": size, "torch": torch.__version__,
                 "name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                 "rows": []}
    for kind, batch, make in cases:
        fns = {p: make(size, batch, p, dev) for p in DTYPES}
        sec = timed(fns, dev, repeat, inner)
        for p in DTYPES:
            out["rows"].append({"step": kind, "batch": batch, "precision": p,
                                "seconds": sec[p], "problems_per_s": batch / sec[p]})
            print(f"{kind:6s} batch {batch:4d} {p}: {batch / sec[p]:10.0f} problems/s "
                  f"({1000 * sec[p]:.2f} ms/step)", flush=True)
    for p in DTYPES if peak else ():
        out[f"peak_tflops_{p}"] = peak_tflops(p, dev, 2048 if quick else 8192)
        print(f"peak {p}: {out[f'peak_tflops_{p}']:.1f} TFLOP/s", flush=True)
    return out


def estimate(result: dict, params: str | Path = "params.yaml") -> dict:
    """Device hours per network of the paper profile from a :func:`run` result: training =
    epochs x train problems / training problems/s (batch ``train.batch_size``); masks = runs x
    steps x ``masks.batch_size`` problems / masked problems/s of the step's chunk (batch /
    ``masks.n_samples`` problems per forward, one mask each: the batch-8 row for 32 / 4), one
    run at a time; each at the faster precision."""
    cfg = load(params, "paper")
    best = lambda step, batch: max(r["problems_per_s"] for r in result["rows"]  # noqa: E731
                                   if r["step"] == step and r["batch"] == batch)
    n_train = int(cfg.data.n_per_config * len(cfg.data.configs) * 0.6)
    from core.sweep import plan

    runs = len(plan(cfg))
    mc = cfg.masks
    train_h = cfg.train.epochs * n_train / best("train", 16) / 3600
    chunk = mc.batch_size // mc.n_samples
    mask_h = runs * mc.steps * mc.batch_size / best("masked", chunk) / 3600
    return {"train_hours": train_h, "mask_runs": runs, "mask_hours": mask_h,
            "networks": len(cfg.train.networks)}


ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "benchmarks" / "device"
README_BEGIN = ("<!-- device: generated by `python -m benchmarks.device_bench readme` from "
                "benchmarks/device/, do not edit -->")
README_END = "<!-- /device -->"


def readme_text(params: str | Path = "params.yaml", folder: Path = MEASURED) -> str:
    """Markdown: the measured device throughputs at 160 px and the paper profile's cost."""
    res = json.loads((folder / "h100-160px.json").read_text())
    procs = json.loads((folder / "h100-160px-4proc.json").read_text())
    rows = {(r["step"], r["batch"], r["precision"]): r["problems_per_s"] for r in res["rows"]}
    keys = sorted({(k[0], k[1]) for k in rows}, key=lambda k: (["train", "infer", "masked"]
                                                               .index(k[0]), k[1]))
    lines = [f"Measured on one {res['name']} (torch {res['torch']}), SCL at {res['size']} px, "
             "`python -m benchmarks.device_bench` (`benchmarks/device/h100-160px.json`; medians "
             "after warm-up, device synchronised):", "",
             "| step | batch | fp32 problems/s | bf16 autocast problems/s | bf16 / fp32 |",
             "|---|---|---|---|---|"]
    for step, batch in keys:
        f, b = rows[step, batch, "fp32"], rows[step, batch, "bf16"]
        lines.append(f"| {step} | {batch} | {f:,.0f} | {b:,.0f} | {b / f:.2f}x |")
    one = rows["masked", 8, "fp32"]
    four = sum(r["problems_per_s"] for p in procs["processes"] for r in p
               if r["precision"] == "fp32")
    est = estimate(res, params)
    ms = {b: 1000 * b / rows["masked", b, "fp32"] for b in (8, 128)}
    lines += ["", f"Peak of a large matrix product: {res['peak_tflops_fp32']:.0f} TFLOP/s fp32, "
              f"{res['peak_tflops_bf16']:.0f} bf16. The masked step takes {ms[8]:.1f} ms at "
              f"batch 8 and {ms[128]:.1f} ms at batch 128: it is bound by kernel launches, not "
              "arithmetic, so bf16 autocast does not help (its casts add launches) and four "
              f"processes sharing the GPU (`masks.gpu_share` 0.25) reach {four:,.0f} problems/s "
              f"together vs {one:,.0f} for one (`h100-160px-4proc.json`).", "",
              f"**Paper profile on one such GPU, an estimate from these numbers** (not run end "
              f"to end): per network {est['train_hours']:.1f} h of training and "
              f"{est['mask_hours']:.0f} h of masks ({est['mask_runs']} mask runs x 20,000 steps "
              f"x 32 problems in chunks of 8, one run at a time, the masked step measured before "
              f"BatchNorm folding); {est['networks']} networks "
              f"~{est['networks'] * (est['train_hours'] + est['mask_hours']):.0f} GPU-hours. "
              "Grouped masks (`masks.group` K: K runs of one checkpoint in one vmapped step, "
              "`core.maskgroup`) are built and tested equal to sequential runs on the CPU but "
              "not measured on a GPU, so the estimate does not count them (on the CPU they are "
              "slower than one run at a time: `benchmarks/results.md`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if argv[:1] == ["readme"]:
        rp = argparse.ArgumentParser(prog="python -m benchmarks.device_bench readme")
        rp.add_argument("--readme", default=str(ROOT / "docs" / "gpu.md"))
        rp.add_argument("--params", default=str(ROOT / "params.yaml"))
        a = rp.parse_args(argv[1:])
        from paper.build import rewrite_readme

        print(rewrite_readme(a.readme, readme_text(a.params), README_BEGIN, README_END))
        return 0
    ap = argparse.ArgumentParser(prog="python -m benchmarks.device_bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None, help="JSON file for the result")
    ap.add_argument("--only", nargs="*", default=None, metavar="STEP:BATCH",
                    help="only these cases (e.g. masked:8), and no peak")
    args = ap.parse_args(argv)
    torch.backends.cudnn.benchmark = True
    result = run(args.device, args.size, args.quick, args.only, peak=not args.only)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
