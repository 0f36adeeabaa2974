"""Planted modules with HARMFUL distractors: masking must find exactly the planted weights.

A two-layer network solves T tasks of C classes each. Task t's class k is signalled by its own
input feature ``t*C + k`` (one-hot); the task's planted module is two weights per class,
``l1[t*C + k, t*C + k]`` (feature -> its unit) and ``l2[k, t*C + k]`` (unit -> logit k), so
modules of different tasks share no weight. Everything else is harmful or useless, nothing is
merely "unused":
- in a problem of task t the other tasks' features are random (they carry no information about
  the answer), so the other tasks' modules add noise to the logits;
- ``NH`` noise units read ``NZ`` random inputs and write random weights into every logit;
- biases are zero (their masks get no gradient: only the regulariser moves them).
The unmasked network is therefore well below 100% on every task; each planted module alone
solves its task.

Settings are the default profile's ``masks`` section (init, lr, steps, batch, tau, samples,
log_every, convergence thresholds): changing them without keeping recovery fails here. Alpha is
chosen by the study's rule, not by hand: the largest alpha of a decade grid whose read-out task
accuracy (select split) stays within ``metrics.alpha_tolerance`` of the unmasked model's, as
``core.metrics`` selects alpha for SCL (the planted network's per-weight costs are ~1000x
SCL's, so it needs its own alpha). Each run takes about a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from core.config import load
from core.masking import MaskedModel, Split, accuracy, relative_drop, train_mask

torch.set_num_threads(1)

# 10 classes: 20-weight modules, so IoU >= 0.95 tolerates one stray weight instead of
# demanding exactness (with 8 classes the defaults keep 17 of 16 for one task: IoU 0.94)
C, T, NZ, NH = 10, 3, 8, 16  # classes, tasks, noise inputs, noise units
D, H = T * C + NZ, T * C + NH
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


class Planted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2 = nn.Linear(D, H), nn.Linear(H, C)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(x)))


def planted() -> tuple[nn.Module, list[dict[str, torch.Tensor]]]:
    """The network and each task's planted module (bool masks over every parameter)."""
    g = torch.Generator().manual_seed(0)
    m = Planted()
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
        noise_rows = slice(T * C, H)
        m.l1.weight[noise_rows, T * C:] = 3.0 * torch.randn(NH, NZ, generator=g) / NZ ** 0.5
        m.l2.weight[:, noise_rows] = 1.5 * torch.randn(C, NH, generator=g)
    return m, modules


def planted_data(tasks: list[int], n: int, seed: int) -> Split:
    """``n`` problems drawn evenly from ``tasks``: the task's features one-hot, the other
    tasks' features uniform noise, the noise inputs standard normal."""
    g = torch.Generator().manual_seed(seed)
    task = torch.tensor(tasks)[torch.arange(n) % len(tasks)]
    y = torch.randint(0, C, (n,), generator=g)
    x = torch.zeros(n, D)
    x[:, :T * C] = torch.rand(n, T * C, generator=g)
    for t in range(T):
        rows = task == t
        x[rows, t * C:(t + 1) * C] = 0.0
        x[rows, t * C + y[rows]] = 1.0
    x[:, T * C:] = torch.randn(n, NZ, generator=g)
    return Split(x, y, name=f"tasks {tasks}")


ALPHAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def profile_settings():
    """The default profile's mask settings (the tests follow the profile)."""
    mc = load(PARAMS, "default").masks
    return dataclasses.replace(mc, threads=1, curve_n=0, eval_n=0, snapshot_param=None)


def select_alpha(m: nn.Module, cfg, train: Split, select: Split) -> float:
    """The largest alpha of :data:`ALPHAS` whose read-out accuracy on ``select`` is within
    ``metrics.alpha_tolerance`` points of the unmasked model's (the study's rule), or of the
    best mask's where a mask beats the unmasked model (here: harmful weights removed)."""
    tolerance = load(PARAMS, "default").metrics.alpha_tolerance
    acc = {a: train_mask(m, cfg, train, select, alpha=a, seed=0,
                         steps=cfg.steps).curve["task_acc"][-1] for a in ALPHAS}
    best = max(accuracy(MaskedModel(m).forward_fn(None), select), *acc.values())
    return max(a for a in ALPHAS if acc[a] >= best - tolerance)


@pytest.fixture(scope="module")
def alpha():
    m, _ = planted()
    return select_alpha(m, profile_settings(), planted_data([0], 1024, 60),
                        planted_data([0], 256, 61))


def n_on(mask: dict[str, torch.Tensor]) -> int:
    return sum(int(v.sum()) for v in mask.values())


