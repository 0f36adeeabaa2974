"""core.masking: generic masks, norm parameters left alone, degeneracy, selective ablation,
convergence, non-finite stops, files (planted-module recovery: tests/test_planted.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from core.config import load
from core.device import keep_freed_memory
from core.formats.evals import SPLITS, VARIANTS
from core.formats.masks import (
    ACCURACY_KEYS,
    FORMAT,
    MaskError,
    curve_dataset,
    degenerate_reason,
    fingerprint,
    load_mask,
    mask_record,
    save_mask,
)
from core.masking import (
    MaskedModel,
    Split,
    accuracy,
    convergence,
    degenerate_fraction,
    degenerate_rows,
    evaluate,
    evaluate_group,
    evaluate_part,
    foldable_norms,
    is_converged,
    log_steps,
    merge_parts,
    noise_factor,
    norm_parameters,
    relative_drop,
    select_parameters,
    snapshot_parameter,
    strided_like,
    task_specific,
    train_mask,
)
from core.models import build_model

torch.set_num_threads(1)
PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
CFG = dataclasses.replace(load(PARAMS, "default").masks, alpha=1e-4, steps=30, lr=0.02,
                          init=0.9, tau=1.0, batch_size=64, n_samples=1, log_every=10,
                          eval_n=0, include=[], curve_n=0, snapshots=3, snapshot_param=None,
                          threads=1, mask_norm=False)


# ----------------------------------------------------------------------------- generic masking


class ConvBN(nn.Module):
    """A small conv net with BatchNorm and LayerNorm: weights, biases and norm affine."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(4 * 6 * 6)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.ln(torch.relu(self.bn(self.conv(x))).flatten(1)))


def convbn() -> nn.Module:
    torch.manual_seed(0)
    m = ConvBN()
    m.train()
    with torch.no_grad():  # no zero parameter (a zero weight gets no mask gradient); non-trivial
        for p in m.parameters():  # running statistics
            p.add_(0.1 * torch.randn_like(p))
        for _ in range(3):
            m(torch.randn(16, 1, 6, 6))
    return m


def test_all_ones_mask_is_the_model_and_zeros_mask_kills_it():
    m = convbn()
    x = torch.randn(5, 1, 6, 6)
    mm = MaskedModel(m, mask_norm=True)
    assert not m.training  # eval mode: BatchNorm uses its running statistics
    ones = {n: torch.ones(s, dtype=torch.bool) for n, s in zip(mm.names, mm.shapes)}
    torch.testing.assert_close(mm(x, ones), m(x))
    torch.testing.assert_close(mm(x, ones, invert=True), torch.zeros(5, 3))
    zeros = {n: ~v for n, v in ones.items()}
    torch.testing.assert_close(mm(x, zeros), torch.zeros(5, 3))


def test_norm_parameters_are_left_unmasked_unless_asked():
    m = convbn()
    norms = ["bn.weight", "bn.bias", "ln.weight", "ln.bias"]
    assert norm_parameters(m) == norms
    assert select_parameters(m) == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
    assert select_parameters(m, mask_norm=True) == [n for n, _ in m.named_parameters()]
    mm = MaskedModel(m)
    ones = {n: torch.ones(s, dtype=torch.bool) for n, s in zip(mm.names, mm.shapes)}
    x = torch.randn(4, 1, 6, 6)
    eff = dict(m.named_parameters())  # the inverted mask zeroes weights, never norm affine
    inv = {n: torch.zeros_like(eff[n]) if n in mm.names else eff[n] for n in eff}
    torch.testing.assert_close(mm(x, ones, invert=True),
                               torch.func.functional_call(m, inv, (x,)))


def test_every_parameter_is_masked_and_only_logits_train_running_stats_frozen():
    m = convbn()
    names = [n for n, _ in m.named_parameters()]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 6, 6)
    data = Split(x, torch.randint(0, 3, (32,), generator=g))
    cfg = dataclasses.replace(CFG, steps=5, batch_size=8, n_samples=2, log_every=2,
                              mask_norm=True)
    r = train_mask(m, cfg, data, data, alpha=1e-3, seed=0, steps=5)
    assert r.names == names  # weights, biases, BatchNorm and LayerNorm affine, model order
    assert r.curve["step"] == [0, 2, 4, 5]
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"{k} changed")
    assert all(not p.requires_grad for p in m.parameters())
    assert any((r.logits[n] != CFG.init).any() for n in names)


def test_straight_through_gradient_reaches_every_logit():
    m = convbn()
    mm = MaskedModel(m, init=0.5, mask_norm=True)
    out = mm(torch.randn(4, 1, 6, 6), mm.sample(torch.Generator().manual_seed(0), 1.0))
    out.square().sum().backward()
    for n, g in zip(mm.names, mm.flat.grad.split(mm.sizes)):
        assert g.abs().sum() > 0, n
    sample = mm.sample(torch.Generator().manual_seed(1), 1.0)
    assert all(set(v.detach().unique().tolist()) <= {0.0, 1.0} for v in sample.values())


