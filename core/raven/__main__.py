"""Command line of the problem generator.

    python -m core.raven generate --out DIR --configs a,b --n N --seed S --workers W
                                  [--size 80] [--answers iraven|raven]
                                  [--shape X | --exclude-shape X] [--color-subset light|dark]
                                  [--size-subset small|big] [--set NAME]
                                  [--layout shards|public] [--mmap] [--force]
    python -m core.raven build --params params.yaml --out data/raven [--force]
    python -m core.raven show FILE [--index I] [--png OUT]
    python -m core.raven check FILE

``generate`` makes ``N`` problems per configuration, split 6/2/2 train/val/test, as packed
shards ``DIR/<split>/<configuration>.npz`` (read by ``core.data.RavenDataset(DIR, split)``) or
per-problem files ``DIR/<configuration>/RAVEN_<i>_<split>.npz`` (the public RAVEN layout).
``--set NAME`` generates one task-family set of ``core.tasks`` (e.g. ``rule_circle``) instead of
the subset options; ``--mmap`` stores the panels uncompressed (memory-mapped by the loader).
``--force`` replaces only a folder ``core.raven`` made.
Every bad argument stops with one error naming it; the output folder appears only complete.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from core.config import CONFIGURATIONS, ConfigError, load
from core.io import atomic_path
from core.raven.answers import ANSWER_SETS, AnswerSetError
from core.raven.attributes import COLOR_SUBSETS, SIZE_SUBSETS, Subset, SubsetError
from core.raven.build import build
from core.raven.check import check_file
from core.raven.configurations import ConfigurationError, components
from core.raven.generate import Job, public_meta, run_jobs, validate
from core.raven.render import SizeError
from core.raven.store import (
    OutDirError,
    RavenFileError,
    load_npz,
    split_ranges,
    staged_dir,
    write_problems,
    write_shard,
)
from core.tasks import SET_SPECS, SHAPES

ERRORS = (ConfigError, ConfigurationError, SubsetError, SizeError, AnswerSetError, OutDirError,
          RavenFileError, ValueError)


def generate(out: str | Path, configs: list[str], n: int, seed: int = 0, workers: int = 1,
             size: int = 80, answers: str = "iraven", subset: Subset | None = None,
             layout: str = "shards", force: bool = False, progress: bool = True,
             mmap: bool = False) -> Path:
    """Generate ``n`` problems per configuration into ``out`` (see the module docstring)."""
    subset = subset or Subset()
    if not configs:
        raise ConfigurationError("--configs: expected at least one configuration")
    if layout not in ("shards", "public"):
        raise ValueError(f"--layout: expected shards or public, got {layout!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed: expected a non-negative integer, got {seed!r}")
    for c in configs:
        validate(c, subset, size, answers, n)
    if workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {workers!r}")
    jobs = [(split, Job(c, subset, a, b, seed, size, answers))
            for c in configs for split, (a, b) in split_ranges(n).items() if b > a]
    splits = {id(j): s for s, j in jobs}
    about = {"command": "generate", "configs": list(configs), "n": n, "seed": seed,
             "size": size, "answers": answers, "subset": subset.label, "layout": layout,
             "mmap": mmap}
    with staged_dir(out, force, about) as tmp:
        for job, arrays in run_jobs([j for _, j in jobs], workers, progress, "generate",
                                    concat=layout == "public"):  # shards are streamed
            split = splits[id(job)]
            if layout == "shards":
                write_shard(tmp / split / f"{job.configuration}.npz", arrays, job.configuration,
                            mmap)
            else:
                comps = components(job.configuration, subset)
                metas = [public_meta(job.configuration, comps, r) for r in arrays["rules"]]
                public = {k: [m[k] for m in metas] for k in metas[0]}
                write_problems(tmp, arrays, job.configuration, split, public)
    return Path(out)


def show(path: str | Path, index: int = 0, png: str | Path | None = None) -> Path:
    """Write a PNG of one problem: the 3x3 context (last cell '?') and the 8 candidates, the
    correct one framed."""
    import matplotlib  # here: 2.1 s of import (measured, loaded machine) only `show` needs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    z = load_npz(path)
    image, target = z["image"], z["target"]
    if image.ndim == 4:
        if not 0 <= index < len(image):
            raise ValueError(f"--index: {path} holds {len(image)} problems, got {index}")
        image, target = image[index], target[index]
    png = Path(png) if png else path.with_name(f"{path.stem}_{index}.png")
    fig, axes = plt.subplots(5, 4, figsize=(6, 7.5), gridspec_kw={"hspace": 0.15})
    for ax in axes.flat:
        ax.set_axis_off()
    for i in range(9):
        ax = axes[i // 3, i % 3]
        if i < 8:
            ax.imshow(image[i], cmap="gray", vmin=0, vmax=255)
        else:
            ax.text(0.5, 0.5, "?", ha="center", va="center", fontsize=24)
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
    for k in range(8):
        ax = axes[3 + k // 4, k % 4]
        ax.imshow(image[8 + k], cmap="gray", vmin=0, vmax=255)
        ax.set_title(str(k), fontsize=8, pad=2)
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        if k == int(target):
            for side in ax.spines.values():
                side.set_color("red")
                side.set_linewidth(2.5)
    fig.suptitle(f"{path.name} #{index}: answer {int(target)}", fontsize=9)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return png


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core.raven", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="generate problems")
    g.add_argument("--out", required=True)
    g.add_argument("--configs", type=_csv, default=list(CONFIGURATIONS),
                   help=f"comma-separated, of: {', '.join(CONFIGURATIONS)}")
    g.add_argument("--n", type=int, required=True, help="problems per configuration")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--workers", type=int, default=1)
    g.add_argument("--size", type=int, default=80, help="panel size in pixels (multiple of 16)")
    g.add_argument("--answers", default="iraven", help=f"one of {', '.join(ANSWER_SETS)}")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--shape", help=f"every entity of this shape ({', '.join(SHAPES)})")
    x.add_argument("--exclude-shape", help="no entity of this shape")
    g.add_argument("--color-subset", help=f"one of {', '.join(COLOR_SUBSETS)}")
    g.add_argument("--size-subset", help=f"one of {', '.join(SIZE_SUBSETS)}")
    g.add_argument("--set", dest="set_name", default=None,
                   help="a task-family set of core.tasks (e.g. rule_circle, color_rule)")
    g.add_argument("--layout", default="shards", choices=("shards", "public"))
    g.add_argument("--mmap", action="store_true", help="panels uncompressed (memory-mapped)")
    g.add_argument("--force", action="store_true", help="replace a non-empty --out")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    b = sub.add_parser("build", help="build the data set of a profile (docs/architecture.md)")
    b.add_argument("--params", default="params.yaml")
    b.add_argument("--profile", default=None)
    b.add_argument("--out", default="data/raven")
    b.add_argument("--force", action="store_true")
    b.add_argument("--quiet", action="store_true")
    s = sub.add_parser("show", help="write a PNG of a problem")
    s.add_argument("file")
    s.add_argument("--index", type=int, default=0, help="problem of a shard")
    s.add_argument("--png", default=None, help="output (default: FILE_<index>.png)")
    c = sub.add_parser("check", help="re-check stored problems with the independent checker")
    c.add_argument("file")
    return ap


def _generate(args: argparse.Namespace) -> None:
    subset = Subset(args.shape, args.exclude_shape, args.color_subset, args.size_subset)
    if args.set_name is not None:
        if subset != Subset():
            raise SubsetError("--set: give either --set or the subset options")
        if args.set_name not in SET_SPECS:
            raise SubsetError(f"--set: unknown set {args.set_name!r} (expected one of "
                              f"{', '.join(SET_SPECS)})")
        subset = Subset(**SET_SPECS[args.set_name])
    out = generate(args.out, args.configs, args.n, args.seed, args.workers, args.size,
                   args.answers, subset, args.layout, args.force, not args.quiet, args.mmap)
    print(f"wrote {out}")


def _check(file: str) -> int:
    """Every stored problem re-checked: 1 when any has not exactly its target passing."""
    bad = 0
    z_targets = np.atleast_1d(load_npz(file)["target"])
    for i, (ok, t) in enumerate(zip(check_file(file), z_targets)):
        good = ok.sum() == 1 and ok[int(t)]
        bad += not good
        print(f"{i}: passing {np.flatnonzero(ok).tolist()} target {int(t)}"
              f"{'' if good else '  <- INVALID'}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.cmd == "generate":
            _generate(args)
        elif args.cmd == "build":
            cfg = load(args.params, args.profile)
            out = build(cfg, args.out, args.force, not args.quiet)
            print(f"wrote {out} (profile {cfg.profile})")
        elif args.cmd == "show":
            print(f"wrote {show(args.file, args.index, args.png)}")
        else:
            return _check(args.file)
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
