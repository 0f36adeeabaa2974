"""Figures of the study, rebuilt from the metric netCDF files alone: ``python -m figures``.

One module per figure family (the original study's report figures, with error bars and chance
baselines added); each exposes ``NAME``, ``NEEDS`` (the inputs it reads), ``OUTPUTS`` (file
stems) and ``build(inputs, out) -> [paths]``. :func:`build` runs some or all of them.
"""

from __future__ import annotations

from pathlib import Path

from core.config import Config
from figures import (
    ablation,
    line_plots,
    mask_evolution,
    problem_instances,
    sharing_matrices,
    spatial_dist,
    training_curves,
)
from figures.inputs import Inputs

FAMILIES = {m.NAME: m for m in (problem_instances, training_curves, line_plots,
                                  sharing_matrices, spatial_dist, mask_evolution, ablation)}


def build(names: list[str], metrics: str | Path, raven: str | Path, out: str | Path,
          cfg: Config) -> list[Path]:
    """Build the figure families ``names``; returns the written PNG and PDF paths."""
    inp = Inputs(metrics, raven, cfg)
    paths: list[Path] = []
    for name in names:
        paths += FAMILIES[name].build(inp, Path(out))
    return paths