def test_masked_weights_keep_the_weights_memory_format():
    """A 1-input-channel convolution weight in channels-last (SCL's first layer): ``w * m``
    alone comes out contiguous (size-1 dims make strides ambiguous) and the convolution runs in
    the other format; the masked model hands the convolution ``w``'s strides, with the same
    outputs and the same logit gradients as the plain product."""
    m = convbn().to(memory_format=torch.channels_last)
    w = m.conv.weight
    assert w.stride() == (9, 1, 3, 1)
    mm = MaskedModel(m, init=0.5)
    sample = mm.sample(torch.Generator().manual_seed(0), 1.0)
    assert (w * sample["conv.weight"]).stride() != w.stride()  # the ambiguity is real
    seen = {}
    conv_forward = m.conv._conv_forward

    def spy(x, weight, bias):
        seen["stride"] = weight.stride()
        return conv_forward(x, weight, bias)

    m.conv._conv_forward = spy
    x = torch.randn(4, 1, 6, 6)
    out = mm(x, sample)
    assert seen["stride"] == w.stride()
    out.square().sum().backward()
    grad = mm.flat.grad.clone()
    mm.flat.grad = None
    again = mm.sample(torch.Generator().manual_seed(0), 1.0)  # the same draw, a new graph
    plain = {n: mm.weights[n] * again[n] for n in mm.names}
    ref = torch.func.functional_call(m, plain, (x,))
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad, mm.flat.grad)


def test_read_out_is_deterministic_logits_above_zero():
    mm = MaskedModel(convbn(), init=0.0)
    with torch.no_grad():
        mm.logits["fc.weight"][0, :3] = torch.tensor([0.1, -0.1, 0.0])
    b = mm.binary()
    assert b["fc.weight"][0, :3].tolist() == [True, False, False]
    assert all(v.dtype == torch.bool for v in b.values())
    assert all(torch.equal(b[n], v) for n, v in mm.binary().items())


def test_read_out_threshold_keeps_logits_above_it_and_training_uses_masks_readout():
    mm = MaskedModel(convbn(), init=0.0)
    with torch.no_grad():
        mm.logits["fc.weight"][0, :4] = torch.tensor([0.5, -1.0, -2.5, -3.5])
    assert mm.binary(-3.0)["fc.weight"][0, :4].tolist() == [True, True, True, False]
    assert mm.binary(-2.0)["fc.weight"][0, :4].tolist() == [True, True, False, False]
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    cfg = dataclasses.replace(CFG, batch_size=8, lr=0.2)
    runs = {t: train_mask(convbn(), dataclasses.replace(cfg, readout=t), data, data,
                          alpha=1e-2, seed=0, steps=20) for t in (0.0, -1.0)}
    for t, r in runs.items():  # same seed, same logits; the read-out follows masks.readout
        assert all(torch.equal(r.mask[n], r.logits[n] > t) for n in r.names)
    assert all(torch.equal(runs[0.0].logits[n], runs[-1.0].logits[n]) for n in runs[0.0].names)
    kept = {t: sum(int(m.sum()) for m in r.mask.values()) for t, r in runs.items()}
    assert kept[-1.0] > kept[0.0]
    with pytest.raises(MaskError, match="masks.readout"):
        train_mask(convbn(), dataclasses.replace(CFG, readout=float("nan")), data, data,
                   alpha=1e-2, seed=0, steps=2)


