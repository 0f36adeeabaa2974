"""Test-only builders: the inputs of the metrics stage (mask files, evals.nc, training.nc and
checkpoint files) in the layout of docs/architecture.md, with planted structure, so that the
metrics, figures and paper tests run the real code paths on data whose answers are known.

Planted truths (per network, checkpoint, alpha):
* every mask keeps a shared core; a task's mask adds its task part and a little seed noise;
* ``original`` task parts are tiny (modules indistinguishable from reruns), ``control`` task
  parts are large and disjoint (distinct modules);
* density falls from the first to the last checkpoint (sparsity trend);
* the selective ablation costs ``control`` tasks their own set only (specific), ``original``
  tasks every set alike; the inverted ablation of ``original`` masks is degenerate;
* the complement mask of a ``control`` task loses that task's set only.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import yaml

from core import metrics
from core.config import Config, alpha_label, compose, from_dict, train_hash
from core.formats import evals
from core.formats import training as training_log
from core.formats.masks import ACCURACY_KEYS, FORMAT, fingerprint, save_mask
from core.io import atomic_write_bytes, file_sha256
from core.tasks import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
PARAMS = (("vision.conv.weight", (8, 1, 3, 3)), ("vision.conv.bias", (8,)),
          ("attribute.fc.weight", (12, 16)), ("relation.fc.weight", (10, 12)),
          ("logit.weight", (1, 10)))
N = sum(int(np.prod(s)) for _, s in PARAMS)
# Small enough for fast tests, large enough for intervals across networks and a trend.
SMALL = {"networks": (0, 1, 2), "seeds": (0, 1), "train": {"milestones": [20.0, 30.0]}}


def params(networks: Sequence[int] = (0, 1, 2), seeds: Sequence[int] = (0, 1),
           profile: str = "ci", **sections) -> dict:
    """The ``profile`` parameters (composed from conf/) with ``networks`` and mask ``seeds``
    replaced and any ``section={key: value}`` overrides."""
    d = compose(profile)
    d["train"]["networks"] = list(networks)
    d["masks"]["seeds"] = list(seeds)
    for sec, over in sections.items():
        d[sec].update(over)
    return d


def config(*args, **kw) -> Config:  # noqa: D401
    """:func:`params` validated."""
    return from_dict(params(*args, **kw))


def write_params(path: Path, *args, **kw) -> Path:
    """:func:`params` as a flat params file for the command lines."""
    path.write_text(yaml.safe_dump(params(*args, **kw), sort_keys=False))
    return path


def _sets(families: Sequence[str]) -> list[str]:
    """Every task of each family; complement and reference masks for the control family only
    (the original family then has no complement protocol: fewer files, both code paths)."""
    out = []
    for f in families:
        fam = FAMILIES[f]
        out += fam.tasks
        if f == "control":
            out += [*(fam.complements[t] for t in fam.tasks), fam.reference]
    return list(dict.fromkeys(out))


def _mask(rng, net_core, part, density_noise):
    return net_core | part | (rng.random(N) < density_noise)


def write_inputs(root: Path, cfg: Config, families: Sequence[str] = ("original", "control"),
                 alphas: Sequence[float] = (1e-5, 3e-5), unconverged: int = 1,
                 rng_seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/masks`` and ``root/train`` for ``cfg`` (networks, checkpoints, seeds);
    ``unconverged`` mask files per checkpoint folder are flagged not converged. Returns the
    two folders."""
    masks, train = root / "masks", root / "train"
    rng = np.random.default_rng(rng_seed)
    sets = _sets(families)
    names = [n for n, _ in PARAMS]
    shapes = [list(s) for _, s in PARAMS]
    cks = cfg.checkpoints
    for net in cfg.train.networks:
        write_training(train / f"net{net}", cfg, net)
        for c, ck in enumerate(cks):
            density = 0.6 - 0.3 * c + 0.01 * net
            core = rng.random(N) < density * 0.6
            parts = {}
            for s in sets:
                big = s in FAMILIES["control"].sets
                parts[s] = (rng.random(N) < (0.25 if big else 0.01)) & ~core
            keys, flagged = [], 0
            for s in sets:
                for a in alphas:
                    for seed in cfg.masks.seeds:
                        r = np.random.default_rng([rng_seed, net, c, seed, len(keys)])
                        flat = _mask(r, core, parts[s], 0.02 * (1 + 1e5 * a))
                        conv = not (flagged < unconverged and seed == cfg.masks.seeds[-1]
                                     and a == alphas[-1])
                        flagged += not conv
                        key = f"{s}-a{alpha_label(a)}-s{seed}"
                        _write_mask(masks / f"net{net}" / ck / f"{key}.pt", flat, names, shapes,
                                    net=net, ck=ck, task=s, alpha=a, seed=seed, conv=conv)
                        keys.append((key, s, a))
            write_evals(masks / f"net{net}" / ck / "evals.nc", keys, sets, net, c)
    return masks, train