def iou(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    return 1.0 if union == 0 else inter / union


def iomin(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    small = min(n_on(a), n_on(b))
    return 0.0 if small == 0 else inter / small


def test_planted_network_is_what_the_tests_assume():
    m, modules = planted()
    mm = MaskedModel(m)
    for t in range(T):
        data = planted_data([t], 512, 5)
        full = accuracy(mm.forward_fn(None), data)
        assert full < 80.0  # the harmful weights cost accuracy
        assert accuracy(mm.forward_fn(modules[t]), data) == 100.0
        other = modules[(t + 1) % T]
        assert accuracy(mm.forward_fn(other), data) < 30.0  # another module cannot solve it
    assert all(iomin(modules[0], modules[t]) == 0.0 for t in range(1, T))


@pytest.fixture(scope="module")
def runs(alpha):
    m, modules = planted()
    cfg = profile_settings()
    out = [train_mask(m, cfg, planted_data([t], 1024, 10 + t), planted_data([t], 256, 20 + t),
                      alpha=alpha, seed=0, steps=cfg.steps) for t in range(T)]
    return m, modules, out


def test_default_settings_recover_each_planted_module(runs):
    _, modules, out = runs
    for t in range(T):
        assert iou(out[t].mask, modules[t]) >= 0.95, (t, n_on(out[t].mask))
        assert out[t].curve["task_acc"][-1] == 100.0
        assert out[t].converged, out[t].convergence


def test_modules_of_tasks_that_share_nothing_do_not_overlap(runs):
    _, _, out = runs
    for a in range(T):
        for b in range(a + 1, T):
            assert iomin(out[a].mask, out[b].mask) <= 0.10


def union(modules: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {n: torch.stack([m[n] for m in modules]).any(0) for n in modules[0]}


K = 1  # the task the complement protocol leaves out


def relative_drops(m: nn.Module, ref: dict[str, torch.Tensor], comp: dict[str, torch.Tensor],
                   test: dict[int, Split]) -> dict[int, float]:
    mm = MaskedModel(m)
    return {t: relative_drop(accuracy(mm.forward_fn(ref), test[t]),
                             accuracy(mm.forward_fn(comp), test[t])) for t in test}


def planted_truth(m: nn.Module, modules: list[dict[str, torch.Tensor]],
                  test: dict[int, Split]) -> dict[int, float]:
    """The relative drops of a perfect method: the planted union vs the union without K's."""
    return relative_drops(m, union(modules), union([modules[t] for t in test if t != K]), test)


def complement_protocol(cfg) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Csordas et al.'s complement protocol with mask settings ``cfg``: a reference mask on all
    tasks, a mask on every task but :data:`K`; returns the masks' relative drops per task, the
    planted truth's (the union of the planted modules vs the union without task K's) and the
    reference mask's accuracy gain over the unmasked model per task. Alpha by the study's rule
    on the all-task set (a weight of one task's module matters for a third of its problems, so
    the single-task alpha is too strong)."""
    m, modules = planted()
    everything = list(range(T))
    rest = [t for t in everything if t != K]
    mm = MaskedModel(m)
    train_all, select_all = planted_data(everything, 1536, 30), planted_data(everything, 192, 31)
    alpha = select_alpha(m, cfg, train_all, select_all)
    ref = train_mask(m, cfg, train_all, select_all, alpha=alpha, seed=0, steps=cfg.steps).mask
    comp = train_mask(m, cfg, planted_data(rest, 1024, 50), planted_data(rest, 64, 51),
                      alpha=alpha, seed=0, steps=cfg.steps).mask
    test = {t: planted_data([t], 1024, 40 + t) for t in everything}
    gain = {t: accuracy(mm.forward_fn(ref), test[t]) - accuracy(mm.forward_fn(None), test[t])
            for t in everything}
    return relative_drops(m, ref, comp, test), planted_truth(m, modules, test), gain


def test_the_planted_truth_of_the_complement_protocol():
    """What a perfect method would report: every module adds noise to the other tasks'
    problems, so without task K's module the other tasks gain (negative drops, ~-0.25: a
    bound of 'near zero' on them rejects the truth), and task K falls to chance."""
    m, modules = planted()
    test = {t: planted_data([t], 1024, 40 + t) for t in range(T)}
    truth = planted_truth(m, modules, test)
    assert truth[K] >= 0.8
    assert all(-0.35 <= truth[t] <= -0.15 for t in truth if t != K), truth


def check_complement(drop: dict[int, float], truth: dict[int, float],
                     gain: dict[int, float]) -> None:
    print("complement protocol: relative drops", drop, "planted truth", truth)
    # on mixed data every module is needed and adds noise to the other tasks' problems (the
    # planted union scores ~80%); the reference beats the unmasked model on every task
    assert all(g > 10.0 for g in gain.values()), gain
    # the masks report what the planted modules do, within 0.1 on every task
    assert drop[K] >= 0.5
    assert all(abs(drop[t] - truth[t]) <= 0.1 for t in drop), (drop, truth)


# A longer mask run that reaches the planted truth (docs/decisions.md: 600 / 0.03 misses
# it by 0.07, 1000 / 0.02 by 0.05, 2000 / 0.01 by 0.03; 200 / 0.05 by 0.37, 400 / 0.05 by
# 0.16, 400 / 0.025 and 1000 / 0.01 by 0.24)
LONG = {"steps": 2000, "lr": 0.01}


@pytest.mark.slow
def test_complement_protocol_recovers_the_planted_truth_with_longer_masks():
    check_complement(*complement_protocol(dataclasses.replace(profile_settings(), **LONG)))


@pytest.mark.xfail(strict=True, reason="the default profile's 200-step masks miss the "
                   "planted truth (drops 0.06 / 0.57 / 0.09 vs -0.25 / 0.89 / -0.28); a profile "
                   "whose masks pass makes this XPASS: remove the mark then")
def test_complement_protocol_at_the_profile_settings():
    check_complement(*complement_protocol(profile_settings()))