def test_noise_anneal_ends_training_on_the_read_out_itself():
    # the schedule: 1, a linear fall over the first half of the last fraction, then 0
    assert [noise_factor(t, 100, 0.4) for t in (0, 59, 60, 70, 79, 80, 99)] == pytest.approx(
        [1.0, 1.0, 1.0, 0.5, 0.05, 0.0, 0.0])
    assert all(noise_factor(t, 100, 0.0) == 1.0 for t in range(100))
    # scale 0: the sampled mask is the read-out s > 0, with the straight-through gradient
    mm = MaskedModel(convbn(), init=0.0)
    with torch.no_grad():
        mm.logits["fc.weight"].normal_(generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    zero, noisy = mm.sample(g, 1.0, scale=0.0), mm.sample(g, 1.0)
    assert all(torch.equal(zero[n].detach().bool().cpu(), b) for n, b in mm.binary().items())
    assert not all(torch.equal(noisy[n].detach().bool().cpu(), b) for n, b in mm.binary().items())
    sum(v.sum() for v in zero.values()).backward()
    assert mm.flat.grad is not None and bool((mm.flat.grad != 0).any())
    # in training: a different run than without it (same seed), same read-out rule
    data = Split(torch.randn(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    cfg = dataclasses.replace(CFG, batch_size=8, lr=0.2)
    runs = {na: train_mask(convbn(), dataclasses.replace(cfg, noise_anneal=na), data, data,
                           alpha=1e-2, seed=0, steps=20) for na in (0.0, 0.5)}
    assert not all(torch.equal(runs[0.0].logits[n], runs[0.5].logits[n]) for n in runs[0.0].names)
    assert all(torch.equal(runs[0.5].mask[n], runs[0.5].logits[n] > 0) for n in runs[0.5].names)
    with pytest.raises(MaskError, match="masks.noise_anneal"):
        train_mask(convbn(), dataclasses.replace(CFG, noise_anneal=1.5), data, data,
                   alpha=1e-2, seed=0, steps=2)


def test_a_masked_entry_removes_exactly_that_weight():
    m = convbn()
    mm = MaskedModel(m, init=1.0)
    with torch.no_grad():
        mm.logits["conv.weight"][2, 0, 1, 0] = -1.0  # 4-D logits are channels-last views
        mm.logits["fc.weight"][1, 7] = -1.0
    x = torch.randn(3, 1, 6, 6)
    ref = convbn()
    with torch.no_grad():
        ref.conv.weight[2, 0, 1, 0] = 0.0
        ref.fc.weight[1, 7] = 0.0
    torch.testing.assert_close(mm(x, mm.binary()), ref.eval()(x))
    assert int((~mm.binary()["conv.weight"]).sum()) == 1


def test_include_prefixes_select_groups():
    m = convbn()
    assert select_parameters(m, ["bn.", "fc.bias"], mask_norm=True) == [
        "bn.weight", "bn.bias", "fc.bias"]
    with pytest.raises(MaskError, match="only normalisation parameters"):
        select_parameters(m, ["bn."])
    mm = MaskedModel(m, include=["fc."])
    assert mm.names == ["fc.weight", "fc.bias"]
    with pytest.raises(MaskError, match="masks.include: prefix 'vision.'"):
        select_parameters(m, ["vision."])


def test_snapshot_parameter_is_the_most_square_2d_weight():
    names = ["a", "b", "c", "d"]
    shapes = [(16, 1, 3, 3), (128, 8), (32, 64), (64, 32)]
    assert snapshot_parameter(names, shapes) == "c"  # tie with d: first in model order
    assert snapshot_parameter(["a", "e"], [(16, 1, 3, 3), (5,)]) == "a"
    assert snapshot_parameter(names, shapes, "b") == "b"
    with pytest.raises(MaskError, match="masks.snapshot_param"):
        snapshot_parameter(names, shapes, "zzz")


# ----------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = convbn()
    x = torch.randn(40, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    data = Split(x, torch.arange(40) % 3)
    cfg = dataclasses.replace(CFG, steps=6, batch_size=8, log_every=3, snapshots=2)
    r = train_mask(m, cfg, data, data, alpha=1e-3, seed=0, steps=6)
    acc = evaluate(MaskedModel(m), r.mask, data, data)
    rec = mask_record(r, acc, checkpoint="toy_90", task="circle", alpha=1e-3, seed=0, steps=6,
                      arch="toy", image_size=6)
    path = save_mask(tmp_path_factory.mktemp("masks") / "toy.pt", rec)
    return m, path


def test_mask_file_round_trip_matches_the_format(saved):
    m, path = saved
    rec = load_mask(path, m)
    assert rec["format"] == FORMAT
    assert set(rec["accuracy"]) == set(ACCURACY_KEYS)
    assert rec["names"] == select_parameters(m)
    assert rec["snapshots"]["param"] == "fc.weight"
    assert rec["snapshots"]["steps"] == [0, 6]
    assert rec["snapshots"]["logits"].shape == (2, 3, 144)
    assert rec["snapshots"]["logits"].dtype == torch.float32
    assert all(torch.equal(rec["mask"][n], rec["logits"][n] > 0) for n in rec["names"])
    ds = curve_dataset(rec)
    assert ds["task_acc"].attrs["units"] == "percent"
    assert list(ds["mask_step"].values) == [0, 3, 6]
    assert not list(path.parent.glob(".tmp-*"))
    for n in rec["names"]:  # each tensor saved on its own (no shared, oversized storage)
        assert rec["mask"][n].untyped_storage().nbytes() == rec["mask"][n].numel()
        assert rec["logits"][n].untyped_storage().nbytes() == 4 * rec["logits"][n].numel()


def test_mask_for_another_model_is_refused(saved):
    _, path = saved
    other = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(MaskError, match=r"toy\.pt: mask is for another model"):
        load_mask(path, other)


def test_truncated_or_foreign_files_are_refused(saved, tmp_path):
    _, path = saved
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(MaskError, match=r"cut\.pt: not a readable mask file"):
        load_mask(cut)
    foreign = tmp_path / "ckpt.pt"
    torch.save({"arch": "scl"}, foreign)
    with pytest.raises(MaskError, match=r"ckpt\.pt: not a mask file"):
        load_mask(foreign)
    with pytest.raises(MaskError, match="mask file not found"):
        load_mask(tmp_path / "missing.pt")


@pytest.mark.parametrize("alpha,steps,match", [(0.0, 5, "alpha: expected a finite number > 0"),
                                               (-1e-5, 5, "alpha"),
                                               (1e-5, 0, "steps: expected an integer > 0")])
def test_bad_settings_are_refused(alpha, steps, match):
    m = convbn()
    data = Split(torch.randn(16, 1, 6, 6), torch.zeros(16, dtype=torch.long))
    with pytest.raises(MaskError, match=match):
        train_mask(m, CFG, data, data, alpha=alpha, seed=0, steps=steps)
    with pytest.raises(MaskError, match="exceeds the 16 training problems"):
        train_mask(m, CFG, data, data, alpha=1e-5, seed=0, steps=5)


# ----------------------------------------------------------------------------- helpers


def test_fingerprint_and_log_steps():
    assert fingerprint(["a"], [(2, 3)]) != fingerprint(["a"], [(3, 2)])
    assert fingerprint(["a"], [(2, 3)]) == fingerprint(["a"], [[2, 3]])
    assert log_steps(300, 25) == list(range(0, 301, 25))
    assert log_steps(7, 3) == [0, 3, 6, 7]


@pytest.mark.parametrize("init", [-1.0, 0.0, 0.9, 2.0])
def test_sampled_keep_rate_is_sigmoid_of_logit(init):
    """Logistic noise: P(sigmoid(s + l) > 0.5) = P(l > -s) = sigmoid(s)."""
    mm = MaskedModel(nn.Linear(300, 300), init=init)
    hard = mm.sample(torch.Generator().manual_seed(0), 1.0)["weight"].detach()
    assert float(hard.mean()) == pytest.approx(float(torch.sigmoid(torch.tensor(init))),
                                               abs=0.01)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_noise(tmp_path):
    m = convbn()
    cfg = dataclasses.replace(CFG, steps=12, log_every=4, batch_size=8)
    x = torch.randn(48, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    data = Split(x, torch.arange(48) % 3)
    files = []
    for i, seed in enumerate((3, 3, 4)):
        r = train_mask(m, cfg, data, data, alpha=1e-3, seed=seed, steps=12)
        acc = evaluate(MaskedModel(m), r.mask, data, data)
        rec = mask_record(r, acc, checkpoint="toy", task="A", alpha=1e-3, seed=seed, steps=12,
                          arch="toy", image_size=0)
        files.append(save_mask(tmp_path / f"m{i}.pt", rec).read_bytes())
    assert files[0] == files[1]
    assert files[0] != files[2]


# ----------------------------------------------------------------------------- degeneracy


def test_degenerate_rows_are_constant_logits_within_tolerance():
    z = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0 + 1e-6, 1.0], [0.0, 0.5, 0.0],
                      [100.0, 100.1, 100.0], [float("nan"), 0.0, 0.0]])
    assert degenerate_rows(z, 1e-4).tolist() == [True, True, False, False, True]
    assert degenerate_rows(z, 1e-2).tolist() == [True, True, False, True, True]


def test_masking_norm_parameters_makes_the_inverted_ablation_degenerate():
    """The measured failure of the original study's setting on SCL: a module keeps the
    BatchNorm scales, so its inverted mask zeroes them and all candidates score the same."""
    from core.config import ModelConfig
    from core.models import build_model

    mc = load(PARAMS, "default").model
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**mc.__dict__, "arch": "scl"}), 16)
    with torch.no_grad():  # non-trivial running statistics; an untrained SCL's candidate
        model.logit.weight.mul_(1e4)  # logits differ by ~1e-5: scale them as training does
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_var.uniform_(0.5, 2.0)
                mod.running_mean.normal_(0, 0.1)
    g = torch.Generator().manual_seed(0)
    data = Split(torch.rand(24, 16, 16, 16, generator=g), torch.randint(0, 8, (24,), generator=g))
    with_norm = MaskedModel(model, mask_norm=True)
    norms = set(norm_parameters(model))
    module = {n: torch.ones(s, dtype=torch.bool) if n in norms  # a module keeping them all
              else torch.rand(s, generator=g) < 0.05
              for n, s in zip(with_norm.names, with_norm.shapes)}
    assert degenerate_fraction(with_norm.forward_fn(None), data) == 0.0
    assert degenerate_fraction(with_norm.forward_fn(module, invert=True), data) == 1.0
    default = MaskedModel(model)  # the same module, norm scale and shift left alone
    same = {n: module[n] for n in default.names}
    assert degenerate_fraction(default.forward_fn(same, invert=True), data) < 0.5


