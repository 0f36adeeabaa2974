"""Differentiable binary weight masks for any ``nn.Module``: find a task's functional module.

Method (Csordas et al., ICLR 2021; settings of the original study in ``shared/reference``):
the trained weights ``w`` are frozen (BatchNorm in eval mode: running statistics untouched);
every masked parameter gets a logit tensor ``s`` initialised to ``masks.init``. Each step
samples logistic noise ``l = log(u / (1 - u))``, ``m_soft = sigmoid((s + l) / tau)``, the hard
mask ``m_soft > 0.5`` with a straight-through gradient, runs the model with weights ``w * m``
through :func:`torch.func.functional_call` (no per-model code) and minimises
``cross-entropy + alpha * sum(s)`` with Adam on the logits only. The read-out is
deterministic: ``mask = s > 0``. Model * mask and model * (1 - mask) (the inverted mask, an
ablation) are evaluated on the task set and on the not-task set.

``masks.n_samples`` > 1 splits each batch into that many chunks, each run with its own mask
sample (more samples per step at the same cost). Speed: all logits live in one flat tensor
(one noise draw and a handful of element-wise ops per step, whatever the number of
parameters); four-dimensional (convolution) weights and their mask views are channels-last,
which makes oneDNN convolutions ~1.6x faster on CPU, so a masked step costs about what a plain
step of the model costs. Several masks in one ``torch.func.vmap`` forward showed no
consistent gain over one after the other on a shared 2-core CPU (0.6x to 3.7x the sequential
time across runs; ``benchmarks/masking.py``), so every run is independent (one DVC stage per
mask).

File format (``data/masks/<key>.pt``): see ``docs/architecture.md``; :func:`load_mask`
validates one, and against a model when given.

    python -m core.masking --params active.yaml --checkpoint data/train/scl_90.pt \\
        --task circle --alpha 1e-5 --seed 0 --data data/raven --out data/masks/x.pt
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from core.config import SHAPES, ConfigError, MaskConfig
from core.maskfile import (  # noqa: F401  (the mask file's home; re-exported for callers)
    ACCURACY_KEYS,
    CURVE_KEYS,
    FILE_KEYS,
    FORMAT,
    MaskError,
    curve_dataset,
    fingerprint,
    load_mask,
    mask_record,
    save_mask,
)

# --------------------------------------------------------------------------- the masked model


def select_parameters(model: nn.Module, include: Sequence[str] = ()) -> list[str]:
    """Names of the parameters to mask, in model order: all, or those starting with a prefix
    in ``include``. A prefix that matches nothing is an error (a typo would silently mask
    less than asked)."""
    names = [n for n, _ in model.named_parameters()]
    if not include:
        return names
    for prefix in include:
        if not any(n.startswith(prefix) for n in names):
            raise MaskError(f"masks.include: prefix {prefix!r} matches no parameter (names "
                            f"start with {', '.join(sorted({n.split('.')[0] for n in names}))})")
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


class MaskedModel:
    """A frozen model with one mask-logit tensor per masked parameter.

    The model is put in eval mode and its parameters stop requiring gradients (in place):
    only the logits are trained. Forward passes substitute ``w * m`` for the masked
    parameters through ``functional_call``; buffers (BatchNorm running statistics) and
    unmasked parameters come from the model unchanged.
    """

    def __init__(self, model: nn.Module, include: Sequence[str] = (), init: float = 0.0):
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.names = select_parameters(model, include)
        params = dict(model.named_parameters())
        self.shapes = [tuple(params[n].shape) for n in self.names]
        self.weights = {n: self._layout(params[n].detach()) for n in self.names}
        # All logits live in one flat leaf tensor (one Adam tensor, one noise draw, a few
        # element-wise ops per step instead of a dozen per parameter).
        self.sizes = [math.prod(sh) for sh in self.shapes]
        self.flat = torch.full((sum(self.sizes),), float(init), requires_grad=True)

    @staticmethod
    def _layout(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views of a flat tensor; 4-D ones with channels-last strides."""
        out = {}
        for n, sh, part in zip(self.names, self.shapes, flat.split(self.sizes)):
            if len(sh) == 4:  # memory order (O, kh, kw, C) is channels-last of (O, C, kh, kw)
                out[n] = part.view(sh[0], sh[2], sh[3], sh[1]).permute(0, 3, 1, 2)
            else:
                out[n] = part.view(sh)
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

    def sample(self, generator: torch.Generator, tau: float) -> dict[str, torch.Tensor]:
        """One stochastic mask per parameter: hard values in the forward pass, the gradient
        of ``sigmoid((s + l) / tau)`` in the backward pass (straight-through)."""
        u = torch.empty(self.flat.shape).uniform_(generator=generator)
        u.clamp_(torch.finfo(torch.float32).tiny, 1.0 - 2 ** -24)
        soft = torch.sigmoid((self.flat + torch.logit(u)) / tau)  # logistic noise
        hard = (soft > 0.5).to(soft.dtype)
        return self._views(hard + (soft - soft.detach()))

    def binary(self) -> dict[str, torch.Tensor]:
        """The deterministic read-out ``logits > 0`` (bool tensors, standard layout)."""
        return {n: m.clone(memory_format=torch.contiguous_format)
                for n, m in self._views(self.flat.detach() > 0).items()}

    def __call__(self, x: torch.Tensor, masks: dict[str, torch.Tensor] | None = None,
                 invert: bool = False) -> torch.Tensor:
        """Model output with weights ``w * m`` (``w * (1 - m)`` if ``invert``); unmasked if
        ``masks`` is None."""
        if masks is None:
            return self.model(x)
        eff = {}
        for n, w in self.weights.items():
            m = masks[n].to(w.dtype)
            eff[n] = w * (1 - m) if invert else w * m
        return functional_call(self.model, eff, (x,))


