"""Ablations per task family: for each variant (model x mask = module only, model x (1 - mask)
= module removed, selective = the task-specific part removed) a task x evaluated-set matrix of
report-split accuracy, mean ± CI half-width across networks (mask seeds nested), converged
masks at the selected alpha; degenerate evaluations (constant logits on more than
masks.degenerate_max of the problems) are hatched and show no accuracy; pairs not evaluated
(the inverted mask off its own set, ``core.sweep.eval_plan``) read "n.e.". ``complement``: the
complement protocol's relative drop on the task vs on the family's other tasks."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np

from core.tasks import FAMILIES
from figures import style
from figures.inputs import Inputs, across_networks, at_selected, converged

NAME = "ablation"
NEEDS = ("ablation", "modules", "summary")
OUTPUTS = tuple(f"ablation_{f}" for f in FAMILIES) + ("complement",)
VARIANTS = (("mask", "model × mask"), ("inverted", "model × (1 − mask)"),
            ("selective", "task-specific part removed"))


def build(inp: Inputs, out: Path) -> list[Path]:
    _ = inp.summary  # fail before drawing when summary.json is missing or stale
    paths = []
    for fam in FAMILIES:
        paths += _matrices(inp, out, fam)
    return paths + _complement(inp, out)


def _matrices(inp: Inputs, out: Path, fam: str) -> list[Path]:
    ab, md = inp["ablation"], inp["modules"]
    tasks = inp.tasks(fam)
    cks = [str(c) for c in ab["checkpoint"].values]
    fs = inp.cfg.figures.font_size
    fig, axes = style.figure(inp.cfg.figures, "two", 1.2 + 1.6 * len(VARIANTS),
                             nrows=len(VARIANTS), ncols=len(cks), squeeze=False)
    if not tasks:
        fig.suptitle(f"family {fam}: no masks in this run (masks.families)", fontsize=fs)
        for ax in axes.ravel():
            ax.axis("off")
        return style.save(fig, out, f"ablation_{fam}")
    sets = [s for s in FAMILIES[fam].eval_sets if s in ab["eval_set"].values]
    rep = ab.sel(split="report", task=tasks, eval_set=sets)
    dmax = inp.cfg.masks.degenerate_max
    norm, cmap = mpl.colors.Normalize(0, 100), mpl.colormaps["viridis"]
    for i, (variant, label) in enumerate(VARIANTS):
        acc = converged(rep["accuracy"].sel(variant=variant), md)
        deg = converged(rep["degenerate"].sel(variant=variant), md)
        bad = deg.mean(["network", "seed"], skipna=True) > dmax
        # pairs the evaluation plan skips (core.sweep.eval_plan: the inverted mask on the own
        # set only) are marked, not left looking like missing data
        n = at_selected(rep["n_problems"], md, "ablation.nc n_problems").fillna(0).max(
            ["network", "seed"])
        skipped = (n.sel(variant=variant) == 0) & (n.sel(variant="mask") > 0)
        st = across_networks(acc.where(deg <= dmax), inp.level)
        for j, ck in enumerate(cks):
            ax = axes[i, j]
            m = st["mean"].sel(checkpoint=ck).transpose("task", "eval_set").values
            half = (st["upper"] - st["mean"]).sel(checkpoint=ck).transpose(
                "task", "eval_set").values
            b = bad.sel(checkpoint=ck).transpose("task", "eval_set").values
            skip = skipped.sel(checkpoint=ck).transpose("task", "eval_set").values
            ax.imshow(np.where(b, np.nan, m), cmap=cmap, norm=norm, aspect="auto")
            _annotate(ax, m, half, b, skip, fs)
            ax.set_xticks(range(len(sets)), sets if i == len(VARIANTS) - 1 else [""] * len(sets),
                          rotation=45, ha="right", fontsize=fs - 2)
            ax.set_yticks(range(len(tasks)), tasks if j == 0 else [""] * len(tasks),
                          fontsize=fs - 2)
            if i == 0:
                ax.set_title(style.checkpoint_label(ck, float(ab["milestone"][j])))
            if j == 0:
                ax.set_ylabel(f"{label}\nmask of task")
    fig.supxlabel("evaluated set (report split)", fontsize=fs)
    fig.suptitle(f"family {fam}: accuracy (%) after ablation, mean ± {100 * inp.level:g}% CI "
                 "half-width across networks; hatched: degenerate (not reported); "
                 "n.e.: not evaluated",
                 fontsize=fs - 1)
    return style.save(fig, out, f"ablation_{fam}")


def _annotate(ax: mpl.axes.Axes, m: np.ndarray, half: np.ndarray, bad: np.ndarray,
              skip: np.ndarray, fs: float) -> None:
    """Each cell's text: mean +- half-width, or why there is none (degenerate: hatched,
    not evaluated)."""
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            if bad[r, c]:
                ax.add_patch(mpl.patches.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False,
                                                   hatch=style.DEGENERATE_HATCH, lw=0,
                                                   color="0.5"))
                ax.text(c, r, "deg.", ha="center", va="center", fontsize=fs - 2.5)
            elif skip[r, c]:
                ax.text(c, r, "n.e.", ha="center", va="center", fontsize=fs - 3.5, color="0.5")
            elif np.isfinite(m[r, c]):
                pm = f"\n±{half[r, c]:.0f}" if np.isfinite(half[r, c]) else ""
                ax.text(c, r, f"{m[r, c]:.0f}{pm}", ha="center", va="center",
                        fontsize=fs - 3, color="white" if m[r, c] < 55 else "black")


def _complement(inp: Inputs, out: Path) -> list[Path]:
    """Per family: each task's relative drop on its own set (colour of the task) beside the
    family's mean drop on the other tasks (grey), per checkpoint, mean ± CI across networks."""
    summ, md = inp.summary, inp["modules"]
    cks = list(summ["checkpoints"])
    fams = inp.families()
    fig, axes = style.figure(inp.cfg.figures, "two", 2.6, ncols=max(1, len(fams)),
                             squeeze=False, sharey=True)
    x = np.arange(len(cks))
    for ax, fam in zip(axes[0], fams):
        comp = [summ["checkpoints"][ck]["families"].get(fam, {}).get("complement_drop", {})
                for ck in cks]
        series = [(t, style.task_color(t), [c.get("per_task", {}).get(t, {}).get("own", {})
                                            for c in comp]) for t in inp.tasks(fam)]
        series.append(("other tasks (mean)", "0.55", [c.get("other", {}) for c in comp]))
        drawn = 0
        for k, (label, color, ivs) in enumerate(series):
            m, lo, hi = (np.array([np.nan if v.get(f) is None else 100 * v[f] for v in ivs])
                         for f in ("mean", "lower", "upper"))
            if not np.isfinite(m).any():
                continue
            drawn += 1
            off = (k - (len(series) - 1) / 2) * 0.05
            ax.errorbar(x + off, m, yerr=np.nan_to_num(np.abs(np.stack([m - lo, hi - m]))),
                        color=color, marker=style.task_marker(label), lw=1.0, label=label,
                        ls="--" if label.startswith("other") else "-")
        if drawn:
            ax.legend(fontsize=inp.cfg.figures.font_size - 2.5, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no complement / reference masks", transform=ax.transAxes,
                    ha="center", va="center", fontsize=inp.cfg.figures.font_size - 1)
        ax.axhline(0, **style.CHANCE_STYLE)
        ax.set_xticks(x, [style.checkpoint_label(c, float(v))
                          for c, v in zip(cks, md["milestone"].values)])
        ax.set_title(fam)
    axes[0, 0].set_ylabel("relative accuracy drop (%)\ncomplement vs reference mask")
    fig.suptitle(f"complement protocol (Csordás et al.): drop on the task's own set vs the "
                 f"family's other tasks, mean ± {100 * inp.level:g}% CI across networks",
                 fontsize=inp.cfg.figures.font_size - 1)
    return style.save(fig, out, "complement")