# ----------------------------------------------------------------------------- ablations


def three_modules(m: nn.Module) -> tuple[dict, dict]:
    names = select_parameters(m)
    shapes = {n: p.shape for n, p in m.named_parameters()}
    g = torch.Generator().manual_seed(3)
    masks = {}
    for task in ("a", "b", "c"):
        for seed in (0, 1):
            masks[f"{task}-s{seed}"] = {n: torch.rand(shapes[n], generator=g) < 0.5
                                       for n in names}
    info = {k: {"task": k[0], "family": "toy", "seed": int(k[-1]), "alpha": 1e-3}
            for k in masks}
    return masks, info


def test_task_specific_part_is_mask_and_not_union_of_others():
    a = {"w": torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool)}
    b = {"w": torch.tensor([1, 0, 0, 1, 0], dtype=torch.bool)}
    c = {"w": torch.tensor([0, 0, 1, 1, 0], dtype=torch.bool)}
    assert task_specific(a, [b, c])["w"].tolist() == [False, True, False, False, True]
    assert task_specific(a, [])["w"].tolist() == a["w"].tolist()


def test_evaluate_group_matrix_variants_and_selective_partners():
    m = convbn()
    masks, info = three_modules(m)
    g = torch.Generator().manual_seed(4)
    sets = {name: tuple(Split(torch.randn(n, 1, 6, 6, generator=g),
                              torch.randint(0, 3, (n,), generator=g)) for n in (12, 20))
            for name in ("a", "b")}
    ds = evaluate_group(m, masks, sets, info=info, batch_size=8)
    assert ds["accuracy"].dims == ("mask", "variant", "eval_set", "split")
    assert list(ds["variant"].values) == list(VARIANTS) and list(ds["split"].values) == list(SPLITS)
    assert (ds["n_problems"].sel(split="select") == 12).all()
    assert (ds["n_problems"].sel(split="report") == 20).all()
    mm = MaskedModel(m)
    for key in ("a-s0", "c-s1"):
        others = [masks[k] for k in masks if k[0] != key[0] and k[-1] == key[-1]]
        spec = task_specific(masks[key], others)
        for variant, mk, inv in (("mask", masks[key], False), ("inverted", masks[key], True),
                                 ("selective", spec, True)):
            want = accuracy(mm.forward_fn(mk, inv), sets["b"][1])
            got = float(ds["accuracy_raw"].sel(mask=key, variant=variant, eval_set="b",
                                               split="report"))
            assert got == pytest.approx(want)
        kept = float(ds["kept"].sel(mask=key, variant="selective"))
        total = sum(t.numel() for t in spec.values())
        assert kept == pytest.approx(100 * (total - sum(int(t.sum()) for t in spec.values()))
                                     / total)
    no_info = evaluate_group(m, {"a-s0": masks["a-s0"]}, sets, batch_size=8)
    assert np.isnan(no_info["accuracy"].sel(variant="selective")).all()
    full = accuracy(mm.forward_fn(None), sets["a"][0])
    assert float(ds["full_accuracy"].sel(eval_set="a", split="select")) == pytest.approx(full)


