"""Sparsity and dispersity of the modules vs checkpoint, one line per task family (its tasks
averaged within each network) so the positive control sits beside the shape families: mean ±
CI across networks (mask seeds nested), converged runs at each checkpoint's selected alpha.
Dispersity is shown as defined by the original study and normalised by a random mask of equal
density (1 = as spread as random). The original study's values are drawn as open stars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from figures import original, style
from figures.inputs import Inputs, across_networks, converged, errorbars, require_data

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
    fams = inp.families()
    fig, axes = style.figure(inp.cfg.figures, "two", 2.9, ncols=len(PANELS))
    jitter = (np.arange(len(fams)) - (len(fams) - 1) / 2) * 0.08
    val = md["ckpt_val_acc"].mean("network", skipna=True).values
    for ax, (var, label, orig) in zip(axes, PANELS):
        da = converged(require_data(md[var], f"modules.nc {var}"), md)
        for k, fam in enumerate(fams):
            m, err = errorbars(across_networks(da.sel(task=inp.tasks(fam)), inp.level,
                                               ("task",)))
            ax.errorbar(x + jitter[k], m, yerr=err, color=style.FAMILY_COLORS.get(fam),
                        marker=style.FAMILY_MARKERS.get(fam, "o"), label=fam, lw=1.0)
        if var == "dispersity_norm":
            ax.axhline(1.0, **style.CHANCE_STYLE, label="random mask (= 1)")
        if orig:
            ox = [i for i, v in enumerate(ms) if round(float(v)) in orig]
            if ox:
                ax.plot(ox, [orig[round(float(ms[i]))] for i in ox], **style.ORIGINAL_STYLE,
                        label="original study")
        ax.set_xticks(x, [f"{style.checkpoint_label(c, float(v))}\n"
                          + (f"(val {a:.0f}%)" if np.isfinite(a) else "(val n/a)")
                          for c, v, a in zip(cks, ms, val)])
        ax.set_xlim(-0.4, len(cks) - 0.6)
        ax.set_xlabel("checkpoint (mean val. accuracy)")
        ax.set_ylabel(label)
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    n = int(md.sizes["network"])
    fig.legend(handles, labels, loc="outside lower center", ncol=5,
               title=f"task family: mean ± {100 * inp.level:g}% CI across {n} networks "
                     "(seeds nested), converged masks")
    return style.save(fig, out, OUTPUTS[0])
