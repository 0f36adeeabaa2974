"""core.masking: planted modules are recovered, masks are generic, files are validated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from core.config import MaskConfig
from core.masking import (
    ACCURACY_KEYS,
    FORMAT,
    MaskedModel,
    MaskError,
    Split,
    accuracy,
    curve_dataset,
    evaluate,
    fingerprint,
    iou,
    load_mask,
    log_steps,
    mask_record,
    save_mask,
    seed_agreement,
    select_parameters,
    snapshot_parameter,
    train_mask,
)

torch.set_num_threads(1)

# ----------------------------------------------------------------------------- planted modules
# Two tasks, C classes. Task A's class k is signalled by input feature k, task B's by feature
# C + k. Planted circuit of task A: l1[k, k] (feature -> its own unit), l2[k, k] (unit -> shared
# unit k), l3[k, k] (shared unit -> logit k); task B: l1[C+k, C+k], l2[k, C+k], l3[k, k]. So the
# two modules share exactly the l3 diagonal. Everything else is irrelevant (zero weights and
# biases, the other task's pathway, whose inputs are zero) or harmful: a constant input drives a
# decoy logit C through l1 -> l2 -> l3 (the unmasked model never answers right), and each unit
# also votes for the next class (cross-wiring that costs margin).

C, NOISE = 8, 6
D, H = 2 * C + NOISE + 1, 2 * C + 2


class Planted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(D, H), nn.Linear(H, C + 1), nn.Linear(C + 1, C + 1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.act(self.l2(self.act(self.l1(x)))))


def planted() -> tuple[nn.Module, dict[str, dict[str, torch.Tensor]]]:
    m = Planted()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for k in range(C):
            m.l1.weight[k, k] = m.l1.weight[C + k, C + k] = 4.0
            m.l2.weight[k, k] = m.l2.weight[k, C + k] = 1.0
            m.l3.weight[k, k] = 2.0
            m.l2.weight[(k + 1) % C, k] = m.l2.weight[(k + 1) % C, C + k] = 0.5  # harmful
        m.l1.weight[2 * C, D - 1], m.l2.weight[C, 2 * C], m.l3.weight[C, C] = 3.0, 2.0, 4.0
        m.l1.weight[2 * C + 1, D - 1], m.l2.weight[C, 2 * C + 1] = -3.0, -2.0
    sets = {}
    for task, off in (("A", 0), ("B", C)):
        s = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in m.named_parameters()}
        for k in range(C):
            s["l1.weight"][off + k, off + k] = s["l2.weight"][k, off + k] = True
            s["l3.weight"][k, k] = True
        sets[task] = s
    return m, sets


def planted_data(task: str, n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    x = torch.zeros(n, D)
    x[torch.arange(n), (0 if task == "A" else C) + y] = 1.0
    x[:, 2 * C:2 * C + NOISE] = torch.rand(n, NOISE, generator=g)  # irrelevant noise inputs
    x[:, -1] = 1.0
    return Split(x, y, name=f"task {task}")


CFG = MaskConfig(tasks=["circle"], alpha=1e-4, alpha_sweep=[1e-4], seeds=[0], steps=300,
                 lr=0.02, init=0.9, tau=1.0, batch_size=64, n_samples=1, log_every=50,
                 eval_n=0, include=[], curve_n=0, snapshots=3, snapshot_param=None, threads=1)


def test_planted_model_is_what_the_tests_assume():
    m, sets = planted()
    mm = MaskedModel(m)
    for task in "AB":
        data = planted_data(task, 256, 5)
        assert accuracy(mm, data, None) == 0.0  # the decoy always wins unmasked
        assert accuracy(mm, data, sets[task]) == 100.0


@pytest.fixture(scope="module")
def planted_runs():
    m, sets = planted()
    runs = {task: train_mask(m, CFG, planted_data(task, 1024, 0), planted_data(task, 256, 1),
                             alpha=CFG.alpha, seed=0, steps=CFG.steps) for task in "AB"}
    return m, sets, runs


def test_masking_recovers_the_planted_module(planted_runs):
    m, sets, runs = planted_runs
    for task in "AB":
        assert iou(runs[task].mask, sets[task]) >= 95.0
        assert runs[task].curve["task_acc"][-1] == 100.0
        assert runs[task].curve["task_acc"][0] == 0.0


def test_two_task_masks_share_exactly_the_planted_part(planted_runs):
    _, sets, runs = planted_runs
    names = list(sets["A"])
    shared = {n: sets["A"][n] & sets["B"][n] for n in names}
    found = {n: runs["A"].mask[n] & runs["B"].mask[n] for n in names}
    assert iou(found, shared) >= 95.0
    assert iou(runs["A"].mask, runs["B"].mask) == pytest.approx(iou(sets["A"], sets["B"]),
                                                                abs=2.0)
    # the inverted (ablation) masks: removing A's module breaks A but not B's private path
    mm = MaskedModel(planted()[0])
    acc = evaluate(mm, runs["A"].mask, planted_data("A", 256, 2), planted_data("B", 256, 2))
    assert acc["task"] == 100.0 and acc["task_full"] == 0.0
    assert acc["task_inverted"] < acc["task"]


def test_same_seed_same_bytes_other_seed_other_noise(tmp_path):
    m, _ = planted()
    cfg = dataclasses.replace(CFG, steps=30, log_every=10)
    data, val = planted_data("A", 256, 0), planted_data("A", 64, 1)
    files = []
    for i, seed in enumerate((3, 3, 4)):
        r = train_mask(m, cfg, data, val, alpha=1e-4, seed=seed, steps=30)
        acc = evaluate(MaskedModel(m), r.mask, val, planted_data("B", 64, 1))
        rec = mask_record(r, acc, checkpoint="toy", task="A", alpha=1e-4, seed=seed, steps=30,
                          arch="toy", image_size=0)
        files.append(save_mask(tmp_path / f"m{i}.pt", rec).read_bytes())
    assert files[0] == files[1]
    assert files[0] != files[2]


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
    mm = MaskedModel(m)
    assert not m.training  # eval mode: BatchNorm uses its running statistics
    ones = {n: torch.ones(s, dtype=torch.bool) for n, s in zip(mm.names, mm.shapes)}
    torch.testing.assert_close(mm(x, ones), m(x))
    torch.testing.assert_close(mm(x, ones, invert=True), torch.zeros(5, 3))
    zeros = {n: ~v for n, v in ones.items()}
    torch.testing.assert_close(mm(x, zeros), torch.zeros(5, 3))


def test_every_parameter_is_masked_and_only_logits_train_running_stats_frozen():
    m = convbn()
    names = [n for n, _ in m.named_parameters()]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 6, 6)
    data = Split(x, torch.randint(0, 3, (32,), generator=g))
    cfg = dataclasses.replace(CFG, steps=5, batch_size=8, n_samples=2, log_every=2)
    r = train_mask(m, cfg, data, data, alpha=1e-3, seed=0, steps=5)
    assert r.names == names  # weights, biases, BatchNorm and LayerNorm affine, model order
    assert r.curve["step"] == [0, 2, 4, 5]
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=f"{k} changed")
    assert all(not p.requires_grad for p in m.parameters())
    assert any((r.logits[n] != CFG.init).any() for n in names)


def test_straight_through_gradient_reaches_every_logit():
    m = convbn()
    mm = MaskedModel(m, init=0.5)
    out = mm(torch.randn(4, 1, 6, 6), mm.sample(torch.Generator().manual_seed(0), 1.0))
    out.square().sum().backward()
    for n, g in zip(mm.names, mm.flat.grad.split(mm.sizes)):
        assert g.abs().sum() > 0, n
    sample = mm.sample(torch.Generator().manual_seed(1), 1.0)
    assert all(set(v.detach().unique().tolist()) <= {0.0, 1.0} for v in sample.values())


def test_read_out_is_deterministic_logits_above_zero():
    mm = MaskedModel(convbn(), init=0.0)
    with torch.no_grad():
        mm.logits["fc.weight"][0, :3] = torch.tensor([0.1, -0.1, 0.0])
    b = mm.binary()
    assert b["fc.weight"][0, :3].tolist() == [True, False, False]
    assert all(v.dtype == torch.bool for v in b.values())
    assert all(torch.equal(b[n], v) for n, v in mm.binary().items())


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
    assert select_parameters(m, ["bn.", "fc.bias"]) == ["bn.weight", "bn.bias", "fc.bias"]
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
    assert rec["names"] == [n for n, _ in m.named_parameters()]
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


@pytest.mark.parametrize("alpha,steps,match", [(0.0, 5, "alpha: expected a number > 0"),
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


masks_st = st.integers(1, 40).flatmap(
    lambda n: st.tuples(st.lists(st.booleans(), min_size=n, max_size=n),
                        st.lists(st.booleans(), min_size=n, max_size=n)))


@settings(max_examples=50, deadline=None)
@given(masks_st)
def test_iou_properties(pair):
    a = {"w": torch.tensor(pair[0])}
    b = {"w": torch.tensor(pair[1])}
    v = iou(a, b)
    assert 0.0 <= v <= 100.0
    assert v == iou(b, a)
    assert iou(a, a) == 100.0
    inter, union = int((a["w"] & b["w"]).sum()), int((a["w"] | b["w"]).sum())
    assert v == (100.0 if union == 0 else 100.0 * inter / union)


def test_seed_agreement_matrix():
    a = {"w": torch.tensor([1, 1, 0, 0], dtype=torch.bool)}
    b = {"w": torch.tensor([1, 0, 1, 0], dtype=torch.bool)}
    np.testing.assert_allclose(seed_agreement([a, b, a]),
                               [[100, 100 / 3, 100], [100 / 3, 100, 100 / 3],
                                [100, 100 / 3, 100]])


def test_fingerprint_and_log_steps():
    assert fingerprint(["a"], [(2, 3)]) != fingerprint(["a"], [(3, 2)])
    assert fingerprint(["a"], [(2, 3)]) == fingerprint(["a"], [[2, 3]])
    assert log_steps(300, 25) == list(range(0, 301, 25))
    assert log_steps(7, 3) == [0, 3, 6, 7]


# ----------------------------------------------------------------------------- CLI, real model


@pytest.fixture(scope="module")
def scl_setup(tmp_path_factory):
    """A tiny SCL checkpoint (16 px panels) and task folders of random problems."""
    from core.config import load
    from core.models import build_model, checkpoint_dict
    from core.raven.store import write_shard

    root = tmp_path_factory.mktemp("scl")
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["profiles"].setdefault("ci", {}).setdefault("masks", {})["threads"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw))  # one thread: the CPU is shared
    cfg = load(root / "params.yaml", "ci")
    torch.manual_seed(0)
    model = build_model(cfg.model, 16)
    torch.save(checkpoint_dict(model, cfg.model, 16, 90, 10, 1, 91.0), root / "scl_90.pt")
    other = dataclasses.replace(cfg.model, arch="cnn_mlp")
    torch.save(checkpoint_dict(build_model(other, 16), other, 16, 90, 10, 1, 91.0),
               root / "cnn_mlp_90.pt")
    rng = np.random.default_rng(0)
    for task, n in (("circle", 24), ("not_circle", 12)):
        for split in ("train", "val"):
            arrays = {"image": rng.integers(0, 256, (n, 16, 16, 16), dtype=np.uint8),
                      "target": rng.integers(0, 8, n).astype(np.int64)}
            write_shard(root / "raven" / "tasks" / task / split / "center_single.npz", arrays,
                        "center_single")
    return root


def test_cli_writes_a_valid_mask_file(scl_setup):
    from core.masking import main
    from core.models import load_checkpoint

    root = scl_setup
    out = root / "masks" / "scl_90-circle-a1e-5-s0.pt"
    args = ["--params", str(root / "params.yaml"), "--profile", "ci", "--checkpoint", str(root / "scl_90.pt"),
            "--task", "circle", "--alpha", "1e-5", "--seed", "0", "--steps", "3", "--data",
            str(root / "raven"), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    model, _ = load_checkpoint(root / "scl_90.pt")
    rec = load_mask(out, model)
    assert (rec["checkpoint"], rec["task"], rec["alpha"], rec["seed"], rec["steps"]) == \
        ("scl_90", "circle", 1e-5, 0, 3)
    assert (rec["arch"], rec["image_size"]) == ("scl", 16)
    assert rec["names"] == [n for n, _ in model.named_parameters()]
    assert rec["snapshots"]["param"] == "relation.2.weight"
    assert all(0 <= v <= 100 for v in rec["accuracy"].values())
    assert rec["curve"]["step"] == [0, 3]


@pytest.mark.parametrize("change,match", [
    ({"--task": "star"}, "task: unknown task 'star'"),
    ({"--alpha": "0"}, "alpha: expected a number > 0"),
    ({"--steps": "-2"}, "steps: expected an integer > 0"),
    ({"--checkpoint": "cnn_mlp_90.pt"}, "cnn_mlp_90.pt: architecture 'cnn_mlp', expected 'scl'"),
    ({"--data": "nowhere"}, "nowhere/tasks/circle: no such folder"),
])
def test_cli_bad_inputs_give_one_clear_error(scl_setup, capsys, change, match):
    from core.masking import main

    root = scl_setup
    args = {"--params": "params.yaml", "--profile": "ci", "--checkpoint": "scl_90.pt",
            "--task": "circle", "--alpha": "1e-5", "--seed": "0", "--steps": "2",
            "--data": "raven", "--out": "x.pt"}
    args.update(change)
    for k in ("--params", "--checkpoint", "--data", "--out"):
        args[k] = str(root / args[k])
    assert main([a for kv in args.items() for a in kv] + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
    assert not (root / "x.pt").exists()


@pytest.mark.parametrize("init", [-1.0, 0.0, 0.9, 2.0])
def test_sampled_keep_rate_is_sigmoid_of_logit(init):
    """Logistic noise: P(sigmoid(s + l) > 0.5) = P(l > -s) = sigmoid(s)."""
    mm = MaskedModel(nn.Linear(300, 300), init=init)
    hard = mm.sample(torch.Generator().manual_seed(0), 1.0)["weight"].detach()
    assert float(hard.mean()) == pytest.approx(float(torch.sigmoid(torch.tensor(init))),
                                               abs=0.01)