def test_evaluation_in_parts_merges_to_the_same_bytes(tmp_path):
    """core.sweep evaluates a checkpoint in parts (one per family and seed, each given only
    its sets, the unmasked model once per set): merged, the same file as one call."""
    m = convbn()
    masks, info = three_modules(m)
    g = torch.Generator().manual_seed(4)
    sets = {name: tuple(Split(torch.randn(n, 1, 6, 6, generator=g),
                              torch.randint(0, 3, (n,), generator=g)) for n in (12, 20))
            for name in ("a", "b", "c")}
    keys = list(masks)
    plan = {k: {"mask": {("a", "select"), ("a", "report"), ("b", "report")},
                "selective": {("b", "report")}} for k in keys}
    whole = evaluate_group(m, masks, sets, info=info, batch_size=8, plan=plan)
    first, rest = keys[:2], keys[2:]
    parts = [evaluate_part(m, masks, {n: sets[n] for n in ("a", "b")}, info=info, batch_size=8,
                           plan=plan, only=first, full_sets=["a", "b"]),
             evaluate_part(m, masks, {n: sets[n] for n in ("a", "b", "c")}, info=info,
                           batch_size=8, plan=plan, only=rest, full_sets=["c"])]
    merged = merge_parts(parts[::-1], keys, list(sets))  # in any order of completion
    whole.to_netcdf(tmp_path / "one.nc")
    merged.to_netcdf(tmp_path / "parts.nc")
    assert (tmp_path / "one.nc").read_bytes() == (tmp_path / "parts.nc").read_bytes()
    with pytest.raises(MaskError, match="plan names sets not given"):
        evaluate_part(m, masks, {"a": sets["a"]}, plan=plan, only=first, full_sets=[])
    with pytest.raises(MaskError, match="no part evaluated"):
        merge_parts(parts[:1], keys, list(sets))
    with pytest.raises(MaskError, match="given twice"):
        merge_parts([parts[0], parts[0]], keys, list(sets))


def test_evaluate_group_reports_no_accuracy_for_a_degenerate_ablation():
    m = convbn()
    names = select_parameters(m, mask_norm=True)
    everything = {n: torch.ones(p.shape, dtype=torch.bool)
                  for n, p in m.named_parameters() if n in names}
    data = Split(torch.randn(10, 1, 6, 6), torch.arange(10) % 3)
    ds = evaluate_group(m, {"all": everything}, {"x": (data, data)}, batch_size=4)
    inv = ds.sel(mask="all", variant="inverted", eval_set="x")
    assert (inv["degenerate"] == 1.0).all()  # every weight removed: constant (zero) logits
    assert np.isnan(inv["accuracy"]).all() and not np.isnan(inv["accuracy_raw"]).any()
    assert (ds.sel(mask="all", variant="mask")["degenerate"] == 0.0).all()


def test_relative_drop():
    assert relative_drop(80.0, 20.0) == pytest.approx(0.75)
    assert relative_drop(80.0, 80.0) == 0.0
    assert math.isnan(relative_drop(0.0, 10.0))


# ----------------------------------------------------------------------------- convergence


