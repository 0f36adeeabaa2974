"""The composite positive control: can the masking method find modules where they exist?

Two SCLs of the profile's architecture are trained, one only on ``color_rule`` problems (Color
follows a non-constant rule, the rest Constant) and one only on ``size_rule`` problems; the
*composite* sums their logits. Its modules are disjoint by construction of the weights: the
size network carries no colour-rule skill and, on colour problems, only adds noise to the
answer scores (it is *harmful*, not idle), and the other way round. A mask trained on one task
of the composite should therefore keep its weights in that task's network, and the two tasks'
masks should overlap less than two seeds of one task's mask. Unlike the ``control`` task family
(two tasks of one network, whose attribute and relation MLPs are shared across heads), this
controls the weights, not only the data.

``python -m core.control run`` generates the two task sets (``--n`` problems each, the
profile's image size and answer sets), trains the two networks to ``--milestone`` % validation
accuracy (``core.train``, in parallel), trains masks of the composite with the profile's
``masks`` settings (``--steps``/``--lr``/``--alpha`` override them: the control is how mask
settings are tested), and writes ``control.json``: per mask the density, the share of its kept
weights in its own task's network (``own``), the masked composite's test accuracy on both
tasks; the cross-task and same-task IoMin; the verdict (:func:`verdict`). Specialists already
trained with the same settings are reused. ``python -m paper`` (report) and ``python -m paper
readme`` (README) render a ``control.json`` given with ``--control`` (:func:`summary_text`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from core.config import Config, ConfigError, check_field, checkpoint_name, load, load_yaml
from core.formats import write_json
from core.formats.control import (
    CONTROL_MASK_KEYS,
    RESULT,
    TASKS,
    TIMING,
    ControlError,
    summary_text,
    write_result,
)
from core.io import atomic_write_text

MIN_OWN = 0.75  # a mask passes when >= 75% of its kept weights lie in its own task's network


class Composite(nn.Module):
    """The sum of the logits of one network per task (parameters ``nets.<task>.*``).

    ``scrambled``: that task's network reads *another* problem of the batch (the batch rolled
    by one), so its output is noise with respect to the answer: it cannot help, only harm,
    and a module of the other task lies in its own network by construction. Without it the
    truth does not hold: measured, a colour-rule mask of the plain composite solved 66% of
    colour problems and 49% once the size network's part of it was removed (the size
    network's features serve colour too; :func:`mask_truth`)."""

    def __init__(self, nets: dict[str, nn.Module], scrambled: str | None = None) -> None:
        super().__init__()
        self.nets = nn.ModuleDict(nets)
        if scrambled is not None and scrambled not in nets:
            raise ControlError(f"scrambled: {scrambled!r} is not one of {list(nets)}")
        self.scrambled = scrambled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scrambled is not None and len(x) < 2:
            raise ControlError("the scrambled composite needs batches of >= 2 problems")
        return sum(net(x.roll(1, 0) if t == self.scrambled else x)
                   for t, net in self.nets.items())


def other_task(task: str) -> str:
    return next(t for t in TASKS if t != task)


# --------------------------------------------------------------------------- measures


def kept(mask: dict[str, torch.Tensor], task: str | None = None) -> int:
    """Weights kept by ``mask`` (in ``task``'s network only, if given)."""
    pre = None if task is None else f"nets.{task}."
    return sum(int(v.sum()) for n, v in mask.items() if pre is None or n.startswith(pre))


def own_share(mask: dict[str, torch.Tensor], task: str) -> float:
    """Share of the mask's kept weights that lie in ``task``'s own network (nan: empty mask)."""
    total = kept(mask)
    return float("nan") if total == 0 else kept(mask, task) / total


