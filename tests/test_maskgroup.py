"""core.maskgroup: K masks of one checkpoint in one step equal K sequential runs; the sweep
groups runs of one checkpoint in chunks of ``masks.group``; the parameter's bounds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from test_sweep import make_inputs, small_params  # the sweep's tiny checkpoints and sets
from torch import nn

from core import maskgroup, sweep
from core.config import ConfigError, from_dict, load
from core.formats.masks import load_mask
from core.maskgroup import Member, train_group
from core.masking import MaskError, Split, train_mask
from core.models import build_model

torch.set_num_threads(1)
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
SIZE = 16


def scl() -> nn.Module:
    """A small SCL with non-trivial BatchNorm statistics (folded by MaskedModel)."""
    cfg = load(PARAMS, "default")
    torch.manual_seed(0)
    model = build_model(cfg.model, SIZE).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    return model


def members(n: int = 3) -> list[Member]:
    """Members with their own data (different tasks), alphas and seeds."""
    g = torch.Generator().manual_seed(0)

    def split(size: int) -> Split:
        return Split(torch.rand(size, 16, SIZE, SIZE, generator=g),
                     torch.randint(0, 8, (size,), generator=g))

    settings = [(1e-5, 0), (3e-4, 1), (1e-3, 0), (1e-4, 2)]
    return [Member(split(12), split(8), a, s) for a, s in settings[:n]]


# grouped masks train straight-through masks (no hard concrete or pruning yet)
CFG = dataclasses.replace(load(PARAMS, "default").masks, steps=10, log_every=5, batch_size=4,
                          snapshots=2, curve_n=0, init=1.0, lr=0.1,
                          estimator="straight_through", prune_n=0)


@pytest.mark.parametrize("n_samples", [1, 2])
def test_group_equals_sequential_runs(n_samples):
    """Same seeds: the same read-out masks, logits within float rounding, the same curves
    (the cross-entropy within rounding) and flags as one ``train_mask`` run per member.
    Tolerance: a logit whose gradient is rounding noise (SCL's logit bias: its candidates'
    terms cancel) still moves by up to lr per step under Adam, so the batched kernels'
    other rounding moves such logits by more than the float error itself (measured: 2e-5 at
    lr 0.1 after 10 steps); logits are O(1), the bound 1e-4."""
    cfg = dataclasses.replace(CFG, n_samples=n_samples)
    group = members()
    got = train_group(scl(), cfg, group, steps=10)
    for m, g in zip(group, got):
        ref = train_mask(scl(), cfg, m.train, m.curve, alpha=m.alpha, seed=m.seed, steps=10)
        assert g.names == ref.names and g.fingerprint == ref.fingerprint
        for n in ref.names:
            assert torch.equal(g.mask[n], ref.mask[n]), n
            torch.testing.assert_close(g.logits[n], ref.logits[n], rtol=0, atol=1e-4)
        for key in ("step", "task_acc", "density"):
            assert g.curve[key] == ref.curve[key], key
        assert g.curve["ce"] == pytest.approx(ref.curve["ce"], rel=1e-5)
        assert g.curve["reg"] == pytest.approx(ref.curve["reg"], rel=1e-5)
        assert g.converged == ref.converged
        assert g.snapshots["steps"] == ref.snapshots["steps"]
        torch.testing.assert_close(g.snapshots["logits"], ref.snapshots["logits"], rtol=0,
                                   atol=1e-4)
    # the members differ from each other (own data, alpha and seed)
    assert not all(torch.equal(got[0].logits[n], got[1].logits[n]) for n in got[0].names)


def test_a_group_of_one_is_the_sequential_run_itself():
    m = members(1)[0]
    (got,) = train_group(scl(), CFG, [m], steps=10)
    ref = train_mask(scl(), CFG, m.train, m.curve, alpha=m.alpha, seed=m.seed, steps=10)
    assert all(torch.equal(got.logits[n], ref.logits[n]) for n in ref.names)
    assert got.curve == ref.curve


def test_group_errors_name_the_member():
    with pytest.raises(MaskError, match="no members"):
        train_group(scl(), CFG, [], steps=4)
    bad = members(2)
    bad[1] = dataclasses.replace(bad[1], train=bad[1].train.head(2))
    with pytest.raises(MaskError, match="exceeds the 2 training problems"):
        train_group(scl(), CFG, bad, steps=4)
    bad = members(2)  # the second member's problems are infinite: its loss, named
    bad[1] = dataclasses.replace(bad[1], train=Split(torch.full_like(bad[1].train.inputs,
                                                                     float("inf")),
                                                     bad[1].train.targets))
    with pytest.raises(MaskError, match=r"group member 1 \(alpha 0.0003, seed 1\): non-finite "
                                        "loss at step 0"):
        train_group(scl(), CFG, bad, steps=4)


ST = {"estimator": "straight_through", "prune_n": 0}


def test_group_refuses_what_it_does_not_implement():
    with pytest.raises(MaskError, match="masks.group > 1 trains straight-through"):
        train_group(scl(), dataclasses.replace(CFG, estimator="hard_concrete"), members(2),
                    steps=2)


def test_group_parameter_bounds():
    raw = load(PARAMS, "default").to_dict()
    assert raw["masks"]["group"] == 1
    for bad in (0, 1000, 2.5):
        raw["masks"]["group"] = bad
        with pytest.raises(ConfigError, match="masks.group"):
            from_dict(raw)
    del raw["masks"]["group"]  # a parameter file written before the key: one mask per step
    assert from_dict(raw).masks.group == 1


def test_sweep_trains_runs_of_one_checkpoint_in_groups(tmp_path, monkeypatch):
    """masks.group 2: the runs of each checkpoint in chunks of 2 (the last one alone), every
    file written; each mask equal to the one-at-a-time sweep's within float rounding."""
    train, data = make_inputs(tmp_path)
    calls: list[int] = []
    real = maskgroup.train_group

    def spy(model, cfg, group, **kw):
        calls.append(len(group))
        return real(model, cfg, group, **kw)

    monkeypatch.setattr(maskgroup, "train_group", spy)
    one = tmp_path / "one"
    sweep.Sweep(load(small_params(tmp_path, **ST)), 0, train, data, one,
                log=lambda m: None).run()
    assert calls == []  # masks.group 1: one run per call, as before
    two = tmp_path / "two"
    summary = sweep.Sweep(load(small_params(tmp_path, group=2, **ST)), 0, train, data, two,
                          log=lambda m: None).run()
    # scl_2 has 3 runs (2 seeds + the alpha sweep), scl_1 2: chunks 2 + 1 and 2
    assert calls == [2, 2] and summary["trained"] == 5
    assert sorted(p.name for p in two.rglob("*.pt")) == sorted(p.name for p in one.rglob("*.pt"))
    for path in one.rglob("*.pt"):
        a, b = load_mask(path), load_mask(two / path.relative_to(one))
        assert b["settings"]["masks"]["group"] == 2 and a["settings"]["masks"]["group"] == 1
        assert all(torch.equal(a["mask"][n], b["mask"][n]) for n in a["mask"])
        for n in a["logits"]:
            torch.testing.assert_close(a["logits"][n], b["logits"][n], rtol=0, atol=1e-4)
    assert (two / "scl_1" / "evals.nc").is_file() and (two / "scl_2" / "evals.nc").is_file()