def test_convergence_reads_the_trend_over_the_last_window():
    steps = list(range(0, 101, 10))
    flat = {"step": steps, "density": [100, 50, 20, 10, 8, 7, 6.5, 6.4, 6.3, 6.3, 6.2],
            "task_acc": [80, 70, 75, 78, 79, 80, 80, 81, 80, 81, 80]}
    c = convergence(flat, 0.2)
    assert (c["window_start"], c["window_end"]) == (80.0, 100.0)
    assert c["density_change"] == pytest.approx(0.1)
    assert c["acc_change"] == pytest.approx(0.0)
    assert is_converged(c, CFG)
    falling = dict(flat, density=[100 - 3 * i for i in range(11)])
    c = convergence(falling, 0.2)
    assert c["density_change"] == pytest.approx(6.0)
    assert not is_converged(c, CFG)
    assert is_converged(c, dataclasses.replace(CFG, converge_density=6.5))
    short = {"step": [0, 15, 20], "density": [100, 40, 38], "task_acc": [50, 60, 60]}
    assert convergence(short, 0.2)["window_start"] == 15.0  # the last log at or before 80%
    assert convergence(short, 0.2)["density_change"] == pytest.approx(2.0)


def test_training_records_the_flag_and_separate_loss_terms():
    m = convbn()
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    cfg = dataclasses.replace(CFG, batch_size=8, log_every=5, estimator="straight_through")
    r = train_mask(m, cfg, data, data, alpha=1e-2, seed=0, steps=20)
    c = r.curve
    assert c["loss"] == pytest.approx([a + b for a, b in zip(c["ce"], c["reg"])])
    total = sum(r.logits[n].double().sum() for n in r.names)
    assert c["reg"][-1] == pytest.approx(1e-2 * float(total), rel=1e-6)
    final = torch.cat([r.logits[n].ravel() for n in r.names])
    assert r.convergence == convergence(c, cfg.converge_window,
                                        moved=float((final - cfg.init).abs().max()),
                                        spread=float(final.max() - final.min()))
    assert r.converged == is_converged(r.convergence, cfg)
    assert r.convergence["moved"] > 0 and r.convergence["spread"] > 0


def test_never_moved_is_not_settled():
    """A flat curve because nothing trained (logits at masks.init, or all equal, or a read-out
    that keeps nothing or everything) is flagged degenerate and never converged."""
    steps = list(range(0, 101, 10))
    flat = {"step": steps, "density": [100.0] * 11, "task_acc": [40.0] * 11}
    c = convergence(flat, 0.2, moved=0.0, spread=0.0)
    assert c["density_change"] < 1e-9 and c["acc_change"] < 1e-9  # flat: "settled" before
    assert "never left masks.init" in degenerate_reason(c)
    assert not is_converged(c, CFG)
    c = convergence(flat, 0.2, moved=0.77, spread=0.0)  # every logit shifted alike
    assert "all ended equal" in degenerate_reason(c) and not is_converged(c, CFG)
    c = convergence(dict(flat, density=[5.0] * 10 + [0.0]), 0.2, moved=3.0, spread=2.0)
    assert "no weight" in degenerate_reason(c) and not is_converged(c, CFG)
    c = convergence(dict(flat, density=[60.0] * 11), 0.2, moved=3.0, spread=2.0)
    assert degenerate_reason(c) == "" and is_converged(c, CFG)


def test_a_swamping_regulariser_gives_a_degenerate_run():
    """alpha so large that Adam's second moment overflows: the logits move in lockstep (or
    not at all), the read-out is full or empty; the run says so instead of 'converged'."""
    m = convbn()
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    cfg = dataclasses.replace(CFG, batch_size=8, log_every=5)
    r = train_mask(m, cfg, data, data, alpha=1e30, seed=0, steps=20)
    assert r.degenerate and not r.converged
    assert r.convergence["spread"] == 0.0


# ----------------------------------------------------------------------------- non-finite


def test_non_finite_settings_weights_and_loss_stop_with_a_clear_error():
    m = convbn()
    data = Split(torch.randn(16, 1, 6, 6), torch.zeros(16, dtype=torch.long))
    cfg = dataclasses.replace(CFG, batch_size=8)
    for key, value in (("init", float("nan")), ("lr", float("inf")), ("tau", float("nan"))):
        with pytest.raises(MaskError, match=f"masks.{key}: expected a finite number"):
            train_mask(m, dataclasses.replace(cfg, **{key: value}), data, data, alpha=1e-3,
                       seed=0, steps=2)
    with pytest.raises(MaskError, match="alpha: expected a finite number"):
        train_mask(m, cfg, data, data, alpha=float("inf"), seed=0, steps=2)
    bad_input = Split(torch.full((16, 1, 6, 6), float("inf")), torch.zeros(16, dtype=torch.long))
    with pytest.raises(MaskError, match="non-finite loss at step 0"):
        train_mask(m, cfg, bad_input, data, alpha=1e-3, seed=0, steps=2)
    broken = convbn()
    with torch.no_grad():
        broken.fc.weight[0, 0] = float("nan")
    with pytest.raises(MaskError, match="parameter 'fc.weight' has non-finite values"):
        train_mask(broken, cfg, data, data, alpha=1e-3, seed=0, steps=2)


# ----------------------------------------------------------------------------- device, precision


