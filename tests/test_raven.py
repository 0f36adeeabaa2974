"""core.raven: generated problems obey the specification (property tests with hypothesis,
checked by the independent checker), answer sets are unbiased on iraven, output is
deterministic across worker counts, and every bad input stops with one clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.config import CONFIGURATIONS
from core.raven.__main__ import generate, main
from core.raven.attributes import COLOR_SUBSETS, SIZE_SUBSETS, Subset, SubsetError
from core.raven.check import passing
from core.raven.configurations import components
from core.raven.generate import Job, run_job
from core.raven.render import Renderer, SizeError, sdf
from core.tasks import SET_SPECS, SHAPES

SUBSETS = [Subset(), *(Subset(shape=s) for s in SHAPES), *(Subset(exclude_shape=s) for s in SHAPES),
           Subset(color="light"), Subset(size="big"), Subset(shape="circle", color="light"),
           # the rule regimes of the task families (core.tasks)
           *(Subset(**SET_SPECS[n]) for n in ("rule_all", "rule_circle", "rule_not_triangle",
                                               "color_rule", "size_rule", "one_rule"))]


def problem(cfg, subset, seed, answers="iraven", size=80, index=0):
    arrays = run_job(Job(cfg, subset, index, index + 1, seed, size, answers))
    return {k: v[0] for k, v in arrays.items()}


def assert_valid(p, cfg, subset):
    """Everything the specification demands of one problem."""
    image, attrs = p["image"], p["attrs"]
    assert image.dtype == np.uint8 and image.shape[0] == 16
    ok = passing(attrs, p["rules"], cfg)
    assert ok.sum() == 1 and ok[p["target"]], (cfg, subset, ok, p["target"])
    cands = image[8:].reshape(8, -1)
    assert len({c.tobytes() for c in cands}) == 8, "candidates not distinct in pixels"
    for c, comp in enumerate(components(cfg, subset)):
        n = len(comp.slots)
        assert (attrs[:, c, n:] == -1).all()  # no entity outside the component's slots
        ents = attrs[:, c, :n]
        counts = (ents[..., 0] >= 0).sum(1)
        assert ((counts >= 1) & (counts <= n)).all()
        occ = ents[ents[..., 0] >= 0]
        assert np.isin(occ[:, 0], comp.domain.types).all()
        assert np.isin(occ[:, 1], comp.domain.sizes).all()
        assert np.isin(occ[:, 2], comp.domain.colors).all()
        assert ((occ[:, 3] >= 0) & (occ[:, 3] < 8)).all()
    if len(components(cfg)) < 2:  # components beyond the configuration are empty
        assert (attrs[:, 1:] == -1).all() and (p["rules"][1:] == -1).all()


@settings(max_examples=900, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(cfg=st.sampled_from(CONFIGURATIONS), subset=st.sampled_from(SUBSETS),
       seed=st.integers(0, 2**32 - 1), answers=st.sampled_from(["iraven", "raven"]))
def test_property_one_valid_distinct_candidates(cfg, subset, seed, answers):
    assert_valid(problem(cfg, subset, seed, answers), cfg, subset)


@pytest.mark.parametrize("size", [64, 160])
def test_other_sizes(size):
    for cfg in CONFIGURATIONS:
        p = problem(cfg, Subset(), 7, size=size)
        assert p["image"].shape == (16, size, size)
        assert_valid(p, cfg, Subset())


def test_subsets_hold_only_their_values():
    for s in SHAPES:
        p = problem("distribute_nine", Subset(shape=s), 3)
        assert p["shapes"].tolist() == [t == s for t in SHAPES]
        q = problem("distribute_nine", Subset(exclude_shape=s), 3)
        assert not q["shapes"][SHAPES.index(s)]
    p = problem("center_single", Subset(color="dark", size="small"), 1)
    occ = p["attrs"][p["attrs"][..., 0] >= 0]
    assert np.isin(occ[:, 2], COLOR_SUBSETS["dark"]).all()
    assert np.isin(occ[:, 1], SIZE_SUBSETS["small"]).all()


def test_checker_rejects_tampering():
    p = problem("distribute_four", Subset(), 11)
    t = p["target"]
    attrs = p["attrs"].copy()
    slot = np.flatnonzero(attrs[8 + t, 0, :, 0] >= 0)[0]
    attrs[8 + t, 0, slot, 1] = (attrs[8 + t, 0, slot, 1] + 1) % 6  # one entity's size
    assert not passing(attrs, p["rules"], "distribute_four")[t]
    rules = p["rules"].copy()
    rules[0, 3] = (0, 0, 4) if rules[0, 3, 0] != 0 else (1, 1, 4)  # another colour rule
    assert not passing(p["attrs"], rules, "distribute_four")[t]
    attrs = p["attrs"].copy()
    attrs[0, 0, :, 0] = -1  # an empty context panel
    attrs[0, 0, :, 1:] = -1
    assert not passing(attrs, p["rules"], "distribute_four").any()


def context_blind_accuracy(answers, n_per_config=150):
    """Pick the candidate with the smallest summed pixel distance to the other candidates."""
    hits = total = 0
    for cfg in CONFIGURATIONS:
        a = run_job(Job(cfg, Subset(), 0, n_per_config, 5, 80, answers))
        cands = a["image"][:, 8:].reshape(len(a["target"]), 8, -1).astype(np.float32) / 255
        sq = (cands**2).sum(-1)
        dist = np.sqrt(np.maximum(sq[:, :, None] + sq[:, None] - 2 * cands @ cands.swapaxes(1, 2),
                                  0)).sum(-1)  # summed L2 distance to the other candidates
        hits += int((dist.argmin(1) == a["target"]).sum())
        total += len(a["target"])
    return hits / total


def test_bias_iraven_chance_raven_far_above():
    iraven, raven = context_blind_accuracy("iraven"), context_blind_accuracy("raven")
    # 1050 problems each: chance 12.5% +- 1.0% (1 s.d.)
    assert iraven < 0.16, iraven
    assert raven > 0.5, raven


def test_determinism_across_workers_and_runs(tmp_path):
    kw = dict(configs=["distribute_nine", "in_center_single_out_center_single"], n=40, seed=3,
              progress=False)
    generate(tmp_path / "w1", workers=1, **kw)
    generate(tmp_path / "w2", workers=2, **kw)
    generate(tmp_path / "p", workers=2, layout="public", **kw)
    generate(tmp_path / "s4", workers=1, **{**kw, "seed": 4})
    files = sorted(p.relative_to(tmp_path / "w1") for p in (tmp_path / "w1").rglob("*.npz"))
    assert len(files) == 6
    for f in files:
        assert (tmp_path / "w1" / f).read_bytes() == (tmp_path / "w2" / f).read_bytes()
        assert (tmp_path / "w1" / f).read_bytes() != (tmp_path / "s4" / f).read_bytes()
    assert len(list((tmp_path / "p").rglob("RAVEN_*_*.npz"))) == 80


def test_shards_and_public_files_agree(tmp_path):
    from core.data import RavenDataset

    kw = dict(configs=["center_single"], n=10, seed=0, progress=False, subset=Subset(shape="square"))
    generate(tmp_path / "s", **kw)
    generate(tmp_path / "p", layout="public", **kw)
    for split in ("train", "val", "test"):
        a, b = RavenDataset(tmp_path / "s", split), RavenDataset(tmp_path / "p", split)
        assert (a.images == b.images).all() and (a.targets == b.targets).all()
        assert len(RavenDataset(tmp_path / "p", split, task="square")) == len(b)
    z = np.load(tmp_path / "p" / "center_single" / "RAVEN_0_train.npz")
    assert z["meta_matrix"].shape == (8, 9) and z["meta_target"].shape == (9,)
    assert str(z["structure"][0]) == "center_single"
    assert main(["check", str(tmp_path / "p" / "center_single" / "RAVEN_0_train.npz")]) == 0
    assert main(["check", str(tmp_path / "s" / "val" / "center_single.npz")]) == 0
    png = tmp_path / "x.png"
    assert main(["show", str(tmp_path / "s" / "train" / "center_single.npz"), "--index", "2",
                 "--png", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_sdf_is_exact():
    """Fill coverage integrates to the shape's area (regular polygon / circle) within 0.5%."""
    r = Renderer(160)
    for type_, sides in enumerate((3, 4, 5, 6, 0)):
        ys, xs, keep, paint, line = r.sprite((0.5, 0.5, 1.0, 1.0), type_, 5, 1)
        y = np.arange(160)[ys][:, None] + 0.5 - 80
        x = np.arange(160)[xs][None, :] + 0.5 - 80
        area = np.clip(0.5 - sdf(sides, 72.0, 0, y, x), 0, 1).sum()
        exact = math.pi * 72**2 if sides == 0 else sides / 2 * 72**2 * math.sin(2 * math.pi / sides)
        assert abs(area / exact - 1) < 0.005, (sides, area, exact)


