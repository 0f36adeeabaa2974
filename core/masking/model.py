"""The masked model: which parameters are masked, BatchNorm folded into the convolution before
it, one flat logit tensor and one flat weight tensor per model, and the straight-through
sample of a mask (:class:`MaskedModel`). Method and speed: :mod:`core.masking`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from core.device import autocast, keep_freed_memory
from core.formats.masks import MaskError, fingerprint

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


class StraightThrough(torch.autograd.Function):
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
        for n, v in self.views(self.flat_weights).items():
            v.copy_(weights.get(n, params[n]))
        self.weights = self.views(self.flat_weights)

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

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
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
        return self.views(self.flat.detach())

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
        hard = StraightThrough.apply(self.flat, self.noise(generator), float(scale),
                                      float(tau))
        out = Masks(self.views(hard))
        out.flat = hard
        return out

    def binary(self, threshold: float = 0.0) -> dict[str, torch.Tensor]:
        """The deterministic read-out ``logits > threshold`` (bool CPU tensors, standard
        layout); ``threshold`` 0 keeps the weights a sampled mask keeps with probability > 0.5
        (Csordas), ``-2`` those it keeps with probability > sigmoid(-2) = 0.12."""
        return {n: m.to("cpu").clone(memory_format=torch.contiguous_format)
                for n, m in self.views(self.flat.detach() > threshold).items()}

    def effective(self, masks: dict[str, torch.Tensor], invert: bool = False
                  ) -> dict[str, torch.Tensor]:
        """The masked parameters of ``self.net`` by name: ``w * m`` (``w * (1 - m)`` if
        ``invert``), plus the shift of a folded norm on a masked bias."""
        flat = getattr(masks, "flat", None)
        if flat is not None and flat.shape == self.flat_weights.shape:  # one product
            m = flat.to(device=self.device, dtype=self.flat_weights.dtype)
            eff = self.views(self.flat_weights * (1 - m) if invert else
                              self.flat_weights * m)
        else:
            eff = {}
            for n, w in self.weights.items():
                m = masks[n].to(device=w.device, dtype=w.dtype)
                eff[n] = strided_like(w, w * (1 - m) if invert else w * m)
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


def strided_like(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
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



def flat_logits(masked: MaskedModel, logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-parameter logits (standard layout) as ``masked.flat`` holds them (4-D ones in
    channels-last memory order)."""
    parts = [logits[n].permute(0, 2, 3, 1) if logits[n].dim() == 4 else logits[n]
             for n in masked.names]
    return torch.cat([p.reshape(-1) for p in parts]).to(masked.device, torch.float32)