def test_bf16_autocast_trains_and_results_are_float32_cpu_tensors():
    m = convbn()
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(16, 1, 6, 6, generator=g), torch.randint(0, 3, (16,), generator=g))
    cfg = dataclasses.replace(CFG, batch_size=8, log_every=2)
    r = train_mask(m, cfg, data, data, alpha=1e-3, seed=0, steps=4, device="cpu",
                   precision="bf16")
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in r.logits.values())
    assert all(t.device.type == "cpu" and t.dtype == torch.bool for t in r.mask.values())
    mm = MaskedModel(m, device="cpu", precision="bf16")
    assert mm(data.inputs[:2]).dtype == torch.float32  # outputs leave autocast as float32
    assert all(math.isfinite(v) for v in r.curve["ce"])


def test_lr_anneal():
    from core.masking import anneal_factor

    assert [anneal_factor(t, 4, 0.0) for t in range(4)] == [1.0] * 4
    assert [anneal_factor(t, 4, 1.0) for t in (0, 2)] == pytest.approx([1.0, 0.5])
    assert anneal_factor(3, 4, 1.0) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert [anneal_factor(t, 10, 0.5) for t in (0, 4, 5)] == [1.0, 1.0, 1.0]
    assert anneal_factor(9, 10, 0.5) == pytest.approx(0.5 * (1 + math.cos(0.8 * math.pi)))


# ----------------------------------------------------------------------------- the fast step


def seq_convbn(bias: bool = True) -> nn.Module:
    """Convolutions followed by BatchNorm inside ``nn.Sequential`` (SCL's and CNNMLP's
    layout, which MaskedModel folds): one convolution with a bias, one without; weights
    channels-last as ``core.models.build_model`` makes them (MaskedModel's masked 4-D weights
    are channels-last whatever the model's, so the first convolution's [4, 1, 3, 3] weight,
    ambiguous in a contiguous model, would otherwise run in the other memory format)."""
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=bias), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6),
                      nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    with torch.no_grad():  # running statistics and affine far from the identity
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.2, 3.0)
                mod.weight.uniform_(0.5, 2.0)
                mod.bias.normal_(0, 0.5)
    return m.eval().to(memory_format=torch.channels_last)


def reference_step(model: nn.Module, names: list[str], flat: torch.Tensor,
                   noise: torch.Tensor, x: torch.Tensor, invert: bool = False,
                   tau: float = 1.0) -> torch.Tensor:
    """The masked forward as written before the fast step: per-parameter views of
    ``hard + (soft - soft.detach())``, ``w * m`` (channels-last weights, their strides kept)
    through ``functional_call`` on the model with its BatchNorms (no folding)."""
    params = dict(model.named_parameters())
    soft = torch.sigmoid((flat + 1.0 * noise) / tau)
    m = (soft > 0.5).to(soft.dtype) + (soft - soft.detach())
    eff, i = {}, 0
    for n in names:
        w = MaskedModel._layout(params[n])
        part = m[i:i + w.numel()]
        i += w.numel()
        if w.dim() == 4:
            part = part.view(w.shape[0], w.shape[2], w.shape[3], w.shape[1]).permute(0, 3, 1, 2)
        else:
            part = part.view(w.shape)
        eff[n] = strided_like(w, w * (1 - part) if invert else w * part)
    return functional_call(model, eff, (x,))


def _compare(mm: MaskedModel, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             invert: bool, seed: int = 0):
    """(new logits, reference logits, new logit gradient, reference gradient) of one step
    with the same noise (``seed``), and whether the sampled masks are the same bits."""
    gen = torch.Generator().manual_seed(seed)
    noise = mm.noise(torch.Generator().manual_seed(seed))
    flat = mm.flat.detach().clone().requires_grad_(True)
    ref = reference_step(model, mm.names, flat, noise, x, invert)
    torch.nn.functional.cross_entropy(ref, y).backward()
    sample = mm.sample(gen, 1.0)
    out = mm(x, sample, invert)
    mm.flat.grad = None
    torch.nn.functional.cross_entropy(out, y).backward()
    soft = torch.sigmoid(mm.flat.detach() + noise)
    same_bits = torch.equal(sample.flat.detach(), (soft > 0.5).float())
    return out.detach(), ref.detach(), mm.flat.grad.clone(), flat.grad, same_bits