def err(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--configs", "center_single,bogus"], "--configs"),
    (["--shape", "star"], "--shape"),
    (["--exclude-shape", "star"], "--exclude-shape"),
    (["--size", "70"], "--size"),
    (["--n", "0"], "--n"),
    (["--answers", "fair"], "--answers"),
    (["--workers", "0"], "--workers"),
    (["--configs", "in_center_single_out_center_single", "--color-subset", "dark"],
     "empty subset"),
    (["--size-subset", "huge"], "--size-subset"),
])
def test_bad_generate_arguments(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    base = ["generate", "--out", str(out), "--n", "10", "--configs", "center_single", "--quiet"]
    rc, msg = err(capsys, base + argv)
    assert rc == 2 and needle in msg and msg.count("error:") == 1
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written


def test_out_dir_rules(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    base = ["generate", "--out", str(out), "--n", "10", "--configs", "center_single", "--quiet"]
    rc, msg = err(capsys, base)  # not a folder core.raven made: named so (--force cannot help)
    assert rc == 2 and "did not make" in msg and (out / "old.txt").read_text() == "x"
    rc, msg = err(capsys, base + ["--force"])  # kept
    assert rc == 2 and "did not make" in msg and (out / "old.txt").read_text() == "x"
    (out / "old.txt").unlink()
    assert main(base) == 0
    rc, msg = err(capsys, base)  # ours, but replacing needs --force
    assert rc == 2 and "not empty" in msg and "--force" in msg
    assert main(base + ["--force"]) == 0  # ours: replaced
    assert (out / "train" / "center_single.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folders left
    (tmp_path / "file").write_text("x")
    rc, msg = err(capsys, ["generate", "--out", str(tmp_path / "file"), "--n", "10", "--quiet"])
    assert rc == 2 and "not a folder" in msg


def test_unwritable_out_dir(tmp_path, capsys):
    import os

    (tmp_path / "file").write_text("x")  # a regular file where a parent folder should be
    rc, msg = err(capsys, ["generate", "--out", str(tmp_path / "file" / "out"), "--n", "10",
                           "--configs", "center_single", "--quiet"])
    assert rc == 2 and "--out" in msg and msg.count("error:") == 1
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        rc, msg = err(capsys, ["generate", "--out", str(locked / "out"), "--n", "10", "--quiet"])
        assert rc == 2 and "not writable" in msg
    finally:
        locked.chmod(0o700)


def test_api_errors():
    with pytest.raises(SubsetError, match="at most one"):
        Subset(shape="circle", exclude_shape="square")
    with pytest.raises(SizeError, match="multiple of 16"):
        Renderer(100)
    with pytest.raises(ValueError, match="unknown configuration"):
        components("center")


def test_corrupt_file_in_check_and_show(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    for cmd in ("check", "show"):
        rc, msg = err(capsys, [cmd, str(bad)])
        assert rc == 2 and str(bad) in msg
