"""Sparsity and dispersity of the shape modules vs checkpoint, one line per shape task, mean
± CI over mask seeds at each checkpoint's selected alpha. Dispersity is shown as defined by
the original study and normalised by a random mask of equal density (1 = as spread as random).
The original study's values are drawn as open stars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import original, style
from figures.inputs import Inputs, at_selected, mean_ci, require_data

NAME = "line_plots"
NEEDS = ("modules",)
OUTPUTS = ("line_plots",)

PANELS = (("sparsity", "sparsity (% removed)", original.SPARSITY),
          ("dispersity", "dispersity (original def.)", original.DISPERSITY),
          ("dispersity_norm", "dispersity / random mask", None))


def build(inp: Inputs, out: Path) -> list[Path]:
    md = inp["modules"]
    cks = [str(c) for c in md["checkpoint"].values]
    ms = md["milestone"].values
    x = np.arange(len(cks))
    tasks = [str(t) for t in md["task"].values]
    fig, axes = style.figure(inp.cfg.figures, "two", 2.9, ncols=len(PANELS))
    jitter = (np.arange(len(tasks)) - (len(tasks) - 1) / 2) * 0.06
    for ax, (var, label, orig) in zip(axes, PANELS):
        da = at_selected(require_data(md[var], f"modules.nc {var}"), md, f"modules.nc {var}")
        st = mean_ci(da, "seed", inp.level)
        for k, t in enumerate(tasks):
            s = st.sel(task=t)
            m = s["mean"].values
            err = np.abs(np.stack([m - s["lower"].values, s["upper"].values - m]))
            ax.errorbar(x + jitter[k], m, yerr=np.nan_to_num(err), color=style.SHAPE_COLORS.get(t),
                        marker=style.SHAPE_MARKERS.get(t, "o"), label=t, lw=1.0)
        if var == "dispersity":
            rnd = at_selected(md["dispersity_random"], md, "modules.nc dispersity_random")
            ax.plot(x, rnd.mean(["task", "seed"]).values, color="0.4", ls="--", lw=0.9,
                    label="random mask, equal density")
        if var == "dispersity_norm":
            ax.axhline(1.0, **style.CHANCE_STYLE, label="random mask (= 1)")
        if orig:
            ox = [i for i, v in enumerate(ms) if round(float(v)) in orig]
            if ox:
                ax.plot(ox, [orig[round(float(ms[i]))] for i in ox], **style.ORIGINAL_STYLE,
                        label="original study")
        ax.set_xticks(x, [f"{style.checkpoint_label(c, float(v))}\n"
                          + (f"(val {a:.0f}%)" if np.isfinite(a) else "(val n/a)")
                          for c, v, a in zip(cks, ms, md["ckpt_val_acc"].values)])
        ax.set_xlim(-0.4, len(cks) - 0.6)
        ax.set_xlabel("checkpoint (validation accuracy)")
        ax.set_ylabel(label)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    pct = f"{100 * inp.level:g}%"
    fig.legend(handles, labels, loc="outside lower center", ncol=4,
               title=f"shape module: mean ± {pct} CI over mask seeds")
    return style.save(fig, out, OUTPUTS[0])