def _logits_init(mm: MaskedModel) -> None:
    with torch.no_grad():  # logits spread around 0: some weights kept, some dropped
        mm.flat.copy_(torch.randn(mm.flat.shape, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("invert", [False, True])
def test_unfolded_fast_step_is_bit_identical_to_the_plain_straight_through(invert):
    """Without folding, the one-node straight-through and the one flat product give the same
    bits as the per-parameter autograd formulation: logits and logit gradients."""
    model = seq_convbn()
    mm = MaskedModel(model, fold_norms=False)
    assert mm.folded == [] and mm.net is model
    _logits_init(mm)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 1, 8, 8, generator=g), torch.randint(0, 3, (5,), generator=g)
    out, ref, grad, ref_grad, same = _compare(mm, model, x, y, invert)
    assert same
    assert torch.equal(out, ref)
    assert torch.equal(grad, ref_grad)


@pytest.mark.parametrize("include", [(), ("0.weight", "3.", "7.")])
@pytest.mark.parametrize("invert", [False, True])
def test_folded_norms_match_the_unfolded_step_within_float_tolerance(include, invert):
    """BatchNorm folded into the convolution (every bias masked, or the first convolution's
    bias unmasked): the same sampled masks (bits), logits and logit gradients within float
    rounding of the unfolded model's; the model itself is untouched."""
    model = seq_convbn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mm = MaskedModel(model, include=include)
    assert mm.folded == [("0", "1"), ("3", "4")]
    assert isinstance(mm.net[1], nn.Identity) and isinstance(model[1], nn.BatchNorm2d)
    _logits_init(mm)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 1, 8, 8, generator=g), torch.randint(0, 3, (5,), generator=g)
    out, ref, grad, ref_grad, same = _compare(mm, model, x, y, invert)
    assert same
    assert not torch.equal(out, ref)  # folded: another rounding
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4,
                               atol=1e-5 * float(ref_grad.abs().max()))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # the read-out evaluates the folded model too
    mask = mm.binary()
    torch.testing.assert_close(mm.forward_fn(mask, invert)(x),
                               MaskedModel(model, include=include, fold_norms=False).forward_fn(
                                   mask, invert)(x),
                               rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_norms_are_not_folded_when_masked_or_outside_a_sequential():
    assert MaskedModel(seq_convbn(), mask_norm=True).folded == []  # their scale is masked
    assert MaskedModel(convbn()).folded == []  # conv -> bn written in forward(), not Sequential
    m = seq_convbn()
    m[4].train()  # a norm in training mode uses batch statistics: not a fixed scale
    assert foldable_norms(m, []) == [("0", "1")]


@pytest.mark.parametrize("arch", ["scl", "cnn_mlp"])
def test_folded_step_on_the_study_models(arch):
    """SCL and CNNMLP (every convolution but SCL's last is followed by BatchNorm): the masked
    step within float rounding of the unfolded one, the same mask bits. SCL's logit gradient
    is a sum of nearly cancelling terms (its candidates share everything up to the relation
    network): measured at 16 px, 2 threads instead of 1 move it by 2.4e-3 of its norm, the
    fold by 4.4e-3 (at 64 px: 3e-5 and 7e-5); hence a bound on the norm of the difference."""
    cfg = load(PARAMS, "default").model
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, arch=arch), 16).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.2)
                mod.running_var.uniform_(0.5, 2.0)
    mm = MaskedModel(model, init=1.0)
    assert len(mm.folded) == len(cfg.conv_channels) - 2 + (arch == "cnn_mlp")
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(3, 16, 16, 16, generator=g), torch.randint(0, 8, (3,), generator=g)
    out, ref, grad, ref_grad, same = _compare(mm, model, x, y, False)
    assert same
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 1e-2


def test_folded_training_is_deterministic(tmp_path):
    """Same seed, same bytes with folded norms (the mask file of two runs)."""
    x = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    data = Split(x, torch.arange(32) % 3)
    cfg = dataclasses.replace(CFG, steps=8, log_every=4, batch_size=8)
    blobs = []
    for i in range(2):
        m = seq_convbn()
        r = train_mask(m, cfg, data, data, alpha=1e-3, seed=3, steps=8)
        acc = evaluate(MaskedModel(m), r.mask, data, data)
        rec = mask_record(r, acc, checkpoint="toy", task="A", alpha=1e-3, seed=3, steps=8,
                          arch="toy", image_size=0)
        blobs.append(save_mask(tmp_path / f"m{i}.pt", rec).read_bytes())
    assert blobs[0] == blobs[1]


def test_masked_steps_fault_no_pages_once_warm():
    """keep_freed_memory: once the heap has grown to a step's peak, the activations of a step
    (2 MB each here) are reused from the process heap, not faulted in from the kernel again
    every step (glibc's default: ~800 minor page faults per step of this model, thousands
    per SCL masked step)."""
    resource = pytest.importorskip("resource")
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 32 * 32, 3))
    mm = MaskedModel(model, init=2.0)
    if not keep_freed_memory():
        pytest.skip("not glibc: the allocator setting is not available")
    x, y = torch.randn(64, 1, 32, 32), torch.randint(0, 3, (64,))
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        mm.flat.grad = None
        torch.nn.functional.cross_entropy(mm(x, mm.sample(gen, 1.0)), y).backward()

    for _ in range(30):  # the heap grows to its steady state (longer after other tests)
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    assert faults < 50, faults  # one 2 MB activation faulted in would be 512 pages


def test_an_overflowing_learning_rate_names_the_setting():
    """masks.lr far beyond float32 (allowed through outside_range): one MaskError naming
    masks.lr, not a torch traceback."""
    m = convbn()
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randn(32, 1, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    cfg = dataclasses.replace(CFG, batch_size=8, log_every=5, lr=1e300)
    with pytest.raises(MaskError, match=r"masks.lr 1e\+300"):
        train_mask(m, cfg, data, data, alpha=1e-2, seed=0, steps=20)
