"""Training curves: SCL training/validation accuracy of every network with the kept checkpoints
marked, and mask training per checkpoint at its selected alpha: masked-model task accuracy and
read-out density vs mask-training step, one line per mask run, converged runs in colour and
unconverged ones grey (their count in each panel's title: verdicts use converged runs only)."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np

from figures import style
from figures.inputs import Inputs, at_selected, require_data

NAME = "training_curves"
NEEDS = ("curves", "modules")
OUTPUTS = ("training_curves_scl", "training_curves_masks")
NET_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def build(inp: Inputs, out: Path) -> list[Path]:
    return scl(inp, out) + masks(inp, out)


def scl(inp: Inputs, out: Path) -> list[Path]:
    """SCL accuracy over training, per network; the checkpoints kept at each milestone."""
    cv = inp["curves"]
    fig, ax = style.figure(inp.cfg.figures, "one", 2.5)
    require_data(cv["train_acc"], "curves.nc train_acc")
    require_data(cv["val_acc"], "curves.nc val_acc")
    for k, net in enumerate(cv["network"].values):
        color = NET_COLORS[k % len(NET_COLORS)]
        tr = cv["train_acc"].sel(network=net)
        ax.plot(cv["train_step"].values, tr.values, color=color, lw=0.5, alpha=0.35)
        va = cv["val_acc"].sel(network=net)
        ax.plot(cv["val_step"].values, va.values, color=color, lw=1.3, marker="o", ms=1.5,
                label=f"network {int(net)} (validation)")
        for ck in cv["checkpoint"].values:
            s = float(cv["ckpt_step"].sel(network=net, checkpoint=ck))
            a = float(cv["ckpt_val_acc"].sel(network=net, checkpoint=ck))
            if np.isfinite(s):
                ax.plot([s], [a], marker="D", color=color, ms=4, zorder=6, mec="black",
                        mew=0.4)
    for i, ck in enumerate(cv["checkpoint"].values):
        m = float(cv["milestone"][i])
        ax.axhline(m, color="0.8", lw=0.6, ls="--", zorder=0)
        ax.annotate(style.checkpoint_label(str(ck), m), (0, m), xytext=(2, 2),
                    textcoords="offset points", fontsize=inp.cfg.figures.font_size - 2)
    ax.axhline(style.CHANCE_ACC, **style.CHANCE_STYLE, label="chance (12.5%)")
    ax.plot([], [], marker="D", color="0.5", ls="none", label="checkpoint kept")
    ax.set(xlabel="SCL training step", ylabel="accuracy (%)", ylim=(0, 100))
    ax.legend(loc="lower right", fontsize=inp.cfg.figures.font_size - 2)
    return style.save(fig, out, OUTPUTS[0])


def masks(inp: Inputs, out: Path) -> list[Path]:
    """Mask training per checkpoint at the selected alpha: every run's curve."""
    cv, md = inp["curves"], inp["modules"]
    cks = [str(c) for c in cv["checkpoint"].values]
    rows = (("acc_task", "task accuracy,\nmodel × mask (%)"),
            ("density", "read-out mask\ndensity (%)"))
    fig, axes = style.figure(inp.cfg.figures, "two", 3.8, nrows=len(rows), ncols=len(cks),
                             sharex=True, sharey="row", squeeze=False)
    conv = at_selected(md["converged"], md, "modules.nc converged")
    x = cv["mask_step"].values
    for i, (var, label) in enumerate(rows):
        da = at_selected(require_data(cv[var], f"curves.nc {var}"), md, f"curves.nc {var}")
        for j, ck in enumerate(cks):
            ax = axes[i, j]
            runs = da.sel(checkpoint=ck).stack(run=("network", "task", "seed"))
            ok = conv.sel(checkpoint=ck).stack(run=("network", "task", "seed"))
            n_ok = n_bad = 0
            for r in range(runs.sizes["run"]):
                y = runs.isel(run=r).values
                if not np.isfinite(y).any():
                    continue
                good = bool(ok.isel(run=r) == 1)
                n_ok, n_bad = n_ok + good, n_bad + (not good)
                task = str(runs["task"].values[r])
                ax.plot(x, y, lw=0.6 if good else 0.8, alpha=0.6 if good else 0.9,
                        color=style.task_color(task) if good else "0.55",
                        ls="-" if good else "--", zorder=2 if good else 3)
            if var == "acc_task":
                ax.axhline(style.CHANCE_ACC, **style.CHANCE_STYLE)
                ax.set_title(f"{style.checkpoint_label(ck, float(cv['milestone'][j]))} "
                             f"({style.alpha_label(float(cv['snap_alpha'][j]))})\n"
                             f"converged {n_ok} of {n_ok + n_bad}",
                             fontsize=inp.cfg.figures.font_size - 1)
            ax.set_ylim(0, 100)
            if j == 0:
                ax.set_ylabel(label)
            if i == len(rows) - 1:
                ax.set_xlabel("mask-training step")
    handles = [mpl.lines.Line2D([], [], color="#0072B2", lw=0.8),
               mpl.lines.Line2D([], [], color="0.55", lw=0.8, ls="--"),
               mpl.lines.Line2D([], [], **style.CHANCE_STYLE)]
    fig.legend(handles, ["converged run (colour: task)", "not converged (excluded)",
                         "chance (12.5%)"], loc="outside lower center", ncol=3,
               title="one line per mask run (network x task x seed) at the selected alpha")
    return style.save(fig, out, OUTPUTS[1])
