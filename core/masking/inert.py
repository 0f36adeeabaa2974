"""Inert weights: kept weights whose removal changes no centred logit on the training
problems (``masks.prune_n``); they belong to no module and leave the read-out."""

from __future__ import annotations

import torch

from core.masking.measure import Split
from core.masking.model import MaskedModel, flat_logits
from core.models import predict


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
    flat = flat_logits(masked, {n: mask[n].float() for n in masked.names})
    m = {n: t.detach().requires_grad_(True) for n, t in masked.views(flat).items()}
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
