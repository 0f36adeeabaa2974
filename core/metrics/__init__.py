"""Module metrics: mask files and their evaluations -> labelled netCDF datasets + summary.json.

    python -m core.metrics --params P --masks data/masks --train data/train --out data/metrics

Inputs (layout in docs/architecture.md): for every network ``k`` of
``train.networks`` and checkpoint of ``train.milestones``, the mask files
``<masks>/net<k>/<ckpt>/<set>-a<alpha>-s<seed>.pt`` (read with :mod:`core.formats.masks`), that
folder's ``evals.nc`` (masked / inverted / selective ablations on every evaluated set, select
and report splits) and the network's training log ``<train>/net<k>/training.nc`` (checked
against the checkpoint files beside it).

Every mask run becomes a record keyed by (network, checkpoint, task, alpha, seed); records
become ``xarray`` datasets (a run that does not exist is NaN), written as ``modules``,
``layers``, ``sharing``, ``ablation`` and ``curves``.nc (schema: :mod:`core.formats.metrics`) and
summarised in ``summary.json`` (:func:`summarize`: per checkpoint and task family, intervals
across networks with mask seeds nested inside, converged runs only, and the verdicts).

Definitions follow the original study (Tracking Functional Module Development) and add what it
lacked: the same-task cross-seed overlap and random-mask chance beside every sharing number,
a random-normalised dispersity, convergence and degeneracy filters, alpha chosen on the select
split and every accuracy reported on the report split.

The package, layer by layer (each imports only the ones above it):

:mod:`~core.metrics.measures`  the measures on masks in memory, the alpha rule
:mod:`~core.metrics.inputs`    mask records, evaluations and training logs, read through core.formats
:mod:`~core.metrics.datasets`  records -> rows -> the datasets (:func:`compute`)
:mod:`~core.metrics.summary`   ``summary.json`` (:func:`summarize`)
:mod:`~core.metrics.stage`     :func:`build`, :func:`write`, :func:`run` and the command line
"""

from core.formats.metrics import FILES
from core.metrics.datasets import MODULE_COLUMNS, PAIR_COLUMNS, compute, to_dataset
from core.metrics.inputs import (
    RUN,
    MaskRecord,
    MetricsError,
    folders,
    read_ablation,
    read_mask_record,
)
from core.metrics.measures import (
    chance_overlap,
    complement_drops,
    density_change_constant,
    dispersity,
    dispersity_random,
    overlap,
    remove_shared,
    select_alpha,
    sparsity,
    tensor_dispersity,
    tensor_dispersity_random,
)
from core.metrics.stage import build, main, run, source_string, write
from core.metrics.summary import summarize

__all__ = [
    "FILES", "MODULE_COLUMNS", "PAIR_COLUMNS", "RUN", "MaskRecord", "MetricsError", "build",
    "chance_overlap", "complement_drops", "compute", "density_change_constant", "dispersity",
    "dispersity_random", "folders", "main", "overlap", "read_ablation", "read_mask_record",
    "remove_shared", "run", "select_alpha", "source_string", "sparsity", "summarize",
    "tensor_dispersity", "tensor_dispersity_random", "to_dataset", "write",
]
