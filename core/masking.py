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
kept for the next step (:func:`keep_freed_memory`). MEASURED (SCL 64 px, batch 8, 1 thread,
``benchmarks/masking.py``): 1.87x the step before folding, flat product and allocator
setting, and no slower than a plain training step of the model. Several masks of one
checkpoint in one vmapped step: :mod:`core.maskgroup` (``masks.group``; slower than one after
the other on the CPU, meant for GPUs).

Mask files: :mod:`core.formats.masks`; the sweep over checkpoints, tasks, alphas and seeds, and the
per-checkpoint ``evals.nc``: :mod:`core.sweep`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn
from torch.func import functional_call

from core.config import MaskConfig
from core.device import autocast, keep_freed_memory
from core.formats import evals
from core.formats.evals import SPLITS, VARIANTS
from core.formats.masks import ACCURACY_KEYS, MaskError, degenerate_reason, fingerprint
from core.models import percent_correct, predict  # noqa: F401  (the one accuracy loop)
from core.progress import bar as progress_bar

# --------------------------------------------------------------------------- the masked model

# Normalisation layers whose affine parameters (scale and shift) are NOT masked by default:
# a module keeps every BatchNorm scale, so the inverted mask zeroes them all and the model
# outputs the same logit for every candidate (measured on SCL: 100% of problems). The
# original study masked them; ``masks.mask_norm: true`` does the same.
NORM_TYPES: tuple[type, ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm,
                                *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


def norm_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that belong to normalisation layers (BatchNorm, LayerNorm,
    GroupNorm, InstanceNorm, RMSNorm), in model order."""
    own = {f"{mod_name}.{p}" if mod_name else p
           for mod_name, mod in model.named_modules() if isinstance(mod, NORM_TYPES)
           for p, _ in mod.named_parameters(recurse=False)}
    return [n for n, _ in model.named_parameters() if n in own]


def select_parameters(model: nn.Module, include: Sequence[str] = (),
                      mask_norm: bool = False) -> list[str]:
    """Names of the parameters to mask, in model order: all (normalisation scale and shift
    only with ``mask_norm``), or those starting with a prefix in ``include``. A prefix that
    matches nothing maskable is an error (a typo would silently mask less than asked)."""
    all_names = [n for n, _ in model.named_parameters()]
    skip = set() if mask_norm else set(norm_parameters(model))
    names = [n for n in all_names if n not in skip]
    if not include:
        return names
    for prefix in include:
        if not any(n.startswith(prefix) for n in names):
            why = (" (only normalisation parameters, which masks.mask_norm: false leaves "
                   "unmasked)" if any(n.startswith(prefix) for n in all_names) else "")
            raise MaskError(f"masks.include: prefix {prefix!r} matches no maskable parameter"
                            f"{why} (names start with "
                            f"{', '.join(sorted({n.split('.')[0] for n in all_names}))})")
    return [n for n in names if any(n.startswith(p) for p in include)]


def snapshot_parameter(names: Sequence[str], shapes: Sequence[Sequence[int]],
                       choice: str | None = None) -> str:
    """The parameter whose logits are snapshotted for the mask-evolution figure.

    ``choice`` if given (it must be masked); else the most nearly square 2-D parameter (the
    most readable image), larger first on ties, then model order; without 2-D parameters
    the largest one.
    """
    if choice is not None:
        if choice not in names:
            raise MaskError(f"masks.snapshot_param: {choice!r} is not a masked parameter")
        return choice
    two_d = [(abs(math.log(s[0] / s[1])), -s[0] * s[1], i) for i, s in enumerate(shapes)
             if len(s) == 2 and s[0] > 0 and s[1] > 0]
    if two_d:
        return names[min(two_d)[2]]
    return names[max(range(len(names)), key=lambda i: (math.prod(shapes[i]), -i))]


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def foldable_norms(model: nn.Module, masked: Sequence[str]) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) module names whose BatchNorm can be folded into the
    convolution: a plain ``Conv{1,2,3}d`` directly followed by a plain ``BatchNorm{1,2,3}d`` in
    an ``nn.Sequential`` (so the convolution's output feeds only the norm), the norm in eval
    mode with running statistics, over the convolution's channels, its scale and shift not
    masked (``masks.mask_norm: false``)."""
    out = []
    skip = set(masked)
    for prefix, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        kids = list(mod.named_children())
        for (a, conv), (b, bn) in zip(kids, kids[1:]):
            conv_name, bn_name = (f"{prefix}.{a}", f"{prefix}.{b}") if prefix else (a, b)
            if (type(conv) in _CONVS and type(bn) in _BATCHNORMS and not bn.training
                    and bn.running_mean is not None and bn.running_var is not None
                    and bn.num_features == conv.out_channels
                    and not any(f"{bn_name}.{p}" in skip for p, _ in bn.named_parameters())):
                out.append((conv_name, bn_name))
    return out


class Masks(dict):
    """Per-parameter mask views (a dict) that also carry the flat tensor they view
    (``flat``): :meth:`MaskedModel.__call__` then masks every weight with one product."""

    flat: torch.Tensor


class _StraightThrough(torch.autograd.Function):
    """``hard = sigmoid(z / tau) > 0.5`` forward with the gradient of ``sigmoid(z / tau)``
    backward (``z = s + scale * noise``): the straight-through estimator as one node, the same
    operations (so the same bits) as ``hard + (soft - soft.detach())`` without the two
    passes and autograd nodes that only carry the gradient through."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, noise: torch.Tensor, scale: float,
                tau: float) -> torch.Tensor:
        soft = torch.sigmoid((flat + scale * noise) / tau)
        ctx.save_for_backward(soft)
        ctx.tau = tau
        return (soft > 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (soft,) = ctx.saved_tensors
        # sigmoid_backward's order, grad * (1 - y) * y, then the division's gradient
        return grad * (1 - soft) * soft / ctx.tau, None, None, None


class MaskedModel:
    """A frozen model with one mask-logit tensor per masked parameter.

    The model is put in eval mode on ``device`` and its parameters stop requiring gradients
    (in place): only the logits are trained. Forward passes (under ``precision``'s autocast)
    substitute ``w * m`` for the masked parameters through ``functional_call``; buffers
    (BatchNorm running statistics) and unmasked parameters come from the model unchanged.
    ``names`` fixes the masked parameters explicitly (e.g. those of a mask file); otherwise
    :func:`select_parameters` picks them from ``include`` and ``mask_norm``.

    Speed (the model's own computation is unchanged up to float rounding):

    - BatchNorm folded into the convolution before it (``fold_norms``, default; where
      :func:`foldable_norms` allows): in eval mode the norm is a per-channel scale ``g`` and
      shift ``c``, so ``bn(conv(x, w * m) + b * m_b) = conv(x, (g w) * m) + (g b) * m_b + c``:
      the mask still multiplies each original weight (scaled per output channel), the norm's
      forward and backward are gone. The masked forwards run on a copy of the model whose
      folded norms are identities (``self.net``); the unmasked forward (``masks`` None) runs
      the model itself. Logits differ from the unfolded computation by float rounding only
      (MEASURED on SCL 64 px: <= 1e-6 relative; tests/test_masking.py pins it).
    - all masked weights live in one flat tensor in the logits' memory order, so a sampled
      mask (:class:`Masks`) masks every weight with one product whose views already have the
      weights' (channels-last) strides; the straight-through estimator is one autograd node.
    - :func:`keep_freed_memory` (no page faults per step).
    """

    def __init__(self, model: nn.Module, include: Sequence[str] = (), init: float = 0.0, *,
                 mask_norm: bool = False, names: Sequence[str] | None = None,
                 device: torch.device | str | None = None, precision: str = "fp32",
                 fold_norms: bool = True):
        keep_freed_memory()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.precision = precision
        model.to(self.device)
        model.eval()
        model.requires_grad_(False)
        self.model = model
        params = dict(model.named_parameters())
        if names is None:
            names = select_parameters(model, include, mask_norm)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise MaskError(f"mask names {unknown[:3]} are not parameters of the model")
        self.names = list(names)
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.sizes = [math.prod(sh) for sh in self.shapes]
        self.folded = foldable_norms(model, self.names) if fold_norms else []
        self.net, weights, self.shifts = self._fold(model, self.folded, set(self.names))
        # All logits live in one flat leaf tensor (one Adam tensor, one noise draw, a few
        # element-wise ops per step instead of a dozen per parameter); the masked weights in
        # one flat tensor of the same memory order.
        self.flat = torch.full((sum(self.sizes),), float(init), device=self.device,
                               requires_grad=True)
        dtype = params[self.names[0]].dtype if self.names else torch.float32
        self.flat_weights = torch.empty(self.flat.shape, dtype=dtype, device=self.device)
        for n, v in self._views(self.flat_weights).items():
            v.copy_(weights.get(n, params[n]))
        self.weights = self._views(self.flat_weights)

    @staticmethod
    def _fold(model: nn.Module, pairs: Sequence[tuple[str, str]], masked: set[str]
              ) -> tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The model with ``pairs``' norms folded into their convolutions (a copy; the model
        itself when there is nothing to fold), the folded weights of masked parameters and
        the shifts added to their masked biases."""
        if not pairs:
            return model, {}, {}
        net = copy.deepcopy(model)
        weights, shifts = {}, {}
        with torch.no_grad():
            for conv_name, bn_name in pairs:
                conv, bn = net.get_submodule(conv_name), net.get_submodule(bn_name)
                var, mean = bn.running_var.double(), bn.running_mean.double()
                g = torch.rsqrt(var + bn.eps)
                if bn.weight is not None:
                    g = g * bn.weight.double()
                c = -mean * g + (bn.bias.double() if bn.bias is not None else 0.0)
                w = conv.weight.double() * g.view(-1, *[1] * (conv.weight.dim() - 1))
                w = w.to(conv.weight.dtype)
                if f"{conv_name}.weight" in masked:
                    weights[f"{conv_name}.weight"] = w
                else:
                    conv.weight.copy_(w)
                dtype = conv.weight.dtype
                if conv.bias is None:
                    conv.bias = nn.Parameter(c.to(dtype), requires_grad=False)
                elif f"{conv_name}.bias" in masked:
                    weights[f"{conv_name}.bias"] = (conv.bias.double() * g).to(dtype)
                    shifts[f"{conv_name}.bias"] = c.to(dtype)
                else:
                    conv.bias.copy_((conv.bias.double() * g + c).to(dtype))
                parent, _, child = bn_name.rpartition(".")
                setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
        return net, weights, shifts

    @staticmethod
    def _layout(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views of a flat tensor (of its last dimension: leading dimensions,
        e.g. a group of masks, lead every view); 4-D ones with channels-last strides."""
        out = {}
        lead = flat.shape[:-1]
        k = len(lead)
        for n, sh, part in zip(self.names, self.shapes, flat.split(self.sizes, dim=-1)):
            if len(sh) == 4:  # memory order (O, kh, kw, C) is channels-last of (O, C, kh, kw)
                out[n] = part.view(*lead, sh[0], sh[2], sh[3], sh[1]).permute(
                    *range(k), k, k + 3, k + 1, k + 2)
            else:
                out[n] = part.view(*lead, *sh)
        return out

    @property
    def logits(self) -> dict[str, torch.Tensor]:
        """The current logits per parameter (views without gradient; writes go to them)."""
        return self._views(self.flat.detach())

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.names, self.shapes)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def noise(self, generator: torch.Generator) -> torch.Tensor:
        """One logistic noise draw ``log(u / (1 - u))`` per logit, from ``generator`` on the
        CPU (the same draws on every device), on the model's device."""
        u = torch.empty(self.flat.shape).uniform_(generator=generator)
        u.clamp_(torch.finfo(torch.float32).tiny, 1.0 - 2 ** -24)
        return torch.logit(u).to(self.device)

    def sample(self, generator: torch.Generator, tau: float, scale: float = 1.0) -> Masks:
        """One stochastic mask per parameter: hard values in the forward pass, the gradient
        of ``sigmoid((s + scale * l) / tau)`` in the backward pass (straight-through). The noise
        comes from ``generator`` on the CPU (the same draws on every device); ``scale`` 0 gives
        the read-out ``s > 0`` with a straight-through gradient."""
        hard = _StraightThrough.apply(self.flat, self.noise(generator), float(scale),
                                      float(tau))
        out = Masks(self._views(hard))
        out.flat = hard
        return out

    def binary(self, threshold: float = 0.0) -> dict[str, torch.Tensor]:
        """The deterministic read-out ``logits > threshold`` (bool CPU tensors, standard
        layout); ``threshold`` 0 keeps the weights a sampled mask keeps with probability > 0.5
        (Csordas), ``-2`` those it keeps with probability > sigmoid(-2) = 0.12."""
        return {n: m.to("cpu").clone(memory_format=torch.contiguous_format)
                for n, m in self._views(self.flat.detach() > threshold).items()}

    def effective(self, masks: dict[str, torch.Tensor], invert: bool = False
                  ) -> dict[str, torch.Tensor]:
        """The masked parameters of ``self.net`` by name: ``w * m`` (``w * (1 - m)`` if
        ``invert``), plus the shift of a folded norm on a masked bias."""
        flat = getattr(masks, "flat", None)
        if flat is not None and flat.shape == self.flat_weights.shape:  # one product
            m = flat.to(device=self.device, dtype=self.flat_weights.dtype)
            eff = self._views(self.flat_weights * (1 - m) if invert else
                              self.flat_weights * m)
        else:
            eff = {}
            for n, w in self.weights.items():
                m = masks[n].to(device=w.device, dtype=w.dtype)
                eff[n] = _like(w, w * (1 - m) if invert else w * m)
        for n, c in self.shifts.items():
            eff[n] = eff[n] + c
        return eff

    def __call__(self, x: torch.Tensor, masks: dict[str, torch.Tensor] | None = None,
                 invert: bool = False) -> torch.Tensor:
        """Float32 model output with weights ``w * m`` (``w * (1 - m)`` if ``invert``);
        unmasked if ``masks`` is None."""
        with autocast(self.device, self.precision):
            if masks is None:
                return self.model(x).float()
            return functional_call(self.net, self.effective(masks, invert), (x,)).float()

    def forward_fn(self, masks: dict[str, torch.Tensor] | None = None,
                   invert: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> self(x, masks, invert)``: one variant of the model as a plain function for
        inference (the masked weights are computed once, without gradient)."""
        if masks is None:
            return lambda x: self(x)
        with torch.no_grad():
            eff = self.effective(masks, invert)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device, self.precision):
                return functional_call(self.net, eff, (x,)).float()
        return forward


def _like(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v`` (the masked ``w``) with ``w``'s strides. A product's strides are ambiguous where
    a dimension has size 1: SCL's first convolution weight [16, 1, 3, 3] is channels-last,
    ``w * m`` came out contiguous, and the first convolution then ran in the other memory
    format (a conversion of its [128, 16, 32, 32] output each way and a slow backward).
    MEASURED (SCL_80, batch 8, 1 thread, 12 alternating rounds on the default machine):
    masked training step median 124 -> 93 ms. A copy of the (small) weight when needed."""
    if v.dim() == 4 and v.stride() != w.stride():
        return torch.empty_like(w).copy_(v)
    return v


def check_finite_weights(model: nn.Module, where: str = "model") -> None:
    """A checkpoint with a NaN/inf weight cannot be masked meaningfully: one clear error."""
    for n, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise MaskError(f"{where}: parameter {n!r} has non-finite values")


# --------------------------------------------------------------------------- data, accuracy


@dataclass
class Split:
    """Problems as tensors: ``inputs`` [N, ...] (any dtype), ``targets`` int64 [N]; ``prepare``
    turns an indexed batch of inputs into model input (e.g. ``core.data.to_float``)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
    name: str = "data"

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets) or len(self.targets) == 0:
            raise MaskError(f"{self.name}: expected as many targets as inputs (> 0), got "
                            f"{len(self.inputs)} inputs and {len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.targets)

    def head(self, n: int) -> Split:
        """The first ``n`` problems (all when ``n`` is 0)."""
        if n == 0 or n >= len(self):
            return self
        return Split(self.inputs[:n], self.targets[:n], self.prepare, self.name)

    def batch(self, idx: torch.Tensor | slice, device: torch.device | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (moved to ``device``, then prepared) and targets of the problems ``idx``."""
        x, y = self.inputs[idx], self.targets[idx]
        if device is not None:
            x, y = x.to(device), y.to(device)
        return (self.prepare(x) if self.prepare else x), y


def degenerate_rows(logits: torch.Tensor, tol: float) -> torch.Tensor:
    """Problems whose candidate logits are constant within ``tol`` (bool [N]): spread
    ``max - min <= tol * max(1, max |logit|)``. Such an answer is the argmax of a tie (index
    0), not a choice; or NaN/inf outputs, which are degenerate too."""
    finite = torch.isfinite(logits).all(-1)
    spread = logits.max(-1).values - logits.min(-1).values
    scale = logits.abs().max(-1).values.clamp(min=1.0)
    return ~finite | (spread <= tol * scale)


def accuracy(forward: Callable[[torch.Tensor], torch.Tensor], data: Split,
             batch_size: int = 64, device: torch.device | None = None) -> float:
    """Percent of ``data`` solved by ``forward`` (a model, or a ``MaskedModel.forward_fn``).
    The project's one accuracy loop (training validation uses it too)."""
    return percent_correct(predict(forward, data, batch_size, device), data.targets)


@dataclass(frozen=True)
class Measure:
    """Accuracy (percent) and degenerate fraction of one model variant on one problem set."""

    accuracy: float
    degenerate: float
    n_problems: int


def measure(forward: Callable[[torch.Tensor], torch.Tensor], data: Split, *,
            tol: float = 1e-4, batch_size: int = 64,
            device: torch.device | None = None) -> Measure:
    """Accuracy and degeneracy (fraction of problems whose logits are constant within
    ``tol``, see :func:`degenerate_rows`) from one pass over ``data``."""
    logits = predict(forward, data, batch_size, device)
    return Measure(percent_correct(logits, data.targets),
                   float(degenerate_rows(logits, tol).float().mean()), len(data))


def degenerate_fraction(forward: Callable[[torch.Tensor], torch.Tensor], data: Split,
                        tol: float = 1e-4, batch_size: int = 64,
                        device: torch.device | None = None) -> float:
    """Fraction of ``data``'s problems on which ``forward`` outputs (near-)constant logits."""
    return measure(forward, data, tol=tol, batch_size=batch_size, device=device).degenerate


def evaluate(masked: MaskedModel, mask: dict[str, torch.Tensor], task: Split,
             not_task: Split, batch_size: int = 64) -> dict[str, float]:
    """The six accuracies of the file format (percent)."""
    out = {}
    for key, data in (("task", task), ("not_task", not_task)):
        for suffix, fn in (("", masked.forward_fn(mask)),
                           ("_inverted", masked.forward_fn(mask, invert=True)),
                           ("_full", masked.forward_fn(None))):
            out[key + suffix] = accuracy(fn, data, batch_size, masked.device)
    return {k: out[k] for k in ACCURACY_KEYS}


# --------------------------------------------------------------------------- ablations


def mask_union(masks: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Entry-wise OR of masks over the same parameters."""
    out = {n: t.clone() for n, t in masks[0].items()}
    for m in masks[1:]:
        if set(m) != set(out):
            raise MaskError("mask_union: the masks cover different parameters")
        for n in out:
            out[n] |= m[n]
    return out


def task_specific(mask: dict[str, torch.Tensor], others: Sequence[dict[str, torch.Tensor]]
                  ) -> dict[str, torch.Tensor]:
    """The task-specific part of a module: ``mask AND NOT (union of others)``."""
    if not others:
        return {n: t.clone() for n, t in mask.items()}
    union = mask_union(list(others))
    if set(union) != set(mask):
        raise MaskError("task_specific: the masks cover different parameters")
    return {n: mask[n] & ~union[n] for n in mask}


def selective_partners(info: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """For every run key, the runs whose union is removed from its module for the selective
    ablation: the *other* tasks of the same family, at the same alpha and seed (all masks of
    one ``evaluate_group`` call come from one checkpoint). Runs whose ``role`` is not ``task``
    (complement and reference masks) neither get nor give a union."""
    out = {}
    task = lambda i: i.get("role", "task") == "task"  # noqa: E731
    for key, me in info.items():
        out[key] = sorted(k for k, o in info.items()
                          if k != key and o["family"] == me["family"] and o["task"] != me["task"]
                          and o["seed"] == me["seed"] and float(o["alpha"]) == float(me["alpha"])
                          and task(o)) if task(me) else []
    return out


def evaluate_group(model: nn.Module, masks: dict[str, dict[str, torch.Tensor]],
                   sets: dict[str, tuple[Split, Split]], *,
                   info: dict[str, dict[str, Any]] | None = None, batch_size: int = 64,
                   tol: float = 1e-4, degenerate_max: float = 0.5,
                   device: torch.device | str | None = None, precision: str = "fp32",
                   plan: dict[str, dict[str, set[tuple[str, str]]]] | None = None):
    """The ablation matrix of one checkpoint's masks, as an ``xarray.Dataset``.

    ``masks``: run key -> mask (bool tensors per parameter, the same parameters for all);
    ``sets``: eval-set name -> (select split = val, report split = test); ``info``: run key ->
    {"task", "family", "seed", "alpha"} (for the selective ablation; without it, or for a run
    with no partner, ``selective`` is NaN). Variants: ``mask`` (model * mask), ``inverted``
    (model * (1 - mask): the module removed), ``selective`` (the task-specific part removed:
    model * (1 - (mask AND NOT union of the same family's other tasks' masks, same alpha and
    seed))). Variables over (mask, variant, eval_set, split): ``accuracy`` (percent; NaN where
    the variant is degenerate on more than ``degenerate_max`` of the problems: such a number
    is the share of answers at index 0, not an accuracy), ``accuracy_raw`` (as measured),
    ``degenerate`` (fraction of problems with constant logits), ``n_problems``; over
    (eval_set, split): ``full_accuracy`` and ``full_degenerate`` of the unmasked model; over
    (mask, variant): ``kept`` (weights the variant keeps of the masked ones, percent).
    ``plan``: run key -> variant -> the (eval set, split) pairs to evaluate (others stay NaN,
    ``n_problems`` 0); None: every variant on every set and split. ``info`` may mark a run's
    ``role`` (``task``, ``complement``, ``reference``): only task runs enter selective unions.

    The same numbers in parts (e.g. one per worker): :func:`evaluate_part` for some masks and
    sets, :func:`merge_parts` into the Dataset (byte-identical to the one call).
    """
    part = evaluate_part(model, masks, sets, info=info, batch_size=batch_size, tol=tol,
                         device=device, precision=precision, plan=plan)
    return merge_parts([part], list(masks), list(sets), tol=tol, degenerate_max=degenerate_max)


def evaluate_part(model: nn.Module, masks: dict[str, dict[str, torch.Tensor]],
                  sets: dict[str, tuple[Split, Split]], *,
                  info: dict[str, dict[str, Any]] | None = None, batch_size: int = 64,
                  tol: float = 1e-4, device: torch.device | str | None = None,
                  precision: str = "fp32",
                  plan: dict[str, dict[str, set[tuple[str, str]]]] | None = None,
                  only: Sequence[str] | None = None, full_sets: Sequence[str] | None = None
                  ) -> dict[str, Any]:
    """Part of :func:`evaluate_group`'s matrix: the masks ``only`` (None: all; the others'
    masks still form the selective unions) on their planned pairs of ``sets`` (which need
    hold only those), and the unmasked model on ``full_sets`` (None: all of ``sets``).
    Returns plain arrays keyed by mask and set name (picklable; :func:`merge_parts`)."""
    if not masks:
        raise MaskError("evaluate_group: no masks given")
    keys = list(masks)
    names = list(masks[keys[0]])
    for k in keys:
        if list(masks[k]) != names:
            raise MaskError(f"evaluate_group: mask {k!r} covers other parameters than {keys[0]!r}")
    masked = MaskedModel(model, names=names, device=device, precision=precision)
    for k in keys:
        for n, s in zip(names, masked.shapes):
            if tuple(masks[k][n].shape) != s or masks[k][n].dtype != torch.bool:
                raise MaskError(f"evaluate_group: mask {k!r}[{n!r}] is not a bool tensor of "
                                f"shape {s}")
    partners = selective_partners(info) if info is not None else {}
    if plan is not None:  # a part given fewer sets than its masks' plan names would skip pairs
        lacking = sorted({name for k in (keys if only is None else only)
                          for pairs in plan.get(k, {}).values() for name, _ in pairs} - set(sets))
        if lacking:
            raise MaskError(f"evaluate_group: the plan names sets not given: {lacking[:3]}")
    n_var, n_split = len(VARIANTS), len(SPLITS)
    rows: dict[str, dict[str, np.ndarray]] = {}
    full: dict[str, dict[str, np.ndarray]] = {}

    def run(fn, name, s):
        return measure(fn, sets[name][s], tol=tol, batch_size=batch_size, device=masked.device)

    for name in (list(sets) if full_sets is None else full_sets):
        acc, deg = np.full(n_split, np.nan), np.full(n_split, np.nan)
        for s in range(n_split):
            m = run(masked.forward_fn(None), name, s)
            acc[s], deg[s] = m.accuracy, m.degenerate
        full[name] = {"acc": acc, "deg": deg}
    total = masked.numel
    for k in (keys if only is None else only):
        mask = masks[k]
        shape = (n_var, len(sets), n_split)
        row = {"acc": np.full(shape, np.nan), "deg": np.full(shape, np.nan),
               "n": np.zeros(shape, np.int64), "kept": np.full(n_var, np.nan),
               "sets": list(sets)}
        variants: dict[str, tuple[dict[str, torch.Tensor], bool]] = {
            "mask": (mask, False), "inverted": (mask, True)}
        if partners.get(k):
            variants["selective"] = (task_specific(mask, [masks[p] for p in partners[k]]), True)
        for v, (mk, invert) in variants.items():
            j = VARIANTS.index(v)
            on = sum(int(t.sum()) for t in mk.values())
            row["kept"][j] = 100.0 * ((total - on) if invert else on) / total
            todo = None if plan is None else plan.get(k, {}).get(v, set())
            for e, name in enumerate(sets):
                for s in range(n_split):
                    if todo is not None and (name, SPLITS[s]) not in todo:
                        continue
                    m = run(masked.forward_fn(mk, invert), name, s)
                    row["acc"][j, e, s], row["deg"][j, e, s], row["n"][j, e, s] = (
                        m.accuracy, m.degenerate, m.n_problems)
        rows[k] = row
    return {"rows": rows, "full": full}


def merge_parts(parts: Sequence[dict[str, Any]], keys: Sequence[str], set_names: Sequence[str],
                *, tol: float = 1e-4, degenerate_max: float = 0.5) -> xr.Dataset:
    """The :func:`evaluate_group` Dataset from parts that cover every mask of ``keys`` and
    every set of ``set_names`` once (a mask or set given twice, or missing, is an error)."""
    shape = (len(keys), len(VARIANTS), len(set_names), len(SPLITS))
    acc, deg, n_prob = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, np.int64)
    kept = np.full(shape[:2], np.nan)
    full_acc = np.full(shape[2:], np.nan)
    full_deg = np.full(shape[2:], np.nan)
    seen_rows: set[str] = set()
    seen_full: set[str] = set()
    for part in parts:
        for k, row in part["rows"].items():
            if k in seen_rows or k not in keys:
                raise MaskError(f"merge_parts: mask {k!r} given twice or not in the group")
            seen_rows.add(k)
            i = list(keys).index(k)
            kept[i] = row["kept"]
            for e_part, name in enumerate(row["sets"]):
                e = list(set_names).index(name)
                acc[i, :, e], deg[i, :, e], n_prob[i, :, e] = (
                    row["acc"][:, e_part], row["deg"][:, e_part], row["n"][:, e_part])
        for name, f in part["full"].items():
            if name in seen_full or name not in set_names:
                raise MaskError(f"merge_parts: set {name!r} given twice or not in the group")
            seen_full.add(name)
            e = list(set_names).index(name)
            full_acc[e], full_deg[e] = f["acc"], f["deg"]
    missing = [k for k in keys if k not in seen_rows] + [s for s in set_names
                                                         if s not in seen_full]
    if missing:
        raise MaskError(f"merge_parts: no part evaluated {missing[:3]}")
    return evals.dataset(keys, set_names, acc, deg, n_prob, kept, full_acc, full_deg,
                         tol=tol, degenerate_max=degenerate_max)


def relative_drop(reference: float, ablated: float) -> float:
    """Csordas et al.'s complement-protocol measure: ``(reference - ablated) / reference``,
    the share of the reference accuracy lost (e.g. reference mask on all data vs the mask
    trained on all but task k, both evaluated on task k). NaN when the reference is 0."""
    return float("nan") if reference == 0 else (reference - ablated) / reference


# --------------------------------------------------------------------------- training


TRAIN_CURVE_KEYS = ("step", "loss", "ce", "reg", "task_acc", "density")


@dataclass
class MaskResult:
    """What one mask-training run produced (before the final evaluation); tensors on the CPU."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    fingerprint: str
    logits: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    curve: dict[str, list]
    snapshots: dict[str, Any] = field(default_factory=dict)
    convergence: dict[str, float] = field(default_factory=dict)
    converged: bool = False
    pruned: int = 0  # inert weights dropped from the read-out (masks.prune_n)

    @property
    def degenerate(self) -> str:
        """Why the run never trained (:func:`degenerate_reason`); empty when it did."""
        return degenerate_reason(self.convergence)


def log_steps(steps: int, every: int) -> list[int]:
    """Steps at which the curve is logged: 0, every, 2 * every, ..., and ``steps``."""
    return sorted({*range(0, steps + 1, every), steps})


def snapshot_steps(steps: int, every: int, count: int) -> list[int]:
    """``count`` logged steps evenly spread from 0 to ``steps`` (fewer if fewer are logged)."""
    logged = log_steps(steps, every)
    idx = np.unique(np.round(np.linspace(0, len(logged) - 1, min(count, len(logged)))))
    return [logged[int(i)] for i in idx]


def convergence(curve: dict[str, list], window: float = 0.2, *, moved: float | None = None,
                spread: float | None = None) -> dict[str, float]:
    """How much the read-out density and the masked task accuracy (points) still move over
    the last ``window`` of the run, and whether the run trained at all: ``density_end`` (the
    read-out density at the end, percent) and, when given, ``moved`` (the largest change of
    a logit from ``masks.init``) and ``spread`` (largest minus smallest final logit). A run
    whose curve is flat because nothing moved is not "settled": :func:`degenerate_reason`.

    The window runs from the last logged step at or before ``(1 - window) * steps`` to the
    end (so it holds at least two logged steps); the change is the least-squares trend over
    it, ``|slope| * (window_end - window_start)``: with two points their difference, with
    more a movement estimate that the +-1-problem jitter of a small curve set does not
    dominate (the accuracy of 100 problems moves in steps of 1 point).
    """
    steps = list(curve["step"])
    if len(steps) < 2:
        raise MaskError("convergence: the curve has fewer than 2 logged steps")
    start_at = (1.0 - window) * steps[-1]
    first = max(i for i, s in enumerate(steps) if s <= start_at) if steps[0] <= start_at else 0
    x = np.asarray(steps[first:], float)
    out = {"window_start": float(x[0]), "window_end": float(x[-1])}
    for key, name in (("density", "density_change"), ("task_acc", "acc_change")):
        y = np.asarray(curve[key][first:], float)
        slope = np.polyfit(x, y, 1)[0] if len(x) > 2 else (y[-1] - y[0]) / (x[-1] - x[0])
        out[name] = float(abs(slope) * (x[-1] - x[0]))
    out["density_end"] = float(curve["density"][-1])
    if moved is not None:
        out["moved"] = float(moved)
    if spread is not None:
        out["spread"] = float(spread)
    return out


def is_converged(conv: dict[str, float], cfg: MaskConfig) -> bool:
    """The convergence rule: both changes within ``masks.converge_density`` / ``converge_acc``,
    and the run trained (not :func:`degenerate_reason`: a run that never moved is flat, not
    settled)."""
    return bool(conv["density_change"] <= cfg.converge_density
                and conv["acc_change"] <= cfg.converge_acc
                and not degenerate_reason(conv))


def lr_factor(step: int, steps: int, anneal: float) -> float:
    """The mask learning rate of ``step`` (0-based) as a fraction of ``masks.lr``: 1, then
    over the last ``anneal`` fraction of the run a cosine from 1 to 0 (after the last step).
    With a constant rate the logits of weights near the read-out threshold keep crossing 0
    (SCL: the read-out task accuracy swings 54-76% between logged steps at steps 200-400);
    annealing lets the read-out settle, the constant part lets weak but consistent
    gradients (harmful weights) act."""
    start = (1.0 - anneal) * steps
    if anneal <= 0 or step < start:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - start) / (steps - start)))


def noise_factor(step: int, steps: int, anneal: float) -> float:
    """The scale of the sampling noise at ``step``: 1, then over the last ``anneal`` fraction
    of the run a linear fall to 0, reached at the end of its first half (the rest trains the
    deterministic read-out's mask, so the read-out is what was optimised)."""
    start = (1.0 - anneal) * steps
    if anneal <= 0 or step < start:
        return 1.0
    return max(0.0, 1.0 - (step - start) / (0.5 * anneal * steps))


def _batches(n: int, size: int, generator: torch.Generator):
    """Endless batches of indices: a fresh permutation per epoch, the incomplete rest dropped."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - size + 1, size):
            yield perm[i:i + size]


# Louizos et al.'s stretch of the hard concrete distribution (NeuroSurgeon's defaults too)
HC_GAMMA, HC_ZETA = -0.1, 1.1


def sample_hard_concrete(masked: MaskedModel, generator: torch.Generator, tau: float,
                         scale: float = 1.0) -> Masks:
    """One hard concrete mask (Louizos et al., ICLR 2018): ``z = clamp(sigmoid((s + scale *
    l) / tau) * (zeta - gamma) + gamma, 0, 1)`` with logistic noise ``l``: exact zeros and ones
    with a gradient between them (no straight-through estimate). The noise is
    :meth:`MaskedModel.noise` (the same draws on every device)."""
    soft = torch.sigmoid((masked.flat + scale * masked.noise(generator)) / tau)
    z = (soft * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)
    out = Masks(masked._views(z))
    out.flat = z
    return out


def penalty(flat: torch.Tensor, cfg: MaskConfig) -> torch.Tensor:
    """The regulariser per unit alpha: ``sum(s)`` (Csordas, straight-through) or the hard
    concrete's expected number of kept weights, ``sum(sigmoid(s - tau * log(-gamma / zeta)))``."""
    if cfg.estimator == "hard_concrete":
        return torch.sigmoid(flat - cfg.tau * math.log(-HC_GAMMA / HC_ZETA)).sum()
    return flat.sum()


def _flat_logits(masked: MaskedModel, logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-parameter logits (standard layout) as ``masked.flat`` holds them (4-D ones in
    channels-last memory order)."""
    parts = [logits[n].permute(0, 2, 3, 1) if logits[n].dim() == 4 else logits[n]
             for n in masked.names]
    return torch.cat([p.reshape(-1) for p in parts]).to(masked.device, torch.float32)


def check_settings(cfg: MaskConfig, alpha: float, steps: int, n_train: int) -> None:
    """One clear error for run settings the method cannot use (non-finite numbers included:
    a NaN init would give an empty mask and exit 0)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise MaskError(f"alpha: expected a finite number > 0, got {alpha!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise MaskError(f"steps: expected an integer > 0, got {steps!r}")
    for key in ("init", "lr", "tau", "readout"):
        value = getattr(cfg, key)
        free = key in ("init", "readout")
        if not math.isfinite(value) or (not free and value <= 0):
            raise MaskError(f"masks.{key}: expected a finite number{'' if free else ' > 0'}"
                            f", got {value!r}")
    if not 0.0 <= cfg.noise_anneal <= 1.0:
        raise MaskError(f"masks.noise_anneal: expected a fraction in [0, 1], got "
                        f"{cfg.noise_anneal!r}")
    if cfg.batch_size < cfg.n_samples:
        raise MaskError(f"masks.batch_size ({cfg.batch_size}) must be >= masks.n_samples "
                        f"({cfg.n_samples}): each mask sample gets a chunk of the batch")
    if n_train < cfg.batch_size:
        raise MaskError(f"masks.batch_size ({cfg.batch_size}) exceeds the {n_train} training "
                        "problems of the task")


def train_mask(model: nn.Module, cfg: MaskConfig, train: Split, curve_data: Split, *,
               alpha: float, seed: int, steps: int, progress: bool = False,
               device: torch.device | str | None = None, precision: str = "fp32",
               start: MaskResult | None = None) -> MaskResult:
    """Train one mask of ``model`` on ``train``; log the curve on ``curve_data``.

    ``start``: continue that run (its final logits are the initial ones; the continuation
    test of :mod:`core.validate` sets the schedule).

    Loss: ``ce + alpha * penalty(s)``, ``ce`` the batch-mean cross-entropy, the penalty of
    ``masks.estimator`` (:func:`penalty`; the module docstring relates alpha to Csordas' beta).

    Deterministic for a given seed (batches and noise come from one seeded CPU generator).
    Curve (``masks.log_every``): ``ce`` = mean training cross-entropy since the previous log
    (step 0: the first batch, before any update), ``reg`` = ``alpha * sum(s)`` at the log
    (unbounded below, so ``loss = ce + reg`` cannot show convergence; ``ce`` and ``density``
    can); ``task_acc`` = percent of ``curve_data`` solved by model * read-out mask (the
    inverted mask is evaluated once, in ``evals.nc``: on the curve it cost ~a quarter of a
    run and nothing read it); ``density`` = percent of masked weights kept
    by the read-out. The result carries :func:`convergence` and the ``converged`` flag.
    Stops with :class:`MaskError` naming the step and the quantity when the loss or the
    logits become non-finite.
    """
    check_settings(cfg, alpha, steps, len(train))
    check_finite_weights(model)
    masked = MaskedModel(model, cfg.include, cfg.init, mask_norm=cfg.mask_norm, device=device,
                         precision=precision, names=None if start is None else start.names)
    if start is not None:
        with torch.no_grad():
            masked.flat.copy_(_flat_logits(masked, start.logits))
    dev = masked.device
    snap_name = snapshot_parameter(masked.names, masked.shapes, cfg.snapshot_param)
    logged, snaps = set(log_steps(steps, cfg.log_every)), snapshot_steps(
        steps, cfg.log_every, cfg.snapshots)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam([masked.flat], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, steps, cfg.lr_anneal))
    curve: dict[str, list] = {k: [] for k in TRAIN_CURVE_KEYS}
    snap_logits: list[torch.Tensor] = []

    def log(step: int, ce: float) -> None:
        mask = masked.binary(cfg.readout)
        reg = alpha * float(penalty(masked.flat.detach().double(), cfg))
        curve["step"].append(step)
        curve["ce"].append(ce)
        curve["reg"].append(reg)
        curve["loss"].append(ce + reg)
        curve["task_acc"].append(accuracy(masked.forward_fn(mask), curve_data,
                                          cfg.batch_size, dev))
        curve["density"].append(100.0 * sum(int(m.sum()) for m in mask.values()) / masked.numel)
        if step in snaps:
            snap_logits.append(masked.logits[snap_name].to("cpu").clone(
                memory_format=torch.contiguous_format))

    batches = _batches(len(train), cfg.batch_size, gen)
    sampler = (masked.sample if cfg.estimator == "straight_through" else
               lambda *a: sample_hard_concrete(masked, *a))
    window: list[float] = []
    bar = range(steps)
    if progress:
        bar = progress_bar(iterable=bar, desc="mask", unit="step")
    for t in bar:
        x, y = train.batch(next(batches), dev)
        opt.zero_grad(set_to_none=True)
        ce = x.new_zeros((), dtype=torch.float32)
        for xc, yc in zip(x.chunk(cfg.n_samples), y.chunk(cfg.n_samples)):
            out = masked(xc, sampler(gen, cfg.tau, noise_factor(t, steps, cfg.noise_anneal)))
            ce = ce + F.cross_entropy(out, yc, reduction="sum")
        ce = ce / len(y)
        loss = ce + alpha * penalty(masked.flat, cfg)
        loss.backward()
        ce_value, loss_value = ce.item(), loss.item()
        if not math.isfinite(loss_value):
            raise MaskError(f"mask training: non-finite loss at step {t} (cross-entropy "
                            f"{ce_value!r}, regulariser {alpha * float(penalty(masked.flat.detach(), cfg))!r}); "
                            "check the checkpoint, masks.init, masks.lr and alpha")
        if t == 0:
            log(0, ce_value)
        try:
            opt.step()
        except RuntimeError as err:  # e.g. a rate torch cannot hold in float32
            raise MaskError(f"mask training: the optimiser step {t} failed with masks.lr "
                            f"{cfg.lr!r} ({err}); use a masks.lr in its plausible range "
                            "(core/config.py)") from None
        sched.step()
        if not bool(torch.isfinite(masked.flat).all()):
            raise MaskError(f"mask training: non-finite mask logits after step {t + 1} "
                            f"(masks.lr {cfg.lr!r}, alpha {alpha!r})")
        if cfg.clamp > 0:
            with torch.no_grad():
                masked.flat.clamp_(-cfg.clamp, cfg.clamp)
        window.append(ce_value)
        if t + 1 in logged:
            log(t + 1, float(np.mean(window)))
            window = []
    final = masked.flat.detach()
    conv = convergence(curve, cfg.converge_window, spread=float(final.max() - final.min()),
                       moved=float((final - cfg.init).abs().max()))
    mask = masked.binary(cfg.readout)
    pruned = 0
    if cfg.prune_n > 0:
        mask, pruned = prune_inert(masked, mask, train.head(cfg.prune_n), batch_size=64,
                                   seed=seed)
    logits = {n: s.to("cpu").clone(memory_format=torch.contiguous_format)
              for n, s in masked.logits.items()}
    return MaskResult(masked.names, masked.shapes, masked.fingerprint, logits, mask, curve,
                      {"param": snap_name, "steps": snaps, "logits": torch.stack(snap_logits)},
                      conv, is_converged(conv, cfg), pruned)


# --------------------------------------------------------------------------- inert weights


def inert_weights(masked: MaskedModel, mask: dict[str, torch.Tensor], data: Split, *,
                  batch_size: int = 64, draws: int = 2, seed: int = 0
                  ) -> dict[str, torch.Tensor]:
    """The kept weights whose removal cannot change the answer on ``data`` to first order
    (bool per parameter): the gradient of every problem's *centred* logits (a shift of all
    candidates changes no answer and no cross-entropy) with respect to the weight's mask value
    is exactly 0. Structurally dead weights are exactly that: the inputs of a unit whose every
    output weight is removed, a weight of value 0, a path cut further on. Random zero-mean
    projections of the logits (``draws`` per batch) make a weight that moves any centred
    logit of any problem show a non-zero gradient (with probability 1)."""
    gen = torch.Generator().manual_seed(int(seed))
    flat = _flat_logits(masked, {n: mask[n].float() for n in masked.names})
    m = {n: t.detach().requires_grad_(True) for n, t in masked._views(flat).items()}
    # the views are in the model's memory layout; gradients per parameter in standard layout
    total = {n: torch.zeros(sh) for n, sh in zip(masked.names, masked.shapes)}
    for i in range(0, len(data), batch_size):
        x, _ = data.batch(slice(i, i + batch_size), masked.device)
        out = masked(x, m)
        out = out - out.mean(-1, keepdim=True)
        for _ in range(draws):
            r = torch.randn(out.shape, generator=gen).to(out.device)
            grads = torch.autograd.grad((out * r).sum(), list(m.values()), retain_graph=True)
            for n, g in zip(m, grads):
                total[n] += g.detach().abs().to("cpu").reshape(total[n].shape)
    return {n: mask[n] & (total[n] == 0) for n in masked.names}


def centred_logits(masked: MaskedModel, mask: dict[str, torch.Tensor], data: Split,
                   batch_size: int = 64) -> torch.Tensor:
    out = predict(masked.forward_fn(mask), data, batch_size, masked.device)
    return out - out.mean(-1, keepdim=True)


def prune_inert(masked: MaskedModel, mask: dict[str, torch.Tensor], data: Split, *,
                batch_size: int = 64, tol: float = 1e-5, seed: int = 0
                ) -> tuple[dict[str, torch.Tensor], int]:
    """``mask`` without its inert weights (:func:`inert_weights`), checked: the centred
    logits on ``data`` must stay within ``tol * max(1, max |logit|)``; tensors whose inert
    weights fail the check together are kept whole (a ReLU that is off on every problem of
    ``data`` is inert to first order only). Returns the mask and how many weights it lost."""
    inert = inert_weights(masked, mask, data, batch_size=batch_size, seed=seed)
    before = centred_logits(masked, mask, data, batch_size)
    bound = tol * max(1.0, float(before.abs().max()))

    def same(candidate: dict[str, torch.Tensor]) -> bool:
        after = centred_logits(masked, candidate, data, batch_size)
        return bool((after - before).abs().max() <= bound)

    pruned = {n: mask[n] & ~inert[n] for n in mask}
    if not same(pruned):
        pruned = {n: t.clone() for n, t in mask.items()}
        for n in masked.names:
            if bool(inert[n].any()):
                trial = {**pruned, n: pruned[n] & ~inert[n]}
                if same(trial):
                    pruned = trial
    lost = sum(int(mask[n].sum()) - int(pruned[n].sum()) for n in mask)
    return pruned, lost