def iomin(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """|a & b| / min(|a|, |b|) over every masked parameter (nan when one mask is empty)."""
    if set(a) != set(b):
        raise ControlError("iomin: the two masks cover different parameters")
    small = min(kept(a), kept(b))
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    return float("nan") if small == 0 else inter / small


def overlaps(masks: dict[tuple[str, int], dict[str, torch.Tensor]]) -> dict[str, list[float]]:
    """IoMin of every pair of masks, split into same-task (two seeds) and cross-task pairs."""
    out: dict[str, list[float]] = {"same": [], "cross": []}
    for (ka, a), (kb, b) in itertools.combinations(sorted(masks.items()), 2):
        out["same" if ka[0] == kb[0] else "cross"].append(iomin(a, b))
    return out


TRUTH_POINTS = 5.0  # a mask uses only its own network when removing the other's costs <= this


def verdict(rows: list[dict[str, Any]], pairs: dict[str, list[float]]) -> dict[str, Any]:
    """The rule, fixed before any run: first the control's truth (every mask's own-task test
    accuracy with the other network's part removed stays within :data:`TRUTH_POINTS` of the
    mask's: the module lies in its own network; otherwise not testable). Then it passes when
    every mask keeps >= :data:`MIN_OWN` of its *functional* weights (those whose removal can
    change an answer: inert weights belong to no module, they are what the optimiser has not
    removed) in its own network, AND every cross-task IoMin is below every same-task IoMin
    (the same-task null: two seeds of one task). Without a same-task pair the separation is
    not testable."""
    used = [r for r in rows if r["acc_" + r["task"]] - r["acc_own_only"] > TRUTH_POINTS]
    own = [r["own_functional"] for r in rows]
    own_ok = bool(own) and all(np.isfinite(o) and o >= MIN_OWN for o in own)
    if used:
        r = used[0]
        return {"passes": False, "own_ok": own_ok, "separated": None, "truth": False,
                "text": f"not testable: the {r['task']} mask (seed {r['seed']}) uses the other "
                        f"network ({r['acc_' + r['task']]:.1f}% with it, "
                        f"{r['acc_own_only']:.1f}% without)"}
    if not pairs["same"] or not pairs["cross"]:
        return {"passes": False, "own_ok": own_ok, "separated": None, "truth": True,
                "text": "not testable (needs >= 2 seeds per task)"}
    separated = bool(max(pairs["cross"]) < min(pairs["same"]))
    passes = own_ok and separated
    text = ("passes: each task's mask lies in its own network and the two tasks' masks overlap "
            "less than two seeds of one task's" if passes else
            "fails: " + "; ".join(
                s for s, bad in ((f"a mask keeps < {MIN_OWN:.0%} of its functional weights in "
                                  "its own network", not own_ok),
                                 ("cross-task overlap not below the same-task overlap",
                                  not separated)) if bad))
    return {"passes": passes, "own_ok": own_ok, "separated": separated, "truth": True,
            "text": text}


# --------------------------------------------------------------------------- steps


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the control runs with (besides the profile): recorded in control.json."""

    n: int = 12000  # problems per task set (60/20/20 train/val/test)
    milestone: float = 45.0  # the specialists' validation accuracy (%)
    tolerance: float = 5.0  # +- points around the milestone (train.milestone_tolerance)
    seeds: tuple[int, ...] = (0, 1)
    steps: int | None = None  # None: the profile's masks.steps (likewise lr, alpha)
    lr: float | None = None
    alpha: float | None = None
    readout: float | None = None  # None: the profile's masks.readout (the logit threshold)
    noise_anneal: float | None = None  # None: the profile's masks.noise_anneal
    eval_n: int = 800  # test problems per task for the accuracies
    curve_n: int = 400  # validation problems for the mask curves (the convergence flag)
    workers: int = 2
    scramble: bool = True  # the other task's network reads another problem (Composite)


def check(s: Settings) -> None:
    if s.n < 50:
        raise ControlError(f"--n: expected >= 50 problems per task set, got {s.n}")
    if not 0 < s.milestone < 100:
        raise ControlError(f"--milestone: expected a percentage in (0, 100), got {s.milestone}")
    if not s.seeds or len(set(s.seeds)) != len(s.seeds) or any(x < 0 for x in s.seeds):
        raise ControlError(f"--seeds: expected distinct non-negative seeds, got {list(s.seeds)}")
    for key in ("steps", "lr", "alpha"):
        v = getattr(s, key)
        if v is not None and not v > 0:
            raise ControlError(f"--{key}: expected a number > 0, got {v!r}")
    if s.readout is not None and not np.isfinite(s.readout):
        raise ControlError(f"--readout: expected a finite logit threshold, got {s.readout!r}")
    if s.noise_anneal is not None and not 0 <= s.noise_anneal <= 1:
        raise ControlError(f"--noise-anneal: expected a fraction in [0, 1], got {s.noise_anneal!r}")
    if s.eval_n < 1 or s.curve_n < 1:
        raise ControlError(f"--eval-n / --curve-n: expected >= 1, got {s.eval_n} / {s.curve_n}")
    if s.workers < 1:
        raise ControlError(f"--workers: expected >= 1, got {s.workers}")


def mask_settings(cfg: Config, s: Settings):
    """The profile's masks section with the control's overrides (threads: 1 per worker)."""
    mc = dataclasses.replace(cfg.masks, threads=1)
    if s.steps is not None:
        mc = dataclasses.replace(mc, steps=s.steps,
                                 log_every=max(1, s.steps // 5))
    if s.lr is not None:
        mc = dataclasses.replace(mc, lr=s.lr)
    if s.readout is not None:
        mc = dataclasses.replace(mc, readout=s.readout)
    if s.noise_anneal is not None:
        mc = dataclasses.replace(mc, noise_anneal=s.noise_anneal)
    return mc, (s.alpha if s.alpha is not None else cfg.masks.alpha)


def make_data(cfg: Config, s: Settings, out: Path, progress: bool) -> dict[str, Path]:
    """One task set per task (``core.raven`` generate, center_single), reused when present
    with the same settings."""
    from core.raven.__main__ import generate
    from core.raven.attributes import Subset
    from core.tasks import SET_SPECS
    dirs = {}
    for i, task in enumerate(TASKS):
        d = out / "raven" / task
        about = {"n": s.n, "size": cfg.data.image_size, "answers": cfg.data.answers,
                 "seed": cfg.seed + 1000 + i}
        stamp = d / "control.json"
        if not (stamp.exists() and json.loads(stamp.read_text()) == about):
            generate(d, ["center_single"], s.n, about["seed"], cfg.data.workers,
                     cfg.data.image_size, cfg.data.answers, Subset(**SET_SPECS[task]),
                     force=True, progress=progress)
            atomic_write_text(stamp, json.dumps(about, sort_keys=True))
        dirs[task] = d
    return dirs


def specialist_params(cfg: Config, s: Settings) -> dict[str, Any]:
    """The profile with one network trained to the control's milestone."""
    d = cfg.to_dict()
    d["train"] = {**d["train"], "milestones": [s.milestone], "milestone_tolerance": s.tolerance,
                  "networks": [0], "jobs": 1, "nproc": 1}
    return d


def _training_part(text: str, where: str | Path = "specialist params") -> dict[str, Any]:
    """What a specialist's training reads from its params (mask, metric and figure settings
    do not change it: a control run with other ``--steps`` reuses the networks)."""
    return {k: v for k, v in (load_yaml(text, where) or {}).items()
            if k not in ("masks", "metrics", "figures")}


def train_specialists(cfg: Config, s: Settings, data: dict[str, Path], out: Path,
                      progress: bool) -> dict[str, Path]:
    """Both networks in parallel (``python -m core.train``), reused when trained with the same
    parameters; returns each task's checkpoint."""
    text = yaml.safe_dump(specialist_params(cfg, s), sort_keys=True)
    name = f"{checkpoint_name(cfg.model.arch, s.milestone)}.pt"
    procs, ckpts = {}, {}
    for task in TASKS:
        d = out / "train" / task
        ckpts[task] = d / name
        params = out / "train" / f"{task}.params.yaml"
        if ckpts[task].exists() and params.exists() and _training_part(params.read_text(), params) \
                == _training_part(text):
            continue
        params.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(params, text)
        cmd = [sys.executable, "-m", "core.train", "--params", str(params), "--net", "0",
               "--data", str(data[task]), "--out", str(d), "--state",
               str(out / "state" / task), *([] if progress else ["--no-progress"])]
        procs[task] = subprocess.Popen(cmd)
    failed = [t for t, p in procs.items() if p.wait() != 0]
    if failed:
        raise ControlError(f"training the {', '.join(failed)} specialist(s) failed (see above): "
                           f"they must reach {s.milestone:g}% validation accuracy within "
                           f"train.epochs ({cfg.train.epochs}); lower --milestone or raise --n")
    return ckpts


def _split(folder: Path, split: str, n: int = 0):
    from core.data import RavenDataset, to_float
    from core.masking import Split
    d = RavenDataset(folder, split=split)
    return Split(torch.as_tensor(d.images), torch.as_tensor(d.targets), to_float,
                 f"{folder.name}/{split}").head(n)


def composite(ckpts: dict[str, Path], arch: str, scrambled: str | None = None) -> Composite:
    from core.models import load_checkpoint
    return Composite({t: load_checkpoint(ckpts[t], arch=arch)[0] for t in TASKS},
                     scrambled).eval()


def _mask_job(job: tuple) -> dict[str, Any]:
    """One mask of the composite (a worker process), with the checks of its truth."""
    from core import masking
    ckpts, arch, data, mc, alpha, task, seed, eval_n, curve_n, out, scramble = job
    torch.set_num_threads(1)
    model = composite(ckpts, arch, other_task(task) if scramble else None)
    t0 = time.perf_counter()
    train = _split(data[task], "train")
    res = masking.train_mask(model, mc, train, _split(data[task], "val", curve_n), alpha=alpha,
                             seed=seed, steps=mc.steps)
    seconds = round(time.perf_counter() - t0, 1)
    mm = masking.MaskedModel(model, names=res.names)
    test = {t: _split(data[t], "test", eval_n) for t in TASKS}
    acc = {t: masking.accuracy(mm.forward_fn(res.mask), test[t], 16) for t in TASKS}
    truth = mask_truth(mm, res.mask, task, train.head(TRUTH_N), test[task], seed)
    row = {"task": task, "seed": seed, "density": res.curve["density"][-1],
           "own": own_share(res.mask, task), "pruned": res.pruned,
           **{f"kept_{t}": kept(res.mask, t) for t in TASKS},
           **{f"acc_{t}": acc[t] for t in TASKS}, **truth, "converged": res.converged,
           "convergence": res.convergence, "curve": {k: res.curve[k] for k in
                                                     ("step", "density", "task_acc")}}
    if out is not None:
        from core.io import atomic_torch_save
        atomic_torch_save({"mask": res.mask, "logits": res.logits, "row": row},
                          Path(out) / "masks" / f"{task}-s{seed}.pt")
    return {"row": row, "mask": res.mask, "seconds": seconds}


TRUTH_N = 256  # training problems on which inert weights are found (masking.inert_weights)


def mask_truth(mm, mask: dict[str, torch.Tensor], task: str, train, test, seed: int
               ) -> dict[str, Any]:
    """What a mask of the composite keeps of the other task's network, and whether it uses it:
    ``acc_own_only`` = its task's test accuracy with the other network's part of the mask
    removed (the control's premise is that a module lies in its own network: then this equals
    the mask's own accuracy); ``inert_<t>`` = kept weights of each network whose removal changes
    no centred logit on ``train`` (``masking.prune_inert``: found to first order, the removal
    checked); ``own_functional`` = the own-network share of the kept weights that are not inert
    (the control's criterion)."""
    from core import masking
    other = f"nets.{other_task(task)}."
    own_only = {n: (torch.zeros_like(v) if n.startswith(other) else v) for n, v in mask.items()}
    live, _ = masking.prune_inert(mm, mask, train, seed=seed)
    return {"acc_own_only": masking.accuracy(mm.forward_fn(own_only), test, 16),
            **{f"inert_{t}": kept(mask, t) - kept(live, t) for t in TASKS},
            "own_functional": own_share(live, task)}


def reference_accuracy(ckpts: dict[str, Path], arch: str, data: dict[str, Path],
                       eval_n: int, scramble: bool = False) -> dict[str, dict[str, float]]:
    """Test accuracy of each specialist alone and of the unmasked composite, on each task
    (with ``scramble``: task t's composite, the other network reading another problem)."""
    from core import masking
    model = composite(ckpts, arch)
    test = {t: _split(data[t], "test", eval_n) for t in TASKS}
    with torch.no_grad():
        out = {f"net_{t}": {u: masking.accuracy(model.nets[t], test[u], 16) for u in TASKS}
               for t in TASKS}
        out["composite"] = {t: masking.accuracy(
            composite(ckpts, arch, other_task(t) if scramble else None), test[t], 16)
            for t in TASKS}
    return out


def settings(cfg: Config, **over: Any) -> Settings:
    """The control's settings: the params' ``control`` section (``masks.workers`` processes),
    with the options given (not None) over them."""
    c = cfg.control
    base = Settings(n=c.n, milestone=c.milestone, tolerance=c.tolerance, seeds=tuple(c.seeds),
                    eval_n=c.eval_n, curve_n=c.curve_n, workers=cfg.masks.workers)
    return dataclasses.replace(base, **{k: v for k, v in over.items() if v is not None})


def prepare(cfg: Config, s: Settings, out: Path, progress: bool = True
            ) -> tuple[dict[str, Path], dict[str, Path]]:
    """The two task sets and the two trained specialists (reused when made with the same
    settings): ``(data, checkpoints)`` by task."""
    check(s)
    data = make_data(cfg, s, out, progress)
    return data, train_specialists(cfg, s, data, out, progress)


def prepared(cfg: Config, s: Settings, out: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """What :func:`prepare` made, checked to exist (the masks stage of the pipeline)."""
    name = f"{checkpoint_name(cfg.model.arch, s.milestone)}.pt"
    data = {t: out / "raven" / t for t in TASKS}
    ckpts = {t: out / "train" / t / name for t in TASKS}
    for t in TASKS:
        if not (data[t] / "control.json").is_file():
            raise ControlError(f"{data[t]}: the {t} task set is missing (run `python -m "
                               "core.control train` first, or `dvc repro control_train`)")
        if not ckpts[t].is_file():
            raise ControlError(f"{ckpts[t]}: the {t} specialist is missing (run `python -m "
                               "core.control train` first, or `dvc repro control_train`)")
    return data, ckpts


def make_masks(cfg: Config, s: Settings, out: Path, data: dict[str, Path],
               ckpts: dict[str, Path], t0: float | None = None) -> dict[str, Any]:
    """The composite's masks (``s.workers`` processes), ``out/control.json`` (the same bytes
    for the same params, whatever the worker count) and, beside it, ``out/timing.json`` (the
    seconds each mask and the whole took: :data:`TIMING`)."""
    check(s)
    t0 = time.perf_counter() if t0 is None else t0
    mc, alpha = mask_settings(cfg, s)
    jobs = [(ckpts, cfg.model.arch, data, mc, alpha, t, seed, s.eval_n, s.curve_n, out,
             s.scramble) for t in TASKS for seed in s.seeds]
    if s.workers > 1:
        with ProcessPoolExecutor(s.workers, mp_context=get_context("spawn")) as pool:
            done = list(pool.map(_mask_job, jobs))
    else:
        done = [_mask_job(j) for j in jobs]
    rows = [d["row"] for d in done]
    pairs = overlaps({(d["row"]["task"], d["row"]["seed"]): d["mask"] for d in done})
    result = {
        "profile": cfg.profile,
        "settings": {k: v for k, v in dataclasses.asdict(s).items() if k != "workers"},
        "masks": {**{k: getattr(mc, k) for k in CONTROL_MASK_KEYS}, "alpha": alpha},
        "reference": reference_accuracy(ckpts, cfg.model.arch, data, s.eval_n, s.scramble),
        "rows": rows, "iomin": pairs, "verdict": verdict(rows, pairs)}
    write_result(out / RESULT, result)
    write_json(out / TIMING, {
        "workers": s.workers, "seconds": round(time.perf_counter() - t0, 1),
        "masks": {f"{d['row']['task']}-s{d['row']['seed']}": d["seconds"] for d in done}})
    return result


def run(params: str | Path, out: str | Path, s: Settings, profile: str | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Everything: task sets, specialists, masks, ``control.json``."""
    check(s)
    cfg = load(params, profile)
    out = Path(out)
    t0 = time.perf_counter()
    data, ckpts = prepare(cfg, s, out, progress)
    return make_masks(cfg, s, out, data, ckpts, t0)


# each numeric option and the parameter whose validation (type, finiteness, bounds, plausible
# range: core.config.check_field) it shares with the pipeline
OPTION_KEYS = {"n": "control.n", "tolerance": "control.tolerance",
               "seeds": "control.seeds", "steps": "masks.steps", "lr": "masks.lr",
               "alpha": "masks.alpha", "readout": "masks.readout",
               "noise_anneal": "masks.noise_anneal", "eval_n": "control.eval_n",
               "curve_n": "control.curve_n", "workers": "masks.workers"}


def validate_options(args: argparse.Namespace) -> None:
    """The options through the pipeline's settings validation before anything runs (the
    params' ``outside_range`` allows the same keys here)."""
    cfg = load(args.params, args.profile)
    for dest, key in OPTION_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            check_field(key, value, f"--{dest.replace('_', '-')}", cfg.outside_range)
    if args.milestone is not None:
        check_field("control.milestone", args.milestone, "--milestone", cfg.outside_range)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.control", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    helps = {"run": "task sets, specialists, composite masks -> control.json",
             "train": "the task sets and the two specialists (the pipeline's control_train)",
             "masks": "the composite's masks -> control.json (the pipeline's control stage)"}
    for cmd, text in helps.items():
        r = sub.add_parser(cmd, help=text, description=text + "; every option defaults to the "
                           "params' control section (masks.* for the mask settings)")
        r.add_argument("--params", default="params.yaml")
        r.add_argument("--profile", default=None)
        r.add_argument("--out", default="data/control")
        r.add_argument("--n", type=int, default=None, help="problems per task set")
        r.add_argument("--milestone", type=float, default=None,
                       help="specialists' validation accuracy (%%)")
        r.add_argument("--tolerance", type=float, default=None)
        r.add_argument("--seeds", type=int, nargs="+", default=None)
        r.add_argument("--steps", type=int, default=None, help="mask steps (default: masks.steps)")
        r.add_argument("--lr", type=float, default=None, help="mask lr (default: masks.lr)")
        r.add_argument("--alpha", type=float, default=None, help="default: masks.alpha")
        r.add_argument("--readout", type=float, default=None,
                       help="read-out logit threshold (default: masks.readout)")
        r.add_argument("--noise-anneal", type=float, default=None,
                       help="last fraction of the run whose sampling noise falls to 0 "
                       "(default: masks.noise_anneal)")
        r.add_argument("--eval-n", type=int, default=None, help="test problems per task")
        r.add_argument("--curve-n", type=int, default=None,
                       help="validation problems per task for the mask curves")
        r.add_argument("--workers", type=int, default=None)
        r.add_argument("--no-progress", action="store_true")
        r.add_argument("--plain", action="store_true", help="the plain composite (both networks "
                       "read the problem), whose truth does not hold: for comparison only")
    args = ap.parse_args(argv)
    try:
        validate_options(args)
        cfg = load(args.params, args.profile)
        s = settings(cfg, n=args.n, milestone=args.milestone, tolerance=args.tolerance,
                     seeds=tuple(args.seeds) if args.seeds else None, steps=args.steps,
                     lr=args.lr, alpha=args.alpha, readout=args.readout,
                     noise_anneal=args.noise_anneal, eval_n=args.eval_n,
                     curve_n=args.curve_n, workers=args.workers, scramble=not args.plain)
        out, progress = Path(args.out), not args.no_progress
        if args.cmd == "train":
            prepare(cfg, s, out, progress)
            return 0
        if args.cmd == "masks":
            result = make_masks(cfg, s, out, *prepared(cfg, s, out))
        else:
            result = run(args.params, out, s, args.profile, progress)
        print(summary_text(result))
    except (ControlError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