# --------------------------------------------------------------------------- data


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

    def batch(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.inputs[idx]
        return (self.prepare(x) if self.prepare else x), self.targets[idx]


@torch.no_grad()
def accuracy(masked: MaskedModel, data: Split, masks: dict[str, torch.Tensor] | None,
             invert: bool = False, batch_size: int = 64) -> float:
    """Percent of ``data`` solved by model * mask (or * (1 - mask), or unmasked)."""
    correct = 0
    for i in range(0, len(data), batch_size):
        x, y = data.batch(slice(i, i + batch_size))
        correct += int((masked(x, masks, invert).argmax(-1) == y).sum())
    return 100.0 * correct / len(data)


def evaluate(masked: MaskedModel, mask: dict[str, torch.Tensor], task: Split,
             not_task: Split, batch_size: int = 64) -> dict[str, float]:
    """The six accuracies of the file format (percent)."""
    out = {}
    for key, data in (("task", task), ("not_task", not_task)):
        out[key] = accuracy(masked, data, mask, False, batch_size)
        out[f"{key}_inverted"] = accuracy(masked, data, mask, True, batch_size)
        out[f"{key}_full"] = accuracy(masked, data, None, False, batch_size)
    return {k: out[k] for k in ACCURACY_KEYS}


# --------------------------------------------------------------------------- training


@dataclass
class MaskResult:
    """What one mask-training run produced (before the final evaluation)."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    fingerprint: str
    logits: dict[str, torch.Tensor]
    mask: dict[str, torch.Tensor]
    curve: dict[str, list]
    snapshots: dict[str, Any] = field(default_factory=dict)


def log_steps(steps: int, every: int) -> list[int]:
    """Steps at which the curve is logged: 0, every, 2 * every, ..., and ``steps``."""
    return sorted({*range(0, steps + 1, every), steps})


def snapshot_steps(steps: int, every: int, count: int) -> list[int]:
    """``count`` logged steps evenly spread from 0 to ``steps`` (fewer if fewer are logged)."""
    logged = log_steps(steps, every)
    idx = np.unique(np.round(np.linspace(0, len(logged) - 1, min(count, len(logged)))))
    return [logged[int(i)] for i in idx]


def _batches(n: int, size: int, generator: torch.Generator):
    """Endless batches of indices: a fresh permutation per epoch, the incomplete rest dropped."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - size + 1, size):
            yield perm[i:i + size]


def check_settings(cfg: MaskConfig, alpha: float, steps: int, n_train: int) -> None:
    """One clear error for run settings the method cannot use."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise MaskError(f"alpha: expected a number > 0, got {alpha!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise MaskError(f"steps: expected an integer > 0, got {steps!r}")
    if cfg.batch_size < cfg.n_samples:
        raise MaskError(f"masks.batch_size ({cfg.batch_size}) must be >= masks.n_samples "
                        f"({cfg.n_samples}): each mask sample gets a chunk of the batch")
    if n_train < cfg.batch_size:
        raise MaskError(f"masks.batch_size ({cfg.batch_size}) exceeds the {n_train} training "
                        "problems of the task")


def train_mask(model: nn.Module, cfg: MaskConfig, train: Split, curve_data: Split, *,
               alpha: float, seed: int, steps: int, progress: bool = False) -> MaskResult:
    """Train one mask of ``model`` on ``train``; log the curve on ``curve_data``.

    Deterministic for a given seed (batches and noise come from one seeded generator).
    Curve (``masks.log_every``): ``loss`` = mean training loss since the previous log (step
    0: the first batch, before any update); ``task_acc`` / ``task_inverted_acc`` = percent
    of ``curve_data`` solved by model * read-out mask / model * (1 - read-out mask);
    ``density`` = percent of masked weights kept by the read-out.
    """
    check_settings(cfg, alpha, steps, len(train))
    masked = MaskedModel(model, cfg.include, cfg.init)
    snap_name = snapshot_parameter(masked.names, masked.shapes, cfg.snapshot_param)
    logged, snaps = set(log_steps(steps, cfg.log_every)), snapshot_steps(
        steps, cfg.log_every, cfg.snapshots)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam([masked.flat], lr=cfg.lr)
    curve: dict[str, list] = {k: [] for k in CURVE_KEYS}
    snap_logits: list[torch.Tensor] = []

    def log(step: int, loss: float) -> None:
        mask = masked.binary()
        curve["step"].append(step)
        curve["loss"].append(loss)
        curve["task_acc"].append(accuracy(masked, curve_data, mask, False, cfg.batch_size))
        curve["task_inverted_acc"].append(accuracy(masked, curve_data, mask, True,
                                                   cfg.batch_size))
        curve["density"].append(100.0 * sum(int(m.sum()) for m in mask.values()) / masked.numel)
        if step in snaps:
            snap_logits.append(masked.logits[snap_name].clone(memory_format=torch.contiguous_format))

    batches = _batches(len(train), cfg.batch_size, gen)
    window: list[float] = []
    bar = range(steps)
    if progress:
        from tqdm import tqdm
        bar = tqdm(bar, desc="mask", unit="step", mininterval=2.0, file=sys.stderr)
    for t in bar:
        x, y = train.batch(next(batches))
        opt.zero_grad(set_to_none=True)
        ce = x.new_zeros(())
        for xc, yc in zip(x.chunk(cfg.n_samples), y.chunk(cfg.n_samples)):
            out = masked(xc, masked.sample(gen, cfg.tau))
            ce = ce + F.cross_entropy(out, yc, reduction="sum")
        loss = ce / len(y) + alpha * masked.flat.sum()
        loss.backward()
        value = loss.item()
        if t == 0:
            log(0, value)
        opt.step()
        window.append(value)
        if t + 1 in logged:
            log(t + 1, float(np.mean(window)))
            window = []
    mask = masked.binary()
    logits = {n: s.clone(memory_format=torch.contiguous_format)
              for n, s in masked.logits.items()}
    return MaskResult(masked.names, masked.shapes, masked.fingerprint, logits, mask, curve,
                      {"param": snap_name, "steps": snaps, "logits": torch.stack(snap_logits)})


# --------------------------------------------------------------------------- analysis helpers


def iou(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """100 * |A and B| / |A or B| over all masked entries (100 when both are empty)."""
    if set(a) != set(b):
        raise MaskError("iou: the masks cover different parameters")
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    return 100.0 if union == 0 else 100.0 * inter / union


def seed_agreement(masks: Sequence[dict[str, torch.Tensor]]) -> np.ndarray:
    """Pairwise IoU (percent) between the masks of several seeds of one setting."""
    k = len(masks)
    out = np.full((k, k), 100.0)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = iou(masks[i], masks[j])
    return out


# --------------------------------------------------------------------------- one run (CLI)


def run(params: str | Path, checkpoint: str | Path, task: str, alpha: float, seed: int,
        data: str | Path, out: str | Path, steps: int | None = None,
        profile: str | None = None, progress: bool = True) -> dict:
    """Train the mask of ``task`` at ``checkpoint``; write it to ``out``; return the record.

    Data: ``<data>/tasks/<task>/train`` trains; the final accuracies use the ``val`` splits
    of ``tasks/<task>`` and ``tasks/not_<task>`` (first ``masks.eval_n`` problems, 0 = all);
    the curve uses the first ``masks.curve_n`` of the task's ``val`` split.
    """
    from core.config import load

    cfg = load(params, profile)
    mc = cfg.masks
    if task not in SHAPES:
        raise MaskError(f"task: unknown task {task!r} (expected one of {', '.join(SHAPES)})")
    steps = mc.steps if steps is None else steps
    check_settings(mc, alpha, steps, n_train=mc.batch_size)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(mc.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _run(cfg, checkpoint, task, alpha, seed, data, out, steps, progress)
    finally:  # a caller (a notebook, a test) keeps its own torch settings
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _run(cfg: Any, checkpoint: str | Path, task: str, alpha: float, seed: int,
         data: str | Path, out: str | Path, steps: int, progress: bool) -> dict:
    from core.data import RavenDataset, to_float
    from core.models import load_checkpoint

    mc = cfg.masks
    model, meta = load_checkpoint(checkpoint, arch=cfg.model.arch)
    root = Path(data) / "tasks"

    def split(name: str, part: str, n: int = 0) -> Split:
        ds = RavenDataset(root / name, split=part)
        if ds.image_size != meta["image_size"]:
            raise MaskError(f"{root / name}: {ds.image_size} px panels, but checkpoint "
                            f"{checkpoint} was trained on {meta['image_size']} px")
        return Split(ds.images, ds.targets, to_float, str(root / name / part)).head(n)

    train = split(task, "train")
    task_val, not_val = split(task, "val", mc.eval_n), split(f"not_{task}", "val", mc.eval_n)
    result = train_mask(model, mc, train, task_val.head(mc.curve_n), alpha=alpha, seed=seed,
                        steps=steps, progress=progress)
    masked = MaskedModel(model, mc.include)
    acc = evaluate(masked, result.mask, task_val, not_val, mc.batch_size)
    rec = mask_record(result, acc, checkpoint=Path(checkpoint).stem, task=task, alpha=alpha,
                      seed=seed, steps=steps, arch=meta["arch"], image_size=meta["image_size"])
    save_mask(out, rec)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.masking",
                                 description="Train one binary weight mask (a functional module).")
    ap.add_argument("--params", default="params.yaml", help="params.yaml or active.yaml")
    ap.add_argument("--profile", default=None, help="profile of a params.yaml")
    ap.add_argument("--checkpoint", required=True, help="a data/train/<name>.pt checkpoint")
    ap.add_argument("--task", required=True, help=f"shape task: {', '.join(SHAPES)}")
    ap.add_argument("--alpha", type=float, required=True, help="regularisation strength (> 0)")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--steps", type=int, default=None, help="default: masks.steps")
    ap.add_argument("--data", default="data/raven", help="folder holding tasks/<task>/...")
    ap.add_argument("--out", required=True, help="mask file to write (.pt)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from core.data import RavenFileError
    from core.models import CheckpointError

    try:
        rec = run(args.params, args.checkpoint, args.task, args.alpha, args.seed, args.data,
                  args.out, args.steps, args.profile, progress=not args.no_progress)
    except (MaskError, ConfigError, CheckpointError, RavenFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    acc = rec["accuracy"]
    print(f"{args.out}: density {rec['curve']['density'][-1]:.2f}%  " +
          "  ".join(f"{k} {acc[k]:.1f}%" for k in ACCURACY_KEYS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
