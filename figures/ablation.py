"""Ablation: accuracy on the task set and on the not-task set of the unmasked model, the model
with only the module (model x mask) and the model without it (model x (1 - mask)), per
checkpoint and shape task; mean ± CI over mask seeds at the selected alpha; chance 12.5%."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np

from figures import style
from figures.inputs import Inputs, at_selected, mean_ci, require_data

NAME = "ablation"
NEEDS = ("modules",)
OUTPUTS = ("ablation",)

ROWS = (("task", "task set"), ("not_task", "not-task set"))
VARIANTS = (("full", "unmasked model", "acc_{}_full"),
            ("masked", "model × mask (module only)", "acc_{}"),
            ("inverted", "model × (1 − mask) (module removed)", "acc_{}_inverted"))


def build(inp: Inputs, out: Path) -> list[Path]:
    md = inp["modules"]
    cks = [str(c) for c in md["checkpoint"].values]
    tasks = [str(t) for t in md["task"].values]
    x = np.arange(len(tasks))
    width = 0.8 / len(VARIANTS)
    fig, axes = style.figure(inp.cfg.figures, "two", 4.0, nrows=len(ROWS), ncols=len(cks),
                             sharey=True, sharex=True, squeeze=False)
    for i, (row, row_label) in enumerate(ROWS):
        for k, (key, _, pattern) in enumerate(VARIANTS):
            var = pattern.format(row)
            da = at_selected(require_data(md[var], f"modules.nc {var}"), md, f"modules.nc {var}")
            st = mean_ci(da, "seed", inp.level)
            for j, ck in enumerate(cks):
                s = st.sel(checkpoint=ck)
                m = s["mean"].values
                err = np.nan_to_num(np.abs(np.stack([m - s["lower"].values,
                                                     s["upper"].values - m])))
                axes[i, j].bar(x + (k - 1) * width, m, width, yerr=err,
                               color=style.VARIANT_COLORS[key], ecolor="0.15",
                               error_kw={"elinewidth": 0.6, "capsize": 1.2})
        for j, ck in enumerate(cks):
            ax = axes[i, j]
            ax.axhline(style.CHANCE_ACC, **style.CHANCE_STYLE)
            ax.set_ylim(0, 100)
            if i == 0:
                ax.set_title(style.checkpoint_label(ck, float(md["milestone"][j])))
            if j == 0:
                ax.set_ylabel(f"{row_label}\naccuracy (%)")
            ax.set_xticks(x, tasks, rotation=30, ha="right")
    for ax in axes[-1]:
        ax.set_xlabel("shape task of the module")
    handles = [mpl.patches.Patch(color=style.VARIANT_COLORS[k]) for k, _, _ in VARIANTS]
    handles.append(mpl.lines.Line2D([], [], **style.CHANCE_STYLE))
    pct = f"{100 * inp.level:g}%"
    fig.legend(handles, [lab for _, lab, _ in VARIANTS] + ["chance (12.5%)"],
               loc="outside lower center", ncol=len(handles),
               title=f"mean ± {pct} CI over mask seeds")
    return style.save(fig, out, OUTPUTS[0])
