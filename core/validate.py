"""The mask method's validation suite: can masks at these settings see modules that exist?

Five checks, each with its rule fixed here, before any verdict of the study is computed:

``planted``       planted recovery among harmful distractors (:mod:`core.planted`, the mild and
                  the strong network): alpha by the study's rule; every task's mask has
                  IoU >= 0.95 with its planted module, solves its task (100%), the tasks' masks
                  overlap IoMin <= 0.10.
``complement``    Csordas et al.'s complement protocol on the mild planted network against its
                  truth (the drops the planted modules give): every task within 0.10 of the
                  truth, the left-out task's drop >= 0.5, the reference beats the unmasked
                  network by > 10 points on every task.
``control``       the composite SCL control (:mod:`core.control`) at these settings: its verdict.
``faithful``      masks of real SCL checkpoints (>= 6: 3 checkpoints x 2 networks): masked
                  accuracy within :data:`FAITHFUL_POINTS` of the unmasked network on the report
                  (test) split.
``continuation``  a few masks (planted and SCL) continued (:func:`continuation_settings`:
                  the constant-lr phase extended by half the run's steps, then the run's own
                  annealed tail, if any): read-out density change <= 1 point, IoMin >= 0.95
                  and IoU >= 0.90 with the mask continued (IoU: a planted module is 0.9% of
                  the weights, so 1 point of density could be all of it).

``python -m core.validate --params params.yaml [--set masks.steps=2000 ...] --only planted``
prints one table and writes ``results/validation/<name>.json`` (settings, every number, the
seconds each mask took on one thread, provenance).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import planted as P
from core.config import Config, ConfigError, MaskConfig, compose, from_dict
from core.formats import validation as validation_file
from core.formats.control import ControlError
from core.io import git_commit
from core.masking import MaskedModel, MaskError, MaskResult, Split, accuracy, train_mask

ALPHAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # the planted networks' decade grid
RECOVERY_IOU = 0.95
OVERLAP_MAX = 0.10
COMPLEMENT_TOL = 0.10
COMPLEMENT_LEFT_OUT = 1
FAITHFUL_POINTS = 5.0
CONTINUE_DENSITY = 1.0
CONTINUE_IOMIN = 0.95
CONTINUE_IOU = 0.90  # with few kept weights (planted: 20 of 2264) 1 point of density is 100%


def planted_settings(mc: MaskConfig) -> MaskConfig:
    """The profile's mask settings for the planted networks (one thread, whole splits)."""
    return dataclasses.replace(mc, threads=1, curve_n=0, eval_n=0, snapshot_param=None,
                               include=[])


