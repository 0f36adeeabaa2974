"""Mask-training cost on SCL at the active profile's image size and mask batch size.

Rows (ours vs a baseline measured in the same run, interleaved so that a shared machine's
load hits both alike):

1. the masked step as ``core.masking.MaskedModel`` takes it now vs today's step
   (:class:`TodayMasked`, the step before its speed-ups, kept verbatim), and each candidate
   speed-up alone vs today's (BatchNorm folded, one-node straight-through with one flat
   product, freed memory kept, ``torch.compile``): SCL, batch 8, 1 thread, each variant in
   fresh processes in alternation, CPU time per step (a shared machine's other load does not
   inflate it). Goal >= 1.5x.
2. the 2 cores as 2 processes x 1 thread vs 1 process x 2 threads (``masks.workers`` x
   ``masks.threads``).
3. masked forward+backward vs the plain forward+backward of the same model and batch as
   ``core.models`` builds it (and with the plain model channels-last too). Goal <= 1.5x.
4. K masks of one checkpoint per step (``core.maskgroup``, ``masks.group``): masked
   problems/s at K = 1, 4, 16 vs K = 1.
5. one whole mask run of the profile (``masks.steps`` steps, curve logging included)
   estimated from the measured step time and a measured log evaluation, vs the 30 s goal.
6. the mask stage's overhead share: ``python -m core.sweep`` (the DVC stage's command, report
   included) run as a subprocess on a synthetic checkpoint and task sets at the profile's image
   size and mask settings; overhead = process wall time - the runs' compute (each run's own
   training + final evaluation, measured inside the run) - the group evaluations; ratio =
   overhead / (compute + group evaluation), measured for K masks and projected to the
   profile's masks per network (fixed costs: interpreter, imports, setup = checks,
   fingerprints, resume, model and data loading, and the report; per-mask costs: what lies
   between runs, e.g. writes). Goal <= 10% (~60% with one notebook per mask).

    python -m benchmarks.masking [--quick]
    python -m benchmarks masking flops --merge   (these rows and the GFLOP/s rows into results.md)

Also prints the top operators of one profiled mask step.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from benchmarks.common import row, timeit
from core import device
from core.config import load
from core.masking import (
    MaskedModel,
    Split,
    accuracy,
    log_steps,
    select_parameters,
    strided_like,
)
from core.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def _setup(quick: bool) -> dict[str, Any]:
    cfg = load("params.yaml")
    torch.set_num_threads(cfg.masks.threads)
    size = cfg.data.image_size
    batch = 8 if quick else cfg.masks.batch_size
    torch.manual_seed(0)
    model = build_model(cfg.model, size).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 16, size, size, generator=g)
    y = torch.randint(0, 8, (batch,), generator=g)
    return {"cfg": cfg, "model": model, "x": x, "y": y, "size": size, "batch": batch}


class TodayMasked:
    """The masked step as ``core.masking.MaskedModel`` computed it before its speed-ups
    (kept verbatim as the baseline of rows 1-5): one flat logit tensor, per-parameter mask views
    ``hard + (soft - soft.detach())``, ``w * m`` per parameter (channels-last strides kept),
    ``functional_call`` on the model with its BatchNorms, glibc's default allocator settings."""

    def __init__(self, model: torch.nn.Module, init: float):
        model.eval().requires_grad_(False)
        self.model = model
        params = dict(model.named_parameters())
        self.names = select_parameters(model)
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.sizes = [math.prod(sh) for sh in self.shapes]
        self.weights = {n: MaskedModel._layout(params[n].detach()) for n in self.names}
        self.flat = torch.full((sum(self.sizes),), float(init), requires_grad=True)

    views = MaskedModel.views

    def sample(self, generator: torch.Generator, tau: float) -> dict[str, torch.Tensor]:
        u = torch.empty(self.flat.shape).uniform_(generator=generator)
        u.clamp_(torch.finfo(torch.float32).tiny, 1.0 - 2 ** -24)
        noise = torch.logit(u)
        soft = torch.sigmoid((self.flat + 1.0 * noise) / tau)
        hard = (soft > 0.5).to(soft.dtype)
        return self.views(hard + (soft - soft.detach()))

    def __call__(self, x: torch.Tensor, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        eff = {n: strided_like(w, w * masks[n]) for n, w in self.weights.items()}
        return functional_call(self.model, eff, (x,))


# Candidates, each alone against today's step (a fresh process each: the allocator setting
# is process-wide and cannot be undone): "fold" = BatchNorm folded (core.masking.MaskedModel
# with the allocator left alone), "fused" = one-node straight-through and one flat product
# (MaskedModel without folding, allocator left alone), "alloc" = today's step after
# core.device.keep_freed_memory, "compile" = torch.compile of today's masked forward (forward
# and backward graphs; its compile seconds reported), "new" = MaskedModel as the sweep uses it.
VARIANTS = ("today", "new", "fold", "fused", "alloc", "compile")


def _variant_step(variant: str, model: torch.nn.Module, x, y, alpha: float, tau: float,
                  init: float):
    """(step function, the masked model) of one variant."""
    if variant in ("fold", "fused"):
        device._KEEP_FREED = False  # as if set: the allocator stays glibc's default
    if variant == "alloc":
        device.keep_freed_memory()
    if variant in ("today", "alloc", "compile"):
        masked: Any = TodayMasked(model, init)
        call = masked
        if variant == "compile":
            call = torch.compile(masked.__call__)
    else:
        masked = MaskedModel(model, init=init, fold_norms=variant != "fused")
        call = masked
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        masked.flat.grad = None
        loss = F.cross_entropy(call(x, masked.sample(gen, tau)), y)
        (loss + alpha * masked.flat.sum()).backward()
    return step


def worker(variant: str, steps: int, threads: int = 1) -> dict[str, Any]:
    """``steps`` masked steps of ``variant`` in this (fresh) process after one warm-up step:
    CPU seconds (the process's user + system time, which a shared machine's other load does
    not inflate) and wall seconds per step, and the warm-up's seconds (compilation)."""
    torch.set_num_threads(threads)
    s = _setup(True)
    mc = s["cfg"].masks
    step = _variant_step(variant, s["model"], s["x"], s["y"], mc.alpha, mc.tau, mc.init)
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    cpu, wall = [], []
    for _ in range(steps):
        c0, w0 = time.process_time(), time.perf_counter()
        step()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"variant": variant, "cpu": cpu, "wall": wall, "first_s": first,
            "batch": s["batch"], "threads": threads}


