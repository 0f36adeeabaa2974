"""Planted modules among HARMFUL distractors: networks whose modules are known by construction.

A two-layer network solves ``tasks`` tasks of ``classes`` classes each. Task t's class k is
signalled by its own input feature ``t*C + k`` (one-hot); the task's planted module is two
weights per class, ``l1[t*C + k, t*C + k]`` (feature -> its unit) and ``l2[k, t*C + k]``
(unit -> logit k), so the modules of different tasks share no weight. Everything else is
harmful or useless, nothing is merely "unused":

- in a problem of task t the other tasks' features are random (they carry no information about
  the answer), so the other tasks' modules add noise to the logits;
- ``noise_units`` units read ``noise_inputs`` random inputs and write random weights into every
  logit (their strength is ``distractor``: 1 is the mild network of the test suite, larger
  values put the unmasked network further below its planted modules);
- biases are zero (their masks get no gradient: only the regulariser moves them).

The unmasked network is therefore well below 100% on every task; each planted module alone
solves its task (:func:`check_truth` verifies both before a result is trusted). The masking
method is validated on it (:mod:`core.validate`, ``tests/test_planted.py``): recovery of each
module (IoU), no overlap between tasks' masks, and Csordas et al.'s complement protocol against
the drops the planted modules themselves give (:func:`complement_truth`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from core.masking import MaskedModel, Split, accuracy, relative_drop

Mask = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Spec:
    """The planted network's shape: 10 classes give 20-weight modules, so an IoU >= 0.95
    tolerates one stray weight instead of demanding exactness."""

    classes: int = 10
    tasks: int = 3
    noise_inputs: int = 8
    noise_units: int = 16
    distractor: float = 1.0  # scale of the noise units' weights (1: the mild network)

    @property
    def inputs(self) -> int:
        return self.tasks * self.classes + self.noise_inputs

    @property
    def hidden(self) -> int:
        return self.tasks * self.classes + self.noise_units


MILD = Spec()
# Strong distractors: the unmasked network ~50 points below a planted module alone.
STRONG = Spec(distractor=3.0)


class Planted(nn.Module):
    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(spec.inputs, spec.hidden), nn.Linear(spec.hidden,
                                                                          spec.classes)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(x)))


def build(spec: Spec = MILD) -> tuple[nn.Module, list[Mask]]:
    """The network and each task's planted module (bool masks over every parameter)."""
    g = torch.Generator().manual_seed(0)
    m = Planted(spec)
    C, T = spec.classes, spec.tasks
    modules = []
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for t in range(T):
            s = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in m.named_parameters()}
            for k in range(C):
                i = t * C + k
                m.l1.weight[i, i], m.l2.weight[k, i] = 4.0, 2.0
                s["l1.weight"][i, i] = s["l2.weight"][k, i] = True
            modules.append(s)
        noise_rows = slice(T * C, spec.hidden)
        nz, nh = spec.noise_inputs, spec.noise_units
        m.l1.weight[noise_rows, T * C:] = 3.0 * torch.randn(nh, nz, generator=g) / nz ** 0.5
        m.l2.weight[:, noise_rows] = spec.distractor * 1.5 * torch.randn(C, nh, generator=g)
    return m, modules


def data(spec: Spec, tasks: list[int], n: int, seed: int) -> Split:
    """``n`` problems drawn evenly from ``tasks``: the task's features one-hot, the other
    tasks' features uniform noise, the noise inputs standard normal."""
    g = torch.Generator().manual_seed(seed)
    C, T = spec.classes, spec.tasks
    task = torch.tensor(tasks)[torch.arange(n) % len(tasks)]
    y = torch.randint(0, C, (n,), generator=g)
    x = torch.zeros(n, spec.inputs)
    x[:, :T * C] = torch.rand(n, T * C, generator=g)
    for t in range(T):
        rows = task == t
        x[rows, t * C:(t + 1) * C] = 0.0
        x[rows, t * C + y[rows]] = 1.0
    x[:, T * C:] = torch.randn(n, spec.noise_inputs, generator=g)
    return Split(x, y, name=f"planted tasks {tasks}")


def n_on(mask: Mask) -> int:
    return sum(int(v.sum()) for v in mask.values())


def iou(a: Mask, b: Mask) -> float:
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union_ = sum(int((a[n] | b[n]).sum()) for n in a)
    return 1.0 if union_ == 0 else inter / union_


def iomin(a: Mask, b: Mask) -> float:
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    small = min(n_on(a), n_on(b))
    return 0.0 if small == 0 else inter / small


def union(masks: list[Mask]) -> Mask:
    return {n: torch.stack([m[n] for m in masks]).any(0) for n in masks[0]}


def relative_drops(m: nn.Module, ref: Mask, comp: Mask, test: dict[int, Split]
                   ) -> dict[int, float]:
    """Per task: the relative drop from the reference mask to the complement mask."""
    mm = MaskedModel(m)
    return {t: relative_drop(accuracy(mm.forward_fn(ref), test[t]),
                             accuracy(mm.forward_fn(comp), test[t])) for t in test}


def complement_truth(m: nn.Module, modules: list[Mask], test: dict[int, Split], left_out: int
                     ) -> dict[int, float]:
    """The drops a perfect method reports: the planted union vs the union without
    ``left_out``'s module. Every module adds noise to the other tasks' problems, so the other
    tasks GAIN without it (negative drops) and the left-out task falls to chance."""
    keep = [modules[t] for t in test if t != left_out]
    return relative_drops(m, union(modules), union(keep), test)


def check_truth(spec: Spec, n: int = 512) -> dict[str, float]:
    """The accuracies the planted claims rest on, per task (percent): the unmasked network,
    the task's module alone, another task's module alone. Raises ``ValueError`` when a module
    does not solve its task or the distractors do not harm."""
    m, modules = build(spec)
    mm = MaskedModel(m)
    out: dict[str, float] = {}
    for t in range(spec.tasks):
        d = data(spec, [t], n, 5 + t)
        out[f"full_{t}"] = accuracy(mm.forward_fn(None), d)
        out[f"module_{t}"] = accuracy(mm.forward_fn(modules[t]), d)
        out[f"other_{t}"] = accuracy(mm.forward_fn(modules[(t + 1) % spec.tasks]), d)
        if out[f"module_{t}"] < 100.0 or out[f"full_{t}"] >= out[f"module_{t}"] - 20.0:
            raise ValueError(f"planted network {spec}: task {t}'s module solves "
                             f"{out[f'module_{t}']:.1f}%, the unmasked network "
                             f"{out[f'full_{t}']:.1f}%: the truth does not hold")
    return out