def timed(fn: Callable[..., MaskResult], log: list[float]) -> Callable[..., MaskResult]:
    def run(*a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        log.append(time.perf_counter() - t0)
        return out
    return run


def select_alpha(m: nn.Module, mc: MaskConfig, train: Split, select: Split, tolerance: float,
                 run: Callable[..., MaskResult] = train_mask) -> tuple[float, dict[float, float]]:
    """The study's rule: the largest alpha of :data:`ALPHAS` whose read-out accuracy on
    ``select`` is within ``tolerance`` points of the best of the unmasked model and every
    alpha's mask (a mask beats the unmasked model where it removes harmful weights)."""
    acc = {a: run(m, mc, train, select, alpha=a, seed=0, steps=mc.steps).curve["task_acc"][-1]
           for a in ALPHAS}
    best = max(accuracy(MaskedModel(m).forward_fn(None), select), *acc.values())
    return max(a for a in ALPHAS if acc[a] >= best - tolerance), acc


def planted_recovery(mc: MaskConfig, tolerance: float, spec: P.Spec = P.MILD,
                     seconds: list[float] | None = None) -> dict[str, Any]:
    run = timed(train_mask, seconds if seconds is not None else [])
    P.check_truth(spec)
    m, modules = P.build(spec)
    cfg = planted_settings(mc)
    alpha, grid = select_alpha(m, cfg, P.data(spec, [0], 1024, 60), P.data(spec, [0], 256, 61),
                               tolerance, run)
    results, rows = [], []
    for t in range(spec.tasks):
        r = run(m, cfg, P.data(spec, [t], 1024, 10 + t), P.data(spec, [t], 256, 20 + t),
                alpha=alpha, seed=0, steps=cfg.steps)
        results.append(r)
        rows.append({"task": t, "kept": P.n_on(r.mask), "planted": P.n_on(modules[t]),
                     "iou": P.iou(r.mask, modules[t]), "accuracy": r.curve["task_acc"][-1],
                     "converged": r.converged, "pruned": r.pruned})
    masks = [r.mask for r in results]
    overlap = max(P.iomin(masks[a], masks[b]) for a in range(spec.tasks)
                  for b in range(a + 1, spec.tasks))
    passes = (all(r["iou"] >= RECOVERY_IOU and r["accuracy"] == 100.0 for r in rows)
              and overlap <= OVERLAP_MAX)
    return {"network": dataclasses.asdict(spec), "alpha": alpha, "alpha_grid": grid,
            "rows": rows, "max_cross_iomin": overlap, "passes": passes,
            "results": results, "model": m}


def planted_complement(mc: MaskConfig, tolerance: float, seconds: list[float] | None = None
                       ) -> dict[str, Any]:
    run = timed(train_mask, seconds if seconds is not None else [])
    spec, k = P.MILD, COMPLEMENT_LEFT_OUT
    m, modules = P.build(spec)
    cfg = planted_settings(mc)
    everything = list(range(spec.tasks))
    rest = [t for t in everything if t != k]
    mm = MaskedModel(m)
    train_all, select_all = P.data(spec, everything, 1536, 30), P.data(spec, everything, 192, 31)
    alpha, _ = select_alpha(m, cfg, train_all, select_all, tolerance, run)
    ref = run(m, cfg, train_all, select_all, alpha=alpha, seed=0, steps=cfg.steps).mask
    comp = run(m, cfg, P.data(spec, rest, 1024, 50), P.data(spec, rest, 64, 51), alpha=alpha,
               seed=0, steps=cfg.steps).mask
    test = {t: P.data(spec, [t], 1024, 40 + t) for t in everything}
    gain = {t: accuracy(mm.forward_fn(ref), test[t]) - accuracy(mm.forward_fn(None), test[t])
            for t in everything}
    drop = P.relative_drops(m, ref, comp, test)
    truth = P.complement_truth(m, modules, test, k)
    worst = max(abs(drop[t] - truth[t]) for t in drop)
    passes = drop[k] >= 0.5 and worst <= COMPLEMENT_TOL and all(g > 10.0 for g in gain.values())
    return {"alpha": alpha, "drop": drop, "truth": truth, "gain": gain, "max_error": worst,
            "kept_reference": P.n_on(ref), "kept_complement": P.n_on(comp), "passes": passes}


def continuation_settings(mc: MaskConfig) -> tuple[MaskConfig, int]:
    """The continuation of a run of ``mc``: its constant phase extended by half the run's
    steps, then the same annealed tail (lr and noise anneal over the same number of steps),
    so the read-out procedure is the run's own and the anneal cannot make a moving run look
    settled. Returns the settings and the steps."""
    tail = max(mc.lr_anneal, mc.noise_anneal) * mc.steps
    steps = int(round(mc.steps / 2 + tail))
    scale = mc.steps / steps
    return dataclasses.replace(mc, steps=steps, lr_anneal=mc.lr_anneal * scale,
                               noise_anneal=mc.noise_anneal * scale), steps


def continuation(model: nn.Module, mc: MaskConfig, first: MaskResult, train: Split,
                 curve: Split, alpha: float, seed: int) -> dict[str, Any]:
    """Continue ``first`` (:func:`continuation_settings`); compare the two read-outs."""
    cfg, steps = continuation_settings(mc)
    more = train_mask(model, cfg, train, curve, alpha=alpha, seed=seed + 1000, steps=steps,
                      start=first)
    total = sum(v.numel() for v in first.mask.values())
    d0, d1 = P.n_on(first.mask) / total * 100, P.n_on(more.mask) / total * 100
    io, iu = P.iomin(first.mask, more.mask), P.iou(first.mask, more.mask)
    return {"density": d0, "density_after": d1, "density_change": abs(d1 - d0), "iomin": io,
            "iou": iu, "steps": steps, "accuracy": first.curve["task_acc"][-1],
            "accuracy_after": more.curve["task_acc"][-1],
            "passes": abs(d1 - d0) <= CONTINUE_DENSITY and io >= CONTINUE_IOMIN
            and iu >= CONTINUE_IOU}


def planted_continuation(mc: MaskConfig, tolerance: float, recovered: dict[str, Any]
                         ) -> dict[str, Any]:
    """The continuation test on each task's mask of a planted recovery run (same data and
    alpha: the recovery's runs are the runs continued)."""
    spec = P.Spec(**recovered["network"])
    m = recovered["model"]
    cfg = planted_settings(mc)
    rows = []
    for t, first in enumerate(recovered["results"]):
        train, curve = P.data(spec, [t], 1024, 10 + t), P.data(spec, [t], 256, 20 + t)
        rows.append({"task": t, **continuation(m, cfg, first, train, curve,
                                               recovered["alpha"], 0)})
    return {"rows": rows, "passes": all(r["passes"] for r in rows)}


# --------------------------------------------------------------------------- real SCL masks


@dataclasses.dataclass(frozen=True)
class SclJob:
    """One SCL mask of the faithfulness check (and, with ``cont``, its continuation)."""

    checkpoint: str  # path of the checkpoint file
    arch: str
    tasks_dir: str  # data/raven/tasks
    task: str
    mc: MaskConfig
    alpha: float
    seed: int
    cont: bool


def _task_split(tasks_dir: str, task: str, split: str, n: int = 0) -> Split:
    from core.control import _split  # one reader of a task set as a Split
    return _split(Path(tasks_dir) / task, split, n)


def scl_job(job: SclJob) -> dict[str, Any]:
    """Train one mask of a real checkpoint; masked vs unmasked accuracy on the report (test)
    split; the continuation test when asked. Runs in a worker process (one thread)."""
    from core.models import load_checkpoint
    torch.set_num_threads(1)
    model, _ = load_checkpoint(job.checkpoint, arch=job.arch)
    train = _task_split(job.tasks_dir, job.task, "train")
    curve = _task_split(job.tasks_dir, job.task, "val", job.mc.curve_n)
    test = _task_split(job.tasks_dir, job.task, "test")
    t0 = time.perf_counter()
    first = train_mask(model, job.mc, train, curve, alpha=job.alpha, seed=job.seed,
                       steps=job.mc.steps)
    seconds = time.perf_counter() - t0
    mm = MaskedModel(model, names=first.names)
    row = {"checkpoint": job.checkpoint, "task": job.task, "seed": job.seed,
           "alpha": job.alpha, "seconds": seconds,
           "density": 100.0 * P.n_on(first.mask) / mm.numel, "pruned": first.pruned,
           "unmasked": accuracy(mm.forward_fn(None), test, 16),
           "masked": accuracy(mm.forward_fn(first.mask), test, 16),
           "converged": first.converged, "n_test": len(test)}
    row["faithful"] = row["unmasked"] - row["masked"] <= FAITHFUL_POINTS
    if job.cont:
        row["continuation"] = continuation(model, job.mc, first, train, curve, job.alpha,
                                           job.seed)
    return row


def scl_jobs(cfg: Config, train_dir: Path, tasks_dir: Path, networks: list[int],
             continued: int) -> list[SclJob]:
    """One mask per network x checkpoint (>= 6 with 2 networks and 3 checkpoints), the
    profile's shapes in rotation, seed 0, the profile's alpha; the first ``continued`` also
    get the continuation test."""
    mc = dataclasses.replace(cfg.masks, threads=1)
    jobs = []
    for i, (net, ck) in enumerate((n, c) for n in networks for c in cfg.checkpoints):
        path = train_dir / f"net{net}" / f"{ck}.pt"
        if not path.is_file():
            raise ValidationError(f"{path}: checkpoint not found (train the profile's networks "
                                  "first: `dvc repro train`)")
        jobs.append(SclJob(str(path), cfg.model.arch, str(tasks_dir),
                           cfg.masks.tasks[i % len(cfg.masks.tasks)], mc, cfg.masks.alpha, 0,
                           i < continued))
    return jobs


def run_scl(jobs: list[SclJob], workers: int) -> list[dict[str, Any]]:
    if workers <= 1:
        return [scl_job(j) for j in jobs]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(pool.map(scl_job, jobs))


def run_control(cfg: Config, control_dir: Path, workers: int) -> dict[str, Any]:
    """The composite control at ``cfg``'s mask settings: the pipeline's own result
    (``control_dir/control.json``, the control stage) when it was made at exactly these
    settings, else new masks of the pipeline's specialists (trained first if missing) into
    ``control_dir/validation/`` (the pipeline's outputs are never overwritten)."""
    from core import control
    from core.formats.control import CONTROL_MASK_KEYS, read_result, read_timing
    s = control.settings(cfg, workers=workers)
    mc, alpha = control.mask_settings(cfg, s)
    plain = lambda d: json.loads(json.dumps(d))  # noqa: E731 (tuples -> lists, as in the file)
    want = plain({**{k: getattr(mc, k) for k in CONTROL_MASK_KEYS}, "alpha": alpha})
    how = {k: v for k, v in plain(dataclasses.asdict(s)).items() if k != "workers"}
    result, own = None, control_dir / "control.json"
    if own.is_file():
        made = read_result(own)
        if made["profile"] == cfg.profile and made["masks"] == want and {
                k: v for k, v in made["settings"].items() if k != "workers"} == how:
            result = made
    made_in = control_dir
    if result is None:
        data, ckpts = control.prepare(cfg, s, control_dir, progress=False)
        made_in = control_dir / "validation"
        result = control.make_masks(cfg, s, made_in, data, ckpts)
    seconds = read_timing(made_in)
    return {"passes": bool(result["verdict"]["passes"]), "verdict": result["verdict"],
            "rows": [{**{k: r[k] for k in ("task", "seed", "density", "own", "own_functional",
                                           "acc_own_only", "pruned", "converged",
                                           *(f"{p}_{t}" for p in ("kept", "inert", "acc")
                                             for t in control.TASKS))},
                      "seconds": seconds.get(f"{r['task']}-s{r['seed']}")}
                     for r in result["rows"]],
             "iomin": result["iomin"], "reference": result["reference"]}


CHECKS = ("planted", "complement", "control", "faithful", "continuation")


class ValidationError(ValueError):
    """A bad input of the validation suite (names the file or option)."""


def validate(cfg: Config, checks: list[str], *, train_dir: Path, tasks_dir: Path,
             control_dir: Path, networks: list[int], workers: int) -> dict[str, Any]:
    tol = cfg.metrics.alpha_tolerance
    out: dict[str, Any] = {"masks": dataclasses.asdict(cfg.masks), "checks": {}}
    secs: list[float] = []
    t0 = time.perf_counter()
    if "planted" in checks or "continuation" in checks:
        mild = planted_recovery(cfg.masks, tol, P.MILD, secs)
        strong = planted_recovery(cfg.masks, tol, P.STRONG, secs)
        strip = lambda r: {k: v for k, v in r.items() if k not in ("results", "model")}  # noqa: E731
        if "planted" in checks:
            out["checks"]["planted"] = {"mild": strip(mild), "strong": strip(strong),
                                        "passes": mild["passes"] and strong["passes"]}
        if "continuation" in checks:
            out["planted_continuation"] = planted_continuation(cfg.masks, tol, mild)
    if "complement" in checks:
        out["checks"]["complement"] = planted_complement(cfg.masks, tol, secs)
    out["planted_seconds_per_mask"] = sum(secs) / len(secs) if secs else None
    if "faithful" in checks or "continuation" in checks:
        rows = run_scl(scl_jobs(cfg, train_dir, tasks_dir, networks,
                                2 if "continuation" in checks else 0), workers)
        if "faithful" in checks:
            out["checks"]["faithful"] = {"rows": rows, "passes": len(rows) >= 6 and all(
                r["faithful"] for r in rows)}
        out["scl_seconds_per_mask"] = sum(r["seconds"] for r in rows) / len(rows)
        if "continuation" in checks:
            cont = [{"what": f"planted task {r['task']}", **r}
                    for r in out.pop("planted_continuation")["rows"]]
            cont += [{"what": f"{Path(r['checkpoint']).parent.name}/"
                              f"{Path(r['checkpoint']).stem} {r['task']}",
                      **r["continuation"]} for r in rows if "continuation" in r]
            out["checks"]["continuation"] = {"rows": cont,
                                             "passes": all(r["passes"] for r in cont)}
    if "control" in checks:
        out["checks"]["control"] = run_control(cfg, control_dir, workers)
    out["passes"] = all(c["passes"] for c in out["checks"].values()) and set(
        out["checks"]) == set(CHECKS)
    out["seconds"] = time.perf_counter() - t0
    return out


def table(result: dict[str, Any]) -> str:
    """One markdown row per check: its verdict and the numbers it rests on."""
    c = result["checks"]
    lines = ["| check | verdict | numbers |", "|---|---|---|"]

    def row(name: str, text: str) -> None:
        if name in c:
            lines.append(f"| {name} | {'pass' if c[name]['passes'] else 'FAIL'} | {text} |")

    if "planted" in c:
        p = c["planted"]
        row("planted", "; ".join(
            f"{k}: IoU {min(r['iou'] for r in p[k]['rows']):.2f}-"
            f"{max(r['iou'] for r in p[k]['rows']):.2f}, accuracy "
            f"{min(r['accuracy'] for r in p[k]['rows']):.0f}%, cross IoMin "
            f"{p[k]['max_cross_iomin']:.2f} (alpha {p[k]['alpha']:g})" for k in ("mild", "strong")))
    if "complement" in c:
        p = c["complement"]
        row("complement", "drops " + " / ".join(f"{v:.2f}" for v in p["drop"].values())
            + " vs truth " + " / ".join(f"{v:.2f}" for v in p["truth"].values())
            + f" (largest error {p['max_error']:.2f})")
    if "control" in c:
        p = c["control"]
        row("control", p["verdict"]["text"] + "; own share (functional) " + ", ".join(
            f"{r['own_functional']:.0%}" for r in p["rows"]) + "; IoMin cross "
            + ", ".join(f"{x:.2f}" for x in p["iomin"]["cross"]) + " vs same "
            + ", ".join(f"{x:.2f}" for x in p["iomin"]["same"]))
    if "faithful" in c:
        row("faithful", ", ".join(f"{r['masked']:.1f} vs {r['unmasked']:.1f}"
                                  for r in c["faithful"]["rows"]) + " (masked vs unmasked %)")
    if "continuation" in c:
        row("continuation", ", ".join(f"{r['what']}: {r['density_change']:.2f} pt, IoMin "
                                      f"{r['iomin']:.2f}" for r in c["continuation"]["rows"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.validate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. masks.steps=2000")
    ap.add_argument("--profile", default="default", help="the profile whose settings to test")
    ap.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    ap.add_argument("--name", default=None, help="results/validation/<name>.json "
                    "(default: the profile, with the overrides)")
    ap.add_argument("--out", default="results/validation")
    ap.add_argument("--train", default="data/train", help="the profile's trained networks")
    ap.add_argument("--tasks", default="data/raven/tasks", help="the profile's task sets")
    ap.add_argument("--control", default="data/control", help="the control's folder")
    ap.add_argument("--networks", type=int, nargs="+", default=None,
                    help="networks for the SCL checks (default: the first two of the profile)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the planted checks run here; one thread, as every mask run
    try:
        bad = [o for o in args.overrides if not o.startswith("masks.") or "=" not in o]
        if bad:
            raise ValidationError(f"overrides: expected masks.<key>=<value>, got {bad[0]!r}")
        cfg = from_dict(compose(args.profile, args.overrides), f"profile {args.profile}")
        nets = args.networks or cfg.train.networks[:2]
        name = args.name or "-".join([args.profile, *(o.removeprefix("masks.").replace("=", "")
                                                       for o in args.overrides)])
        result = validate(cfg, args.only, train_dir=Path(args.train),
                          tasks_dir=Path(args.tasks), control_dir=Path(args.control),
                          networks=nets, workers=args.workers)
    except (ValidationError, ConfigError, ControlError, MaskError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    commit = git_commit(Path.cwd())
    for check in result["checks"].values():
        check["commit"] = commit
    path = Path(args.out) / f"{name}.json"
    if set(args.only) != set(CHECKS) and path.is_file():  # the checks not run now are kept
        before = json.loads(path.read_text())
        if before.get("masks") != json.loads(json.dumps(result["masks"])):
            print(f"error: {path} holds other mask settings: run every check", file=sys.stderr)
            return 1
        result["checks"] = {**before["checks"], **result["checks"]}
        result["passes"] = all(c["passes"] for c in result["checks"].values()) and set(
            result["checks"]) == set(CHECKS)
    result = {"name": name, "profile": args.profile, "overrides": args.overrides,
              "commit": commit, **result}
    validation_file.write(path, result)
    print(table(result))
    print(f"{'PASSES' if result['passes'] else 'does not pass'} every check -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