def _write_mask(path, flat, names, shapes, *, net, ck, task, alpha, seed, conv):
    sizes = [int(np.prod(s)) for s in shapes]
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    mask = {n: torch.from_numpy(p.reshape(s).copy()) for n, p, s in zip(names, parts, shapes)}
    logits = {n: torch.where(m, 1.0, -1.0).float() for n, m in mask.items()}
    steps = list(range(0, 101, 20))
    dens = 100 * float(flat.mean())
    snap = "relation.fc.weight"
    fam = next(f for f, fm in FAMILIES.items() if task in fm.sets)
    save_mask(path, {
        "format": FORMAT, "checkpoint": ck, "task": task, "alpha": float(alpha),
        "seed": int(seed), "steps": 100, "arch": "scl", "image_size": 32,
        "model_fingerprint": fingerprint(names, shapes), "names": names, "shapes": shapes,
        "mask": mask, "logits": logits, "accuracy": {k: 50.0 for k in ACCURACY_KEYS},
        "curve": {"step": steps, "loss": [2.0 / (1 + s) for s in steps],
                  "task_acc": [60.0 + s / 10 for s in steps],
                  "density": [100 - (100 - dens) * s / 100 for s in steps]},
        "snapshots": {"param": snap, "steps": [0, 50, 100],
                      "logits": torch.stack([logits[snap] * k for k in (0.1, 0.5, 1.0)])},
        "network": int(net), "family": fam, "converged": bool(conv),
        "convergence": {"density_change": 0.2 if conv else 3.0, "acc_change": 0.1,
                        "window_start": 80, "window_end": 100},
        "settings": {"steps": 100},
    })


def write_evals(path: Path, keys: list[tuple[str, str, float]], sets: list[str], net: int,
                c: int) -> None:
    """evals.nc of one checkpoint folder: dims mask, variant, eval_set, split."""
    full = 55.0 + 15 * c + 1.0 * net + np.zeros((len(sets), 2))
    acc = np.zeros((len(keys), 3, len(sets), 2))
    deg = np.zeros_like(acc)
    n = np.full(acc.shape, 400.0)
    for i, (_, s, a) in enumerate(keys):
        control = s in FAMILIES["control"].sets
        for j, e in enumerate(sets):
            f = full[j, 0]
            acc[i, 0, j] = f - 1 - 1e5 * a + 0.3 * net  # model * mask
            # inverted; original: degenerate (norm masked), its accuracy not reported (NaN,
            # as core.masking.evaluate_group writes it)
            own = e == s
            # (core.sweep.eval_plan: the inverted mask on its own set only)
            acc[i, 1, j] = np.nan if not own else 20.0 if control else np.nan
            deg[i, 1, j] = np.nan if not own else 0.2 if control else 1.0
            n[i, 1, j] = 400.0 if own else 0.0
            acc[i, 2, j] = f - (30 if own else 2) if control else f - 5 - 0.5 * net
            comp = {fm.complements[t]: t for fm in FAMILIES.values() for t in fm.tasks}
            if control and comp.get(s) == e:             # complement mask loses its task
                acc[i, 0, j] = 0.5 * f
    path.parent.mkdir(parents=True, exist_ok=True)
    evals.write(path, evals.dataset(
        [k for k, _, _ in keys], sets, acc, deg, n.astype(np.int64), np.zeros(acc.shape[:2]),
        full, np.zeros_like(full), tol=1e-4, degenerate_max=0.5))


def write_training(d: Path, cfg: Config, net: int) -> None:
    """training.nc and tiny checkpoint files whose sha256 the log records."""
    d.mkdir(parents=True, exist_ok=True)
    cks, ms = cfg.checkpoints, list(cfg.train.milestones)
    shas = []
    for ck in cks:  # real checkpoints are kept (and hashed), placeholders written otherwise
        path = d / f"{ck}.pt"
        shas.append(file_sha256(path if path.exists() else
                                atomic_write_bytes(path, f"{ck}-{net}".encode())))
    steps = np.arange(1, 41)
    vs = np.arange(5, 41, 5)
    # network 1 was re-initialised once at chance (core.train.restart); the others have no
    # restart attributes, as logs written before restarts existed
    history = SimpleNamespace(
        loss=2.0 * np.exp(-steps / 20), acc=12.5 + 2 * steps, log_epoch=np.zeros(len(steps)),
        lr=np.ones(len(steps)), val_steps=vs, val_acc=12.5 + 2 * vs - net,
        val_epoch=np.zeros(len(vs)), rewinds=[], restarts=[[40, 13.0]] if net == 1 else [],
        reached={float(m): {"step": 10 * (i + 1), "epoch": 0, "val_acc": m + 0.5 + 0.2 * net,
                            "sha256": sha} for i, (m, sha) in enumerate(zip(ms, shas))})
    facts = {"train_hash": train_hash(cfg), "network": net,
             **({"init_seed": 123456, "restarts": 1} if net == 1 else {})}
    training_log.write(d / training_log.LOG, history, ms, cks,
                       {float(m): m - 1.0 for m in ms}, cfg.train.milestone_tolerance, facts)


_CACHE: dict[str, Path] = {}


def built_metrics() -> tuple[Path, Config, Path]:
    """(metrics folder, config, params file) of one synthetic run, built once per test process
    (metrics, figures and paper tests share it; callers must not modify the files). The
    config is the one the metrics were made with, composed once (conf/ may change meanwhile)."""
    if "dir" not in _CACHE:
        root = Path(tempfile.mkdtemp(prefix="modules-avr-syn-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        cfg = config(**SMALL)
        masks, train = write_inputs(root, cfg)
        metrics.run(masks, train, write_params(root / "params.yaml", **SMALL), root / "metrics",
                    progress=False)
        _CACHE.update(dir=root, cfg=cfg)
    root = _CACHE["dir"]
    return root / "metrics", _CACHE["cfg"], root / "params.yaml"
