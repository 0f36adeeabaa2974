"""Weight sharing between shape modules: IoMin heatmaps (task x task) per checkpoint, mean over
seeds, each cell annotated with its chance level (independent random masks with the same kept
count per tensor); the same after shared-weight removal (task-specific modules)."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np

from figures import style
from figures.inputs import Inputs, require_data

NAME = "sharing_matrices"
NEEDS = ("sharing",)
OUTPUTS = ("sharing_matrices", "sharing_matrices_specific")


def build(inp: Inputs, out: Path) -> list[Path]:
    return [*_heatmaps(inp, out, "iomin", "iomin_chance", OUTPUTS[0],
                       "IoMin between shape modules (%)"),
            *_heatmaps(inp, out, "iomin_specific", None, OUTPUTS[1],
                       "IoMin after shared-weight removal (%)")]


def _heatmaps(inp: Inputs, out: Path, var: str, chance: str | None, name: str,
              title: str) -> list[Path]:
    sh = inp["sharing"]
    cks = [str(c) for c in sh["checkpoint"].values]
    tasks = [str(t) for t in sh["task"].values]
    n = len(tasks)
    # Task-specific modules may be empty (every kept weight shared): cells then read n/a.
    da = sh[var] if var.endswith("_specific") else require_data(sh[var], f"sharing.nc {var}")
    val = da.mean("seed", skipna=True)
    ch = sh[chance].mean("seed", skipna=True) if chance else None
    nseed = int(sh[var].notnull().sum("seed").max())
    fig, axes = style.figure(inp.cfg.figures, "two", 2.9, ncols=len(cks), squeeze=False)
    norm = mpl.colors.Normalize(0, 100)
    cmap = mpl.colormaps["magma_r"]
    fs = inp.cfg.figures.font_size
    for j, (ax, ck) in enumerate(zip(axes[0], cks)):
        v = val.sel(checkpoint=ck).values.astype(float)
        off = ~np.eye(n, dtype=bool)
        shown = np.where(off, v, np.nan)
        im = ax.imshow(shown, cmap=cmap, norm=norm)
        for a in range(n):
            for b in range(n):
                if a == b:
                    ax.text(b, a, "—", ha="center", va="center", color="0.5", fontsize=fs - 1)
                    continue
                if not np.isfinite(v[a, b]):
                    ax.text(b, a, "n/a", ha="center", va="center", color="0.5", fontsize=fs - 2)
                    continue
                dark = norm(v[a, b]) > 0.55
                col = "white" if dark else "black"
                ax.text(b, a - (0.14 if ch is not None else 0), f"{v[a, b]:.0f}", ha="center",
                        va="center", color=col, fontsize=fs - 0.5)
                if ch is not None:
                    c = float(ch.sel(checkpoint=ck).values[a, b])
                    ax.text(b, a + 0.24, f"({c:.0f})", ha="center", va="center", color=col,
                            fontsize=fs - 2.5)
        ax.set_xticks(range(n), tasks, rotation=45, ha="right")
        ax.set_yticks(range(n), tasks if j == 0 else [""] * n)
        ax.tick_params(length=0)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_title(f"{style.checkpoint_label(ck, float(sh['milestone'][j]))} "
                     f"({style.alpha_label(float(sh['alpha'][j]))})")
    cb = fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, pad=0.02)
    cb.set_label(title)
    note = f"{title}, mean over {nseed} mask seed{'s' if nseed != 1 else ''}"
    if nseed == 0:
        note = f"{title}: no values (the modules are empty, e.g. every kept weight is shared)"
    if ch is not None:
        note += ("\nin brackets: chance IoMin of independent random masks with the same kept "
                 "count per tensor")
    fig.suptitle(note, fontsize=fs - 1)
    return style.save(fig, out, name)
