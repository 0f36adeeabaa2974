"""Mask evolution (the original's "BWM graphic"): the keep probability sigmoid(logit) of one
parameter's mask as a grid (rows = first dimension, columns = the others flattened) at several
mask-training steps, one row of panels per checkpoint, for the task ``figures.evolution_task``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import style
from figures.inputs import Inputs, require_data
from figures.style import FigureError

NAME = "mask_evolution"
NEEDS = ("curves",)
OUTPUTS = ("mask_evolution",)


def build(inp: Inputs, out: Path) -> list[Path]:
    cv = inp["curves"]
    task = inp.cfg.figures.evolution_task
    tasks = [str(t) for t in cv["task"].values]
    if task not in tasks:
        raise FigureError(f"figures.evolution_task: {task!r} has no snapshots in curves.nc "
                          f"(tasks there: {', '.join(tasks)})")
    kp = require_data(cv["keep_prob"], "curves.nc keep_prob").sel(task=task)
    cks = [str(c) for c in cv["checkpoint"].values]
    steps = cv["snap_step"].values
    rows, cols = kp.sizes["snap_row"], kp.sizes["snap_col"]
    w = inp.cfg.figures.width_two
    panel_w = w / len(steps)
    height = 0.6 + len(cks) * (0.35 + panel_w * min(1.0, max(rows / cols, 0.18)))
    fig, axes = style.figure(inp.cfg.figures, "two", height, nrows=len(cks), ncols=len(steps),
                             squeeze=False, sharex=True, sharey=True)
    im = None
    for i, ck in enumerate(cks):
        for j, s in enumerate(steps):
            ax = axes[i, j]
            grid = kp.sel(checkpoint=ck).isel(snap_step=j).values
            im = ax.imshow(np.ma.masked_invalid(grid), cmap="gray_r", vmin=0, vmax=1,
                           aspect="auto", interpolation="nearest")
            if i == 0:
                ax.set_title(f"mask step {int(s)}")
            if j == 0:
                ax.set_ylabel(f"{style.checkpoint_label(ck, float(cv['milestone'][i]))}\nrow")
            if i == len(cks) - 1:
                ax.set_xlabel("column (flattened)")
    cb = fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9, pad=0.01)
    cb.set_label("keep probability σ(logit)")
    alpha = float(cv["snap_alpha"][-1])
    fig.suptitle(f"mask of {cv.attrs.get('snapshot_param', '?')} for task {task} "
                 f"(first network, lowest seed, {style.alpha_label(alpha)}); "
                 "black = kept, white = removed", fontsize=inp.cfg.figures.font_size)
    return style.save(fig, out, OUTPUTS[0])
