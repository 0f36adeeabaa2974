"""Differentiable binary weight masks for any ``nn.Module``: find a task's functional module.

Method (Csordas et al., ICLR 2021; Louizos et al., ICLR 2018 for the hard concrete): the
trained weights ``w`` are frozen (BatchNorm in eval mode: running statistics untouched); every
masked parameter gets a logit tensor ``s`` initialised to ``masks.init``, trained with Adam on
the logits only; the model runs with weights ``w * m`` through
:func:`torch.func.functional_call` (no per-model code). Two estimators (``masks.estimator``):

- ``straight_through`` (Csordas): each step samples logistic noise ``l = log(u / (1 - u))``,
  ``m_soft = sigmoid((s + l) / tau)``, the hard mask ``m_soft > 0.5`` with a straight-through
  gradient; loss ``cross-entropy + alpha * sum(s)``. ``alpha`` is a force per weight and
  logit unit. Csordas' own loss is ``mean CE + beta * sum(s) / B`` with his batch B = 128,
  so his beta is ``128 * alpha`` (his default 1e-4 is alpha 7.8e-7; alpha 1e-5 is his 1.28e-3,
  the top of his sweeps).
- ``hard_concrete`` (Louizos): ``z = clamp(sigmoid((s + l) / tau) * 1.2 - 0.1, 0, 1)``, exact
  zeros and ones with a true gradient between them; loss ``cross-entropy + alpha * E[number
  of non-zero gates]``, so ``alpha`` is the nats of mean cross-entropy a kept weight must be
  worth. No straight-through bias: measured on the planted networks (``core.planted``), the
  straight-through estimator drives the all-task mask to collapse (cross-entropy rising while
  weights that each cost >= 0.2 nats are removed) at every alpha tried; the hard concrete does
  not.

The read-out is deterministic: ``mask = s > masks.readout`` (0: keep probability > 0.5 for
either estimator). With ``masks.prune_n`` the read-out then loses its *inert* weights (whose
removal changes no centred logit on that many training problems, checked): weights no loss
gradient reaches at the read-out (inputs of units whose outputs were all removed) belong to
no module. Normalisation scale and shift are not masked unless ``masks.mask_norm``.

Ablations (:func:`evaluate_group`): model * mask, model * (1 - mask) (the inverted mask) and the
selective ablation (only the module's task-specific part removed), each with its *degenerate*
fraction (problems whose 8 candidate logits are constant, where "accuracy" only counts answers
at index 0). Measured on SCL_70 (circle and square modules, ~9% of the weights): the inverted
ablation is degenerate on 100% of problems even with norms unmasked (removing a whole module cuts
a bottleneck), the selective one (~2% removed) on none; so specificity comes from the selective
ablation. Every run reports whether it converged (:func:`convergence`).

``masks.n_samples`` > 1 splits each batch into that many chunks, each run with its own mask
sample (more samples per step at the same cost). Speed: all logits live in one flat tensor
(one noise draw and a handful of element-wise ops per step, whatever the number of
parameters), and so do the masked weights (one product per step); four-dimensional
(convolution) weights and their mask views are channels-last, which makes oneDNN convolutions
~1.6x faster on CPU; BatchNorm is folded into the convolution before it; freed memory is
kept for the next step (:func:`core.device.keep_freed_memory`). MEASURED (SCL 64 px, batch 8, 1 thread,
``benchmarks/masking.py``): 1.87x the step before folding, flat product and allocator
setting, and no slower than a plain training step of the model. Several masks of one
checkpoint in one vmapped step: :mod:`core.maskgroup` (``masks.group``; slower than one after
the other on the CPU, meant for GPUs).

Mask files: :mod:`core.formats.masks`; the sweep over checkpoints, tasks, alphas and seeds, and the
per-checkpoint ``evals.nc``: :mod:`core.sweep`.

The package: :mod:`core.masking.model` (parameter selection, norm folding,
:class:`MaskedModel`, the straight-through sample), :mod:`core.masking.measure` (problems as
tensors, accuracy, degeneracy), :mod:`core.masking.ablation` (the ablations and ``evals.nc``'s
matrix), :mod:`core.masking.training` (:func:`train_mask`: schedules, hard concrete,
regulariser, convergence), :mod:`core.masking.inert` (inert-weight pruning).
"""

from core.formats.masks import MaskError
from core.masking.ablation import (
    evaluate,
    evaluate_group,
    evaluate_part,
    merge_parts,
    relative_drop,
    task_specific,
)
from core.masking.inert import inert_weights, prune_inert
from core.masking.measure import Split, accuracy, degenerate_fraction, degenerate_rows
from core.masking.model import (
    MaskedModel,
    foldable_norms,
    norm_parameters,
    select_parameters,
    snapshot_parameter,
    strided_like,
)
from core.masking.training import (
    MaskResult,
    anneal_factor,
    convergence,
    is_converged,
    log_steps,
    noise_factor,
    penalty,
    sample_hard_concrete,
    train_mask,
)

# the names other modules and the tests import from the package
__all__ = [
    "MaskError", "MaskResult", "MaskedModel", "Split", "accuracy", "anneal_factor",
    "convergence", "degenerate_fraction", "degenerate_rows", "evaluate", "evaluate_group",
    "evaluate_part", "foldable_norms", "inert_weights", "is_converged", "log_steps",
    "merge_parts", "noise_factor", "norm_parameters", "penalty", "prune_inert",
    "relative_drop", "sample_hard_concrete", "select_parameters", "snapshot_parameter",
    "strided_like", "task_specific", "train_mask",
]