def _spawn(variant: str, steps: int, threads: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.masking", "--worker", variant,
                             "--steps", str(steps), "--threads", str(threads)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


def _result(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"benchmark worker failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def candidates(quick: bool = False) -> list[dict]:
    """Rows 1-5: each candidate and the adopted step against today's step, SCL at the
    profile's image size, batch 8, 1 thread; fresh processes in alternation (today, new,
    fold, ..., today, new, ...), each ``steps`` steps; medians over all steps of a variant."""
    rounds, steps = (2, 8) if quick else (4, 15)
    names = [v for v in VARIANTS if not (quick and v == "compile")]
    got: dict[str, list[dict]] = {v: [] for v in names}
    for r in range(rounds):
        for v in names:
            if v == "compile" and r:  # one compiled process (compiling costs minutes)
                continue
            got[v].append(_result(_spawn(v, steps)))
    med = {v: {k: statistics.median([t for g in gs for t in g[k]]) for k in ("cpu", "wall")}
           for v, gs in got.items()}
    spread = {v: [min(statistics.median(g["cpu"]) for g in gs),
                  max(statistics.median(g["cpu"]) for g in gs)] for v, gs in got.items()}
    batch = got["today"][0]["batch"]
    s = _setup(True)
    where = f"SCL {s['size']} px, batch {batch}, 1 thread"
    label = {"new": "adopted masked step (fold + fused + allocator)",
             "fold": "candidate: BatchNorm folded into the convolution",
             "fused": "candidate: one-node straight-through + one flat product",
             "alloc": "candidate: freed memory kept (no page faults)",
             "compile": "candidate: torch.compile of the masked forward+backward"}
    rows = []
    for v in names[1:]:
        extra = (f"; first step (compilation) {statistics.median(g['first_s'] for g in got[v]):.0f}"
                 " s per process" if v == "compile" else "")
        rows.append(row(f"{label[v]} vs today's masked step", batch / med[v]["cpu"],
                        batch / med["today"]["cpu"], "problems/s",
                        ">= 1.5x" if v == "new" else "",
                        f"{where}; CPU time per step (shared machine), medians of "
                        f"{sum(len(g['cpu']) for g in got[v])} steps in {len(got[v])} "
                        f"processes alternating with today's; process medians "
                        f"{1e3 * spread[v][0]:.1f}-{1e3 * spread[v][1]:.1f} ms vs today's "
                        f"{1e3 * spread['today'][0]:.1f}-{1e3 * spread['today'][1]:.1f} ms; wall "
                        f"ratio {med['today']['wall'] / med[v]['wall']:.2f}x{extra}",
                        {"cpu_median_s": med[v]["cpu"], "today_cpu_median_s":
                         med["today"]["cpu"], "processes": got[v], "today": got["today"]}))
    return rows


def layout(quick: bool = False) -> dict:
    """Row: the 2 cores as 2 processes x 1 thread vs 1 process x 2 threads (adopted masked
    step): problems/s of the pair over the wall time both run vs those of the one."""
    steps = 8 if quick else 20
    pair, one = [], []
    for _ in range(1 if quick else 2):
        procs = [_spawn("new", steps, 1) for _ in range(2)]
        pair.append([_result(p) for p in procs])
        one.append(_result(_spawn("new", steps, 2)))
    batch = one[0]["batch"]
    two_by_one = statistics.median(
        sum(batch / statistics.median(g["wall"]) for g in p) for p in pair)
    one_by_two = statistics.median(batch / statistics.median(g["wall"]) for g in one)
    return row("2 processes x 1 thread vs 1 process x 2 threads (masked step)", two_by_one,
               one_by_two, "problems/s", "> 1x keeps masks.workers 2 x threads 1",
               "wall time (both cores); masks.workers x masks.threads", {"pair": pair,
                                                                          "one": one})


def _plain_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    params = [p.requires_grad_(True) for p in model.parameters()]

    def step() -> None:
        for p in params:
            p.grad = None
        F.cross_entropy(model(x), y).backward()
    return step


def _masked_step(masked: MaskedModel, x, y, alpha: float, tau: float):
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        masked.flat.grad = None
        loss = F.cross_entropy(masked(x, masked.sample(gen, tau)), y)
        (loss + alpha * masked.flat.sum()).backward()
    return step


def grouped(quick: bool = False, ks: tuple[int, ...] = (1, 4, 16)) -> list[dict]:
    """Rows: masked problems/s of ``core.maskgroup.train_group`` (K masks of one checkpoint in
    one step; each its own data, alpha and seed) at each K of ``ks`` vs K = 1 (one mask per
    step, the sequential computation itself), SCL at the profile's image size, batch 8, in
    this process's threads; rounds in alternation (K = 1, 4, 16, 1, ...), CPU time of whole
    runs of a few steps whose curve is logged on 8 problems at the first and last step."""
    import dataclasses

    from core.maskgroup import Member, train_group

    s = _setup(True)
    cfg, size, batch = s["cfg"], s["size"], s["batch"]
    mc = dataclasses.replace(cfg.masks, batch_size=batch, log_every=10**6, curve_n=0)
    steps, rounds = (2, 1) if quick else (4, 3)
    g = torch.Generator().manual_seed(1)
    members = [Member(Split(torch.rand(2 * batch, 16, size, size, generator=g),
                            torch.randint(0, 8, (2 * batch,), generator=g)),
                      Split(torch.rand(8, 16, size, size, generator=g),
                            torch.zeros(8, dtype=torch.long)), mc.alpha, i)
               for i in range(max(ks))]
    times: dict[int, list[dict[str, float]]] = {k: [] for k in ks}
    for r in range(rounds + 1):  # round 0: warm-up
        for k in ks:
            c0, w0 = time.process_time(), time.perf_counter()
            train_group(s["model"], mc, members[:k], steps=steps)
            if r:
                times[k].append({"cpu": time.process_time() - c0,
                                 "wall": time.perf_counter() - w0})
    rate = {k: {key: statistics.median(k * steps * batch / t[key] for t in ts)
                for key in ("cpu", "wall")} for k, ts in times.items()}
    where = (f"SCL {size} px, batch {batch} per mask, {torch.get_num_threads()} thread(s); "
             f"{rounds} runs of {steps} steps per K, alternating; CPU time (shared machine)")
    rows = []
    for k in ks:
        spread = [k * steps * batch / t["cpu"] for t in times[k]]
        rows.append(row(f"{k} masks per step (masks.group {k}) vs 1: masked problems/s",
                        rate[k]["cpu"], rate[ks[0]]["cpu"], "problems/s",
                        "> 1x to set masks.group > 1 on this machine",
                        f"{where}; runs {min(spread):.1f}-{max(spread):.1f} problems/s; wall "
                        f"{rate[k]['wall']:.1f} vs {rate[ks[0]]['wall']:.1f}",
                        {"times": times[k], "steps": steps}))
    return rows


def _interleaved(fns: dict[str, Any], repeat: int) -> dict[str, dict[str, Any]]:
    """Time several functions in alternation (one call each per round); min over rounds."""
    out: dict[str, dict[str, Any]] = {k: {"times": []} for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(repeat):
        for k, f in fns.items():
            out[k]["times"].append(timeit(f, repeat=1, warmup=0)["min"])
    for v in out.values():
        v["min"] = min(v["times"])
    return out


def profile_step(quick: bool = True, top: int = 8) -> str:
    """A table of the top operators (self CPU time) of a few masked steps."""
    from torch.profiler import ProfilerActivity, profile

    s = _setup(quick)
    masked = MaskedModel(s["model"], s["cfg"].masks.include, s["cfg"].masks.init)
    step = _masked_step(masked, s["x"], s["y"], s["cfg"].masks.alpha, s["cfg"].masks.tau)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def run(quick: bool = False) -> list[dict]:
    rows = candidates(quick)  # fresh processes: before this one sets its allocator
    rows.append(layout(quick))
    s = _setup(quick)
    cfg, mc, x, y = s["cfg"], s["cfg"].masks, s["x"], s["y"]
    repeat = 3 if quick else 7
    where = f"SCL {s['size']} px, batch {s['batch']}, {torch.get_num_threads()} threads"
    plain_model = s["model"]
    cl_model = build_model(cfg.model, s["size"]).eval().to(memory_format=torch.channels_last)
    cl_model.load_state_dict(plain_model.state_dict())
    masked_model = build_model(cfg.model, s["size"]).eval()
    masked_model.load_state_dict(plain_model.state_dict())
    masked = MaskedModel(masked_model, mc.include, mc.init)
    t = _interleaved({"masked": _masked_step(masked, x, y, mc.alpha, mc.tau),
                      "plain": _plain_step(plain_model, x, y),
                      "plain_cl": _plain_step(cl_model, x, y)}, repeat)
    rows += [
        row("masked fwd+bwd vs plain fwd+bwd", t["masked"]["min"], t["plain"]["min"], "s/step",
            "<= 1.5x", where, t),
        row("masked fwd+bwd vs plain channels-last fwd+bwd", t["masked"]["min"],
            t["plain_cl"]["min"], "s/step", "<= 1.5x", f"{where}; masking overhead alone"),
    ]
    rows += grouped(quick)
    # one whole mask run: steps x step time + the logged task accuracy (curve_n problems; 0:
    # the task set's whole val split) + the run's own final accuracies (core.sweep.QUICK_N)
    from core.raven.store import split_ranges
    from core.sweep import QUICK_N
    a, b = split_ranges(s["cfg"].data.task_n)["val"]
    n_curve = mc.curve_n or (b - a)
    data = Split(torch.rand(n_curve, 16, s["size"], s["size"]), torch.zeros(n_curve).long())
    fn = masked.forward_fn(masked.binary())
    ev = timeit(lambda: accuracy(fn, data, mc.batch_size), repeat=2)["min"]
    final = 6 * ev * min(QUICK_N, n_curve) / n_curve  # mask, inverted, full on 2 sets
    step_full = t["masked"]["min"] * (mc.batch_size / s["batch"])
    logs = len(log_steps(mc.steps, mc.log_every))
    per_mask = mc.steps * step_full + ev * logs + final
    rows.append(row("one mask run (estimate)", per_mask, 30.0, "s", "<= 1x (30 s goal)",
                    f"{mc.steps} steps x {step_full:.3f} s + {logs} logs x {ev:.3f} s "
                    f"({n_curve} problems) + final accuracies {final:.2f} s"))
    rows.append(sweep_overhead(quick))
    return rows


def sweep_overhead(quick: bool = False, k: int | None = None) -> dict:
    """Row 5: the mask stage's overhead share (see the module docstring). Over 60 lines: one
    measurement recipe (set up a sweep, run it through the notebook, read its timing) read
    top to bottom."""
    import json
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import yaml

    from core.models import checkpoint_dict
    from core.raven.store import write_shard
    from core.sweep import plan

    cfg = load("params.yaml")
    k = k or (2 if quick else 4)
    size, mc = cfg.data.image_size, cfg.masks
    raw = cfg.to_dict()
    raw["train"].update(milestones=[cfg.train.milestones[-1]], networks=[0])
    raw["masks"].update(tasks=["circle"], families=["original"], seeds=list(range(k)),
                        alpha_sweep=[], complement_masks=[],
                        steps=min(mc.steps, 20) if quick else mc.steps)
    n = {"train": max(64, mc.batch_size), "val": 64, "test": 64}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        small = load(tmp / "params.yaml")
        torch.manual_seed(0)
        model = build_model(cfg.model, size)
        (tmp / "train").mkdir()
        torch.save(checkpoint_dict(model, cfg.model, size, 90, 1, 1, 90.0),
                   tmp / "train" / f"{small.checkpoints[0]}.pt")
        rng = np.random.default_rng(0)
        for name in ("circle", "not_circle"):
            for split, count in n.items():
                write_shard(tmp / "raven" / "tasks" / name / split / "center_single.npz",
                            {"image": rng.integers(0, 256, (count, 16, size, size), np.uint8),
                             "target": rng.integers(0, 8, count).astype(np.int64)},
                            "center_single")
        html = tmp / "reports" / "net0.html"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "core.sweep", "--params", str(tmp / "params.yaml"),
                        "--net", "0", "--train", str(tmp / "train"), "--data",
                        str(tmp / "raven"), "--out", str(tmp / "masks"), "--report", str(html),
                        # overhead = wall - compute only holds one run after another (with
                        # masks.workers > 1 runs overlap and the "overhead" comes out negative)
                        "--executor", "inprocess"],
                       check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        t = json.loads(html.with_suffix(".json").read_text())
    work = t["compute_s"] + t["group_eval_s"]
    loop = t["wall_s"] - t["setup_s"]  # from the first run to the last evaluation
    fixed = wall - loop  # interpreter, imports, checks, fingerprints, data loading, report
    per_mask = (loop - work) / k  # between runs: writes, bookkeeping
    n_profile = len(plan(cfg))
    over_p, work_p = fixed + per_mask * n_profile, work / k * n_profile
    projected = over_p / work_p
    # the ratio is the projected share (the measured k masks carry the whole fixed start-up
    # cost: 4 masks gave 0.14x where the real 35-mask stage measured 0.035-0.039x)
    return row(f"mask stage overhead ({k} masks, projected to {n_profile})", over_p, work_p,
               "s", "<= 0.10x",
               f"measured {k} masks of {raw['masks']['steps']} steps at {size} px: wall "
               f"{wall:.1f} s = compute {t['compute_s']:.1f} s + group evaluation "
               f"{t['group_eval_s']:.1f} s + fixed {fixed:.1f} s (start, imports, setup "
               f"{t['setup_s']:.1f} s, report) + "
               f"{per_mask:.2f} s/mask; projected to the profile's {n_profile} masks per "
               f"network: overhead {100 * projected:.1f}% of compute (ours / baseline: "
               "projected overhead / projected compute)",
               {"timing": t, "wall_s": wall, "fixed_s": fixed, "per_mask_overhead_s": per_mask,
                "projected_share": projected, "profile_masks": n_profile})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.masking", description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # one process of candidates()/layout(): its timings as one JSON line
        print(json.dumps(worker(args.worker, args.steps, args.threads)))
        return 0
    for r in run(args.quick):
        print(f"{r['what']}: ours {r['ours']:.4g} {r['unit']}, baseline {r['baseline']:.4g}, "
              f"ratio {r['ratio']:.2f}x (goal {r['goal']}) -- {r['notes']}")
    print(profile_step(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
