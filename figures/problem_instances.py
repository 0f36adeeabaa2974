"""Example problems: one per shape task (first problem of split ``figures.problem_split`` under
``<raven>/tasks/<shape>``), plus ``light`` and ``dark`` when those subsets exist. Each shows the
3x3 context (missing panel marked ``?``) and the 8 candidates with the answer outlined."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np

from core.data import RavenDataset, RavenFileError
from core.tasks import SHAPES
from figures import style
from figures.inputs import Inputs
from figures.style import FigureError

NAME = "problem_instances"
NEEDS = ("raven",)
OUTPUTS = ("problem_instances",)
EXTRA_SUBSETS = ("light", "dark")
GAP = 2  # pixels of frame between panels in the composed grids
# Short names of the RAVEN configurations (as in the RAVEN paper).
SHORT = {"center_single": "Center", "distribute_four": "2x2Grid", "distribute_nine": "3x3Grid",
         "left_center_single_right_center_single": "L-R",
         "up_center_single_down_center_single": "U-D",
         "in_center_single_out_center_single": "O-IC",
         "in_distribute_four_out_center_single": "O-IG"}


def subsets(raven: Path) -> list[str]:
    """Subsets to show: shape tasks in ``core.tasks.SHAPES`` order, then light/dark, those
    that exist under ``<raven>/tasks``."""
    root = raven / "tasks"
    found = [s for s in (*SHAPES, *EXTRA_SUBSETS) if (root / s).is_dir()]
    if not found:
        raise FigureError(f"{root}: no task folders (expected <shape>/<split>/*.npz from "
                          "`python -m core.raven build`)")
    return found


def grid(panels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Compose ``panels`` [k, H, W] (uint8, 255 = white) into a rows x cols image with a
    grey frame around each panel."""
    h, w = panels.shape[1:]
    out = np.full((rows * (h + GAP) + GAP, cols * (w + GAP) + GAP), 160, np.uint8)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        y, x = GAP + r * (h + GAP), GAP + c * (w + GAP)
        out[y:y + h, x:x + w] = panels[k] if k < len(panels) else 255
    return out


def build(inp: Inputs, out: Path) -> list[Path]:
    split = inp.cfg.figures.problem_split
    names = subsets(inp.raven)
    problems = []
    for name in names:
        try:
            ds = RavenDataset(inp.raven / "tasks" / name, split=split)
        except RavenFileError as err:
            raise FigureError(f"problem_instances: {err}") from None
        problems.append((name, ds.images[0].numpy(), int(ds.targets[0]), str(ds.configs[0])))
    ncols = 2 if len(problems) > 1 else 1
    nrows = -(-len(problems) // ncols)
    fw = inp.cfg.figures.width_two
    fig = style.figure(inp.cfg.figures, "two", 0.2 + nrows * fw / ncols * 3.2 / 7.6,
                       layout=None)[0]
    fig.clf()
    gs = fig.add_gridspec(nrows, 2 * ncols, width_ratios=[3, 4.5] * ncols, left=0.01,
                          right=0.99, top=0.99 - 0.12 / nrows, bottom=0.01, wspace=0.08,
                          hspace=0.35)
    fs = inp.cfg.figures.font_size
    for k, (name, img, target, config) in enumerate(problems):
        r, c = divmod(k, ncols)
        h, w = img.shape[1:]
        ctx = fig.add_subplot(gs[r, 2 * c])
        ctx.imshow(grid(img[:8], 3, 3), cmap="gray", vmin=0, vmax=255)
        ctx.text(GAP + 2 * (w + GAP) + w / 2, GAP + 2 * (h + GAP) + h / 2, "?",
                 ha="center", va="center", fontsize=fs + 6, color="0.3")
        ctx.set_title(f"{name} ({SHORT.get(config, config)})", loc="left", fontsize=fs)
        cand = fig.add_subplot(gs[r, 2 * c + 1])
        cand.imshow(grid(img[8:], 2, 4), cmap="gray", vmin=0, vmax=255)
        for i in range(8):
            rr, cc = divmod(i, 4)
            cand.text(GAP + cc * (w + GAP) + 3, GAP + rr * (h + GAP) + 3, str(i + 1),
                      ha="left", va="top", fontsize=fs - 2, color="0.25")
        rr, cc = divmod(target, 4)
        cand.add_patch(mpl.patches.Rectangle((cc * (w + GAP) + GAP / 2, rr * (h + GAP) + GAP / 2),
                                             w + GAP, h + GAP, fill=False, lw=2.0,
                                             edgecolor="#D55E00"))
        cand.set_title(f"candidates (answer {target + 1} outlined)", loc="left", fontsize=fs - 1)
        for ax in (ctx, cand):
            ax.set_axis_off()
    return style.save(fig, out, OUTPUTS[0])
