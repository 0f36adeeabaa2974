"""Figures of the study, rebuilt from the metric netCDF files alone: ``python -m figures``.

One module per figure family (the original study's report figures, with error bars and chance
baselines added); each exposes ``NAME``, ``NEEDS`` (the inputs it reads), ``OUTPUTS`` (file
stems) and ``build(inputs, out) -> [paths]``. :func:`build` runs some or all of them and
writes ``provenance.json`` (the metrics' config hash and profile) beside the figures; the paper
refuses figures whose provenance differs from its own configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.config import Config
from core.io import atomic_write_text
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

PROVENANCE_FILE = "provenance.json"
FAMILIES = {m.NAME: m for m in (problem_instances, training_curves, line_plots,
                                  sharing_matrices, spatial_dist, mask_evolution, ablation)}


def build(names: list[str], metrics: str | Path, raven: str | Path, out: str | Path,
          cfg: Config) -> list[Path]:
    """Build the figure families ``names``; returns the written PNG and PDF paths."""
    inp = Inputs(metrics, raven, cfg)
    paths: list[Path] = []
    for name in names:
        paths += FAMILIES[name].build(inp, Path(out))
    prov = {"config_hash": inp.config_hash, "profile": cfg.profile,
            "metrics_source": str(inp["modules"].attrs.get("source", ""))}
    atomic_write_text(Path(out) / PROVENANCE_FILE, json.dumps(prov, indent=1, sort_keys=True)
                      + "\n")
    return paths
