"""Weight sharing between modules, per task family: IoMin heatmaps (task x other task) per
checkpoint with the same-task null on the diagonal (two mask seeds of one task), chance in
brackets (random masks with the same kept count per tensor); mean over networks and seed
pairs, converged masks at the selected alpha. ``sharing_nulls``: cross-task IoMin beside the
same-task and chance nulls, mean ± CI across networks, per family and checkpoint (the numbers
of the "modules are distinct" verdict, from summary.json)."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import xarray as xr

from core.tasks import FAMILIES
from figures import style
from figures.inputs import Inputs, at_selected, require_data

NAME = "sharing_matrices"
NEEDS = ("sharing", "modules", "summary")
OUTPUTS = tuple(f"sharing_{f}" for f in FAMILIES) + ("sharing_nulls",)
NULLS = (("cross_task", "different tasks", "#0072B2"),
         ("same_task", "same task, other mask seed", "#009E73"),
         ("chance", "random masks (chance)", "0.45"))


def build(inp: Inputs, out: Path) -> list[Path]:
    _ = inp.summary  # fail before drawing when summary.json is missing or stale
    paths = []
    for fam in FAMILIES:
        paths += _heatmaps(inp, out, fam)
    return paths + _nulls(inp, out)


def _pair_means(inp: Inputs, tasks: list[str], var: str) -> xr.DataArray:
    """Mean over networks and seed pairs of ``var`` (both masks converged)."""
    sh, md = inp["sharing"], inp["modules"]
    ok = at_selected(md["converged"], md, "modules.nc converged").sel(task=tasks) == 1
    both = ok & ok.rename(task="other_task", seed="other_seed")
    da = sh[var].sel(task=tasks, other_task=tasks).where(both)
    return da.mean(["network", "seed", "other_seed"], skipna=True)


def _heatmaps(inp: Inputs, out: Path, fam: str) -> list[Path]:
    sh = inp["sharing"]
    tasks = inp.tasks(fam)
    cks = [str(c) for c in sh["checkpoint"].values]
    fs = inp.cfg.figures.font_size
    fig, axes = style.figure(inp.cfg.figures, "two", 2.9, ncols=len(cks), squeeze=False)
    if not tasks:
        fig.suptitle(f"family {fam}: no masks in this run (masks.families)", fontsize=fs)
        for ax in axes[0]:
            ax.axis("off")
        return style.save(fig, out, f"sharing_{fam}")
    require_data(sh["iomin"], "sharing.nc iomin")
    val, ch = _pair_means(inp, tasks, "iomin"), _pair_means(inp, tasks, "iomin_chance")
    n = len(tasks)
    norm, cmap = mpl.colors.Normalize(0, 100), mpl.colormaps["magma_r"]
    im = None
    for j, (ax, ck) in enumerate(zip(axes[0], cks)):
        v = val.sel(checkpoint=ck).values.astype(float)
        c = ch.sel(checkpoint=ck).values.astype(float)
        im = ax.imshow(v, cmap=cmap, norm=norm)
        for a in range(n):
            for b in range(n):
                if not np.isfinite(v[a, b]):
                    ax.text(b, a, "n/a", ha="center", va="center", color="0.5", fontsize=fs - 2)
                    continue
                col = "white" if norm(v[a, b]) > 0.55 else "black"
                ax.text(b, a - 0.14, f"{v[a, b]:.0f}", ha="center", va="center", color=col,
                        fontsize=fs - 0.5, fontweight="bold" if a == b else "normal")
                if a != b and np.isfinite(c[a, b]):
                    ax.text(b, a + 0.24, f"({c[a, b]:.0f})", ha="center", va="center",
                            color=col, fontsize=fs - 2.5)
        ax.set_xticks(range(n), tasks, rotation=45, ha="right")
        ax.set_yticks(range(n), tasks if j == 0 else [""] * n)
        ax.tick_params(length=0)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_title(f"{style.checkpoint_label(ck, float(sh['milestone'][j]))} "
                     f"({style.alpha_label(float(sh['alpha'][j]))})")
    cb = fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, pad=0.02)
    cb.set_label("IoMin (%)")
    fig.suptitle(f"family {fam}: IoMin between modules (mean over networks and mask-seed "
                 "pairs, converged masks)\ndiagonal (bold): same task, other mask seed (the "
                 "null); in brackets: chance IoMin of random masks", fontsize=fs - 1)
    return style.save(fig, out, f"sharing_{fam}")


def _nulls(inp: Inputs, out: Path) -> list[Path]:
    summ = inp.summary
    fams = inp.families()
    cks = list(summ["checkpoints"])
    md = inp["modules"]
    fig, axes = style.figure(inp.cfg.figures, "two", 2.6, ncols=max(1, len(fams)),
                             squeeze=False, sharey=True)
    x = np.arange(len(cks))
    for ax, fam in zip(axes[0], fams):
        for k, (key, label, color) in enumerate(NULLS):
            m, lo, hi = (np.array([_get(summ, ck, fam, key, f) for ck in cks], float)
                         for f in ("mean", "lower", "upper"))
            err = np.nan_to_num(np.abs(np.stack([m - lo, hi - m])))
            ax.errorbar(x + (k - 1) * 0.12, m, yerr=err, color=color, marker="o", lw=1.0,
                        label=label)
        ax.set_xticks(x, [style.checkpoint_label(c, float(v))
                          for c, v in zip(cks, md["milestone"].values)])
        ax.set_title(f"{fam}")
        ax.set_ylim(0, 100)
        ax.set_xlabel("checkpoint")
    axes[0, 0].set_ylabel("IoMin (%)")
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncol=3,
               title=f"mean ± {100 * inp.level:g}% CI across networks (seeds nested); "
                     "distinct only when cross-task lies below same-task")
    return style.save(fig, out, "sharing_nulls")


def _get(summ: dict, ck: str, fam: str, key: str, field: str) -> float:
    v = summ["checkpoints"][ck]["families"].get(fam, {}).get("iomin", {}).get(key, {})
    return np.nan if v.get(field) is None else float(v[field])
