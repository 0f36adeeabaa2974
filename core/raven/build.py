"""``python -m core.raven build``: the data set of a profile, in the layout of
``docs/architecture.md``::

    <out>/main/{train,val,test}/<configuration>.npz           all problems of the profile
    <out>/tasks/<set>/{train,val,test}/<configuration>.npz    every set of ``data.families``
                                                              (``core.tasks.SET_SPECS``)
    <out>/tasks/{light,dark}/{train,val,test}/<configuration>.npz  light / dark colours only

Generated (``data.public_dir: null``): ``data.n_per_config`` problems per configuration for
``main``; ``data.task_n`` problems per set of every family in ``data.families`` (tasks,
complements, references), spread evenly over the configurations; each split 6/2/2 by problem
index. The light and dark colour subsets (the
original study's other task sets; here drawn by the ``problem_instances`` figure) get
``data.task_n`` problems each too. Task sets are generated directly with the
subset's constrained domains (never by rejection from the full distribution), so even
configurations where a subset is rare get their share.

From public data (``data.public_dir`` set): the per-problem files of the listed configurations
are packed into the same shards (panels block-averaged to ``data.image_size``), and the task
sets are the problems selected by their shape metadata (our ``attrs`` or the RAVEN ``.xml``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np

from core.config import Config
from core.raven.attributes import COLOR_SUBSETS, Subset, SubsetError
from core.raven.generate import Job, check_subset, run_jobs, validate
from core.raven.store import (
    SPLITS,
    RavenFileError,
    check_out_dir,
    load_npz,
    public_files,
    shapes_from_attrs,
    shapes_from_xml,
    split_ranges,
    staged_dir,
    task_mask,
    write_shard,
)
from core.tasks import ALL, FAMILIES, SET_SPECS, SHAPES


def task_sets(families: list[str] | tuple[str, ...] = tuple(FAMILIES)
              ) -> list[tuple[str, Subset]]:
    """``(folder name, subset)`` of every set of ``families`` (``core.tasks``)."""
    names = dict.fromkeys(s for f in families for s in FAMILIES[f].sets)
    return [(name, Subset(**SET_SPECS[name])) for name in names]


def colour_sets() -> list[tuple[str, Subset]]:
    """``(folder name, subset)`` of the light and dark colour subsets (generated data only)."""
    return [(c, Subset(color=c)) for c in COLOR_SUBSETS]


def spread(n: int, k: int) -> list[int]:
    """``n`` problems over ``k`` configurations, as evenly as possible (earlier ones first)."""
    return [n // k + (i < n % k) for i in range(k)]


def plan(cfg: Config) -> list[tuple[str, Job]]:
    """Every shard to generate: (path relative to the output folder, job)."""
    d = cfg.data
    out = []

    def add(folder: str, subset: Subset, configuration: str, n: int) -> None:
        for split, (a, b) in split_ranges(n).items():
            if b > a:
                out.append((f"{folder}/{split}/{configuration}.npz",
                            Job(configuration, subset, a, b, cfg.seed, d.image_size, d.answers)))

    for c in d.configs:
        add("main", Subset(), c, d.n_per_config)
    for name, subset in task_sets(d.families):
        configs = [c for c in d.configs if subset_exists(c, subset)]
        for c, n in zip(configs, spread(d.task_n, len(configs))):
            add(f"tasks/{name}", subset, c, n)
    for name, subset in colour_sets():  # only where the subset exists (fixed-colour frames)
        configs = [c for c in d.configs if subset_exists(c, subset)]
        for c, n in zip(configs, spread(d.task_n, len(configs))):
            add(f"tasks/{name}", subset, c, n)
    return out


class DataSizeError(ValueError):
    """A data set too small for the stages that read it (named by parameter and set)."""


def split_counts(n: int, k: int) -> dict[str, int]:
    """Problems per split when ``n`` are spread over ``k`` configurations."""
    out = dict.fromkeys(SPLITS, 0)
    for m in spread(n, k):
        for split, (a, b) in split_ranges(m).items():
            out[split] += b - a
    return out


def check_sizes(cfg: Config) -> None:
    """Stop in the data stage when a later stage could not use the data: every set needs val
    problems (selection) and test problems (reports), the training set a full
    ``train.batch_size``, every task-family set a full ``masks.batch_size`` of train problems
    (its masks train on it)."""
    d = cfg.data

    def need(n: int, k: int, key: str, what: str, train_min: int, train_key: str,
             per_config: bool = False) -> None:
        def split_counts_of(m: int) -> dict[str, int]:
            return split_counts(m * k if per_config else m, k)

        counts = split_counts_of(n)
        short = [f"{counts[s]} {s}" for s in ("val", "test") if counts[s] < 1]
        if counts["train"] < train_min:
            short.append(f"{counts['train']} train (< {train_key} {train_min})")
        if short:
            low = next(m for m in range(n, 100 * n + 1000)
                       if (c := split_counts_of(m))["val"] >= 1 and c["test"] >= 1
                       and c["train"] >= train_min)
            where = "per configuration" if per_config else f"over {k} configuration(s)"
            raise DataSizeError(
                f"{key}: {n} problems {where} leave {what} with "
                f"{', '.join(short)} problems (split 6/2/2 per configuration); "
                f"{key} must be at least {low}")

    need(d.n_per_config, len(d.configs), "data.n_per_config", "the main set",
         cfg.train.batch_size, "train.batch_size", per_config=True)
    for name, subset in task_sets(d.families):
        k = sum(subset_exists(c, subset) for c in d.configs)
        if k == 0:
            raise DataSizeError(f"data.configs: no configuration of {', '.join(d.configs)} "
                                f"can hold set {name!r} (data.families)")
        need(d.task_n, k, "data.task_n", f"set {name!r}", cfg.masks.batch_size,
             "masks.batch_size")


def subset_exists(configuration: str, subset: Subset) -> bool:
    """Whether every component of ``configuration`` allows ``subset`` (e.g. a dark subset
    does not exist where an outer frame is always white)."""
    try:
        check_subset(configuration, subset)
    except SubsetError:
        return False
    return True


def made_from(cfg: Config) -> dict:
    """What a built folder was made from (recorded in its marker file); not the worker
    count, which changes no byte of the problems."""
    data = {k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "workers"}
    return {"command": "build", "profile": cfg.profile, "seed": cfg.seed, "data": data}


def build(cfg: Config, out: str | Path, force: bool = False, progress: bool = True) -> Path:
    """Build the data set of ``cfg`` into ``out`` (atomically: all or nothing)."""
    out = check_out_dir(out, force)
    if cfg.data.public_dir is not None:
        return build_public(cfg, out, force, progress)
    check_sizes(cfg)
    jobs = plan(cfg)
    for _, job in jobs:
        validate(job.configuration, job.subset, job.size, job.answers, job.stop - job.start)
    paths = {id(job): rel for rel, job in jobs}
    with staged_dir(out, force, made_from(cfg)) as tmp:
        for job, arrays in run_jobs([j for _, j in jobs], cfg.data.workers, progress, "build",
                                    concat=False):  # streamed into the shard: no 2nd copy
            write_shard(tmp / paths[id(job)], arrays, job.configuration, cfg.data.mmap)
    return out


def _downsample(image: np.ndarray, size: int, path: Path) -> np.ndarray:
    h = image.shape[-1]
    if h == size:
        return image
    if h % size:
        raise RavenFileError(f"{path}: panels of {h} px cannot be block-averaged to "
                             f"data.image_size {size} (expected a divisor of {h})")
    f = h // size
    blocks = image.reshape(*image.shape[:-2], size, f, size, f).astype(np.float32)
    return np.rint(blocks.mean(axis=(-3, -1))).astype(np.uint8)


def build_public(cfg: Config, out: Path, force: bool, progress: bool) -> Path:
    """Pack the public per-problem files of ``cfg.data.public_dir`` and select task sets."""
    root = Path(cfg.data.public_dir)  # type: ignore[arg-type]
    generated_only = [f for f in cfg.data.families if f != "original"]
    if generated_only:
        raise RavenFileError(f"data.families: {', '.join(generated_only)} can only be generated "
                             f"(their rule regimes are not selectable from public files); "
                             f"use families: [original] with data.public_dir")
    if not root.is_dir():
        raise RavenFileError(f"data.public_dir: {root} is not a folder")
    with staged_dir(out, force, made_from(cfg)) as tmp:
        for split in SPLITS:
            files = [f for f in public_files(root, split) if f.parent.name in cfg.data.configs]
            if not files:
                raise RavenFileError(f"data.public_dir: {root} has no {split} problems of "
                                     f"configurations {', '.join(cfg.data.configs)}")
            by_cfg: dict[str, list[Path]] = defaultdict(list)
            for f in files:
                by_cfg[f.parent.name].append(f)
            for c, fs in by_cfg.items():
                image, target, shapes = [], [], []
                for f in fs:
                    z = load_npz(f)
                    image.append(_downsample(z["image"], cfg.data.image_size, f))
                    target.append(int(z["target"]))
                    if "attrs" in z:
                        shapes.append(shapes_from_attrs(z["attrs"]))
                    elif f.with_suffix(".xml").exists():
                        shapes.append(shapes_from_xml(f.with_suffix(".xml")))
                    else:
                        raise RavenFileError(f"{f}: no shape metadata (expected 'attrs' in the "
                                             f"file or {f.with_suffix('.xml').name} beside it)")
                arrays = {"image": np.stack(image), "target": np.array(target, np.int64),
                          "shapes": np.stack(shapes),
                          "index": np.array([int(f.stem.split("_")[1]) for f in fs], np.int64)}
                write_shard(tmp / "main" / split / f"{c}.npz", arrays, c, cfg.data.mmap)
                write_shard(tmp / "tasks" / ALL / split / f"{c}.npz", arrays, c, cfg.data.mmap)
                for name in (n for s in SHAPES for n in (s, f"not_{s}")):
                    keep = task_mask(arrays["shapes"], name)
                    if keep.any():
                        sub = {key: v[keep] for key, v in arrays.items()}
                        write_shard(tmp / "tasks" / name / split / f"{c}.npz", sub, c,
                                    cfg.data.mmap)
    return out
