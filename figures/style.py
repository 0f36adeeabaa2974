"""One look for every figure: fonts, palette, sizes, and byte-stable saving.

Every figure module calls :func:`apply` once (through :func:`figure`) and saves with
:func:`save`, which writes a PNG (README) and a PDF (paper) whose bytes depend only on the
data: fixed fonts (DejaVu, shipped with matplotlib), no timestamps or software strings in the
metadata, a fixed SVG hash salt and ``SOURCE_DATE_EPOCH`` pinned while saving.

Colours are fixed per shape task (:data:`SHAPE_COLORS`) and per SCL sub-network
(:data:`SUBNET_COLORS`) so a shape or a sub-network looks the same in every figure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from core.config import SUBNETS, FiguresConfig, checkpoint_name  # noqa: E402
from core.io import atomic_path  # noqa: E402
from core.stats import CHANCE_ACC  # noqa: E402,F401  (re-exported: figures draw it)
from core.tasks import SHAPES

# Okabe-Ito colour-blind-safe palette, one fixed colour per shape task and per sub-network.
SHAPE_COLORS = dict(zip(SHAPES, ("#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#0072B2"),
                        strict=True))
SUBNET_COLORS = dict(zip(SUBNETS, ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7"),
                         strict=True))
SUBNET_LABELS = {"vision": "object (vision) network", "attribute": "attribute network",
                 "ff_residual": "ff residual", "relation": "relationship network",
                 "logit": "logit layer"}
SHAPE_MARKERS = dict(zip(SHAPES, ("^", "s", "p", "h", "o"), strict=True))
# Task families (core.tasks): one colour and marker each; the control stands out in black.
FAMILY_COLORS = {"original": "#0072B2", "shape_rule": "#E69F00", "control": "#000000"}
FAMILY_MARKERS = {"original": "o", "shape_rule": "s", "control": "D"}
CONTROL_COLORS = {"color_rule": "#D55E00", "size_rule": "#000000"}
DEGENERATE_HATCH = "////"


def task_color(task: str) -> str:
    """A shape task (``circle``, ``rule_circle``, ``not_circle``) gets its shape's colour, a
    control task its own; anything else grey."""
    shape = next((s for s in SHAPES if task.endswith(s)), None)
    return SHAPE_COLORS[shape] if shape else CONTROL_COLORS.get(task, "0.45")


def task_marker(task: str) -> str:
    shape = next((s for s in SHAPES if task.endswith(s)), None)
    return SHAPE_MARKERS[shape] if shape else "D"
# Model variants of the ablation: unmasked, model * mask, model * (1 - mask).
VARIANT_COLORS = {"full": "#7f7f7f", "masked": "#0072B2", "inverted": "#D55E00"}
CHANCE_STYLE = {"color": "0.35", "linestyle": ":", "linewidth": 1.0}
ORIGINAL_STYLE = {"color": "black", "marker": "*", "markersize": 8, "linestyle": "none",
                  "markerfacecolor": "white", "markeredgewidth": 1.0, "zorder": 5}
SEQUENTIAL = "viridis"

_PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}
_PNG_METADATA = {"Software": None}


class FigureError(ValueError):
    """Bad input to a figure (missing file, variable or data); the message names it."""


def apply(cfg: FiguresConfig) -> None:
    """Set the shared rcParams: fonts, sizes and the fixed metadata needed for stable bytes."""
    plt.rcdefaults()
    fs = cfg.font_size
    plt.rcParams.update({
        "font.family": "DejaVu Sans", "font.size": fs, "axes.titlesize": fs,
        "axes.labelsize": fs, "xtick.labelsize": fs - 1, "ytick.labelsize": fs - 1,
        "legend.fontsize": fs - 1, "legend.title_fontsize": fs - 1, "figure.titlesize": fs + 1,
        "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
        "lines.linewidth": 1.2, "lines.markersize": 4, "errorbar.capsize": 2,
        "legend.frameon": False, "figure.dpi": cfg.dpi, "savefig.dpi": cfg.dpi,
        "pdf.fonttype": 42, "ps.fonttype": 42, "svg.hashsalt": "modules-avr",
        "path.simplify": False, "image.interpolation": "nearest",
        "image.resample": False,
    })


def figure(cfg: FiguresConfig, width: str = "two", height: float = 2.4, **kw):
    """A new figure ``width`` "one" or "two" columns wide and ``height`` inches tall, with
    constrained layout so labels never overlap. Returns ``(fig, axes)`` like ``plt.subplots``."""
    apply(cfg)
    w = {"one": cfg.width_one, "two": cfg.width_two}[width]
    kw.setdefault("layout", "constrained")
    return plt.subplots(figsize=(w, height), **kw)


@contextlib.contextmanager
def _pinned_epoch() -> Iterator[None]:
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


def save(fig, out: str | Path, name: str) -> list[Path]:
    """Write ``<out>/<name>.png`` and ``.pdf`` atomically with fixed metadata; close ``fig``."""
    out = Path(out)
    paths = []
    with _pinned_epoch():
        for ext, meta in (("png", _PNG_METADATA), ("pdf", _PDF_METADATA)):
            path = out / f"{name}.{ext}"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=ext, metadata=meta)
            paths.append(path)
    plt.close(fig)
    return paths


def checkpoint_label(name: str, milestone: float) -> str:
    """``scl_90`` -> ``SCL_90``: the original study's names for the checkpoints."""
    arch = name.removesuffix("_" + checkpoint_name("", milestone).lstrip("_"))
    return f"{arch.upper()}_{milestone:g}"


def alpha_label(alpha: float) -> str:
    """Math-text label of a regularisation strength: ``1e-5`` -> ``$\\alpha=10^{-5}$``,
    ``2.2e-6`` -> ``$\\alpha=2.2\\times10^{-6}$``."""
    mantissa, exponent = f"{alpha:.1e}".split("e")
    if mantissa == "1.0":
        return rf"$\alpha=10^{{{int(exponent)}}}$"
    return rf"$\alpha={mantissa}\times10^{{{int(exponent)}}}$"
