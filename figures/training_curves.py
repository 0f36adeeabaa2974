"""Training curves: SCL training/validation accuracy with the milestone checkpoints marked, and
mask training per checkpoint (masked-model task accuracy, inverted-mask accuracy and mask
density vs mask-training step, one line per alpha)."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np

from figures import style
from figures.inputs import Inputs, mean_ci, require_data

NAME = "training_curves"
NEEDS = ("curves", "modules")
OUTPUTS = ("training_curves_scl", "training_curves_masks")


def build(inp: Inputs, out: Path) -> list[Path]:
    return scl(inp, out) + masks(inp, out)


def scl(inp: Inputs, out: Path) -> list[Path]:
    """SCL accuracy over training; the checkpoints kept at each milestone are marked."""
    cv = inp["curves"]
    fig, ax = style.figure(inp.cfg.figures, "one", 2.3)
    step, acc = cv["train_step"].values, require_data(cv["train_acc"], "curves.nc train_acc")
    ax.plot(step, acc.values, color="0.6", lw=0.8, label="training (per logged step)")
    val = require_data(cv["val_acc"], "curves.nc val_acc")
    ax.plot(cv["val_step"].values, val.values, color="#0072B2", lw=1.4, marker="o", ms=2,
            label="validation")
    for i, ck in enumerate(cv["checkpoint"].values):
        m = float(cv["milestone"][i])
        s, a = float(cv["ckpt_step"][i]), float(cv["ckpt_val_acc"][i])
        ax.axhline(m, color="0.8", lw=0.6, ls="--", zorder=0,
                   label="milestone" if i == 0 else None)
        if np.isfinite(s):
            ax.plot([s], [a], marker="D", color="#D55E00", ms=5, zorder=6)
            ax.annotate(style.checkpoint_label(str(ck), m), (s, a), xytext=(5, -3),
                        textcoords="offset points", ha="left", va="top", fontsize=inp.cfg.figures.font_size - 1)
    ax.axhline(style.CHANCE_ACC, **style.CHANCE_STYLE, label="chance (12.5%)")
    ax.plot([], [], marker="D", color="#D55E00", ls="none", label="checkpoint kept")
    ax.set(xlabel="SCL training step", ylabel="accuracy (%)", ylim=(0, 100))
    ax.legend(loc="lower right")
    return style.save(fig, out, OUTPUTS[0])


def masks(inp: Inputs, out: Path) -> list[Path]:
    """Mask training per checkpoint: mean over tasks x seeds (band: 95% CI over runs)."""
    cv, md = inp["curves"], inp["modules"]
    cks = cv["checkpoint"].values
    rows = (("acc_task", "task accuracy,\nmodel × mask (%)"),
            ("acc_task_inverted", "task accuracy,\nmodel × (1 − mask) (%)"),
            ("density", "mask density (%)"))
    fig, axes = style.figure(inp.cfg.figures, "two", 5.0, nrows=3, ncols=len(cks),
                             sharex=True, sharey="row", squeeze=False)
    alphas = cv["alpha"].values
    logs = np.log10(alphas)
    norm = mpl.colors.Normalize(logs.min() - 0.5, logs.max() + 0.5)
    cmap = mpl.colormaps[style.SEQUENTIAL]
    x = cv["mask_step"].values
    nmax = {a: 0 for a in alphas}
    full = md["acc_task_full"]
    for j, ck in enumerate(cks):
        for i, (var, label) in enumerate(rows):
            ax = axes[i, j]
            da = require_data(cv[var], f"curves.nc {var}").sel(checkpoint=ck)
            for a, la in zip(alphas, logs):
                runs = da.sel(alpha=a).stack(run=("task", "seed"))
                if not bool(np.isfinite(runs.values).any()):
                    continue
                st = mean_ci(runs, "run", inp.level)
                nmax[a] = max(nmax[a], int(st["n"].max()))
                c = cmap(norm(la))
                ax.plot(x, st["mean"].values, color=c)
                ax.fill_between(x, st["lower"].values, st["upper"].values, color=c, alpha=0.2,
                                lw=0)
            if var != "density":
                ax.axhline(style.CHANCE_ACC, **style.CHANCE_STYLE)
                f = float(full.sel(checkpoint=ck).mean(skipna=True))
                if np.isfinite(f):
                    ax.axhline(f, color="0.3", lw=0.8, ls="--")
            ax.set_ylim(0, 100)
            if j == 0:
                ax.set_ylabel(label)
            if i == 0:
                ax.set_title(style.checkpoint_label(str(ck), float(cv["milestone"][j])))
            if i == len(rows) - 1:
                ax.set_xlabel("mask-training step")
    pct = f"{100 * inp.level:g}%"
    lines = [mpl.lines.Line2D([], [], color=cmap(norm(la))) for la in logs]
    labels = [f"{style.alpha_label(a)} (n ≤ {nmax[a]})" for a in alphas]
    keep = [k for k, a in enumerate(alphas) if nmax[a] > 0]
    extra = [mpl.lines.Line2D([], [], color="0.3", lw=0.8, ls="--"),
             mpl.lines.Line2D([], [], **style.CHANCE_STYLE)]
    fig.legend([lines[k] for k in keep] + extra,
               [labels[k] for k in keep] + ["unmasked model", "chance (12.5%)"],
               loc="outside lower center", ncol=min(6, len(keep) + 2),
               title=f"mean over tasks × seeds; band: {pct} CI over the n runs")
    return style.save(fig, out, OUTPUTS[1])

