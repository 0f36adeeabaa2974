"""Spatial distribution of the modules: each masked parameter's share of the module's kept
weights (percent, log scale), mean over the original family's shape tasks, ± CI across
networks (mask seeds nested), coloured by SCL sub-network; one panel per checkpoint at its
selected alpha, converged masks only. Black ticks: the share a
uniformly random mask would give (proportional to the parameter's size)."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np

from figures import style
from figures.inputs import Inputs, across_networks, converged, require_data

NAME = "spatial_dist"
NEEDS = ("layers", "modules")
OUTPUTS = ("spatial_dist",)
RANDOM_STYLE = {"color": "black", "marker": "_", "markersize": 7, "markeredgewidth": 1.2,
                "linestyle": "none", "zorder": 4}


def build(inp: Inputs, out: Path) -> list[Path]:
    ly, md = inp["layers"], inp["modules"]
    cks = [str(c) for c in ly["checkpoint"].values]
    params = [str(p) for p in ly["param"].values]
    subnets = [str(s) for s in ly["subnet"].values]
    fam = next(iter(inp.families()), "original")
    share = converged(require_data(ly["share"], "layers.nc share"), md).sel(
        task=inp.tasks(fam))
    st = across_networks(share, inp.level, ("task",))
    x = np.arange(len(params))
    colors = [style.SUBNET_COLORS.get(s, "0.5") for s in subnets]
    sizes = ly["param_size"].values.astype(float)
    chance = 100.0 * sizes / sizes.sum()  # a uniformly random mask's share: size / total
    height = 1.0 + 1.0 * len(cks) + 0.06 * max(len(p) for p in params)
    fig, axes = style.figure(inp.cfg.figures, "two", height, nrows=len(cks), sharex=True,
                             squeeze=False)
    for j, (ax, ck) in enumerate(zip(axes[:, 0], cks)):
        s = st.sel(checkpoint=ck)
        m = s["mean"].values
        lo = np.where(np.isfinite(s["lower"].values), s["lower"].values, m)
        hi = np.where(np.isfinite(s["upper"].values), s["upper"].values, m)
        pos = np.where(m > 0, m, np.nan)
        ax.bar(x, pos, color=colors, width=0.8)
        err = np.stack([pos - np.maximum(lo, pos * 1e-3), hi - pos])
        ax.errorbar(x, pos, yerr=np.nan_to_num(err), fmt="none", ecolor="0.2", elinewidth=0.6,
                    capsize=1)
        ax.set_yscale("log")
        ax.plot(x, chance, **RANDOM_STYLE)
        ax.set_ylabel("share of module (%)")
        ax.set_title(style.checkpoint_label(ck, float(ly["milestone"][j])), loc="left",
                     pad=2)
    ax = axes[-1, 0]
    ax.set_xticks(x, params, rotation=90, fontsize=max(4.0, inp.cfg.figures.font_size - 2.5))
    ax.set_xlim(-0.6, len(params) - 0.4)
    ax.set_xlabel("masked parameter (model order)")
    present = [s for s in style.SUBNET_COLORS if s in subnets]
    handles = [mpl.patches.Patch(color=style.SUBNET_COLORS[s]) for s in present]
    handles.append(mpl.lines.Line2D([], [], **RANDOM_STYLE))
    pct = f"{100 * inp.level:g}%"
    fig.legend(handles, [style.SUBNET_LABELS[s] for s in present] + ["random mask (share ∝ size)"],
               loc="outside upper center", ncol=3,
               title=f"mean over the {fam} family's tasks, error bar: {pct} CI across networks")
    return style.save(fig, out, OUTPUTS[0])
