"""core.sweep: one process trains a network's masks; resume after SIGKILL; Ray = in-process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from core import sweep
from core.config import ConfigError, compose, from_dict, load
from core.formats.masks import MaskError, load_mask
from core.io import file_sha256
from core.models import build_model, checkpoint_dict
from core.raven.store import write_shard

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16


def small_params(tmp: Path, seeds=(0, 1), steps=4, **masks) -> Path:
    """A flat params file: the ci profile with two checkpoints, one network, task circle."""
    raw = load(ROOT / "params.yaml", "ci").to_dict()
    raw["train"].update(milestones=[1.0, 2.0], networks=[0])
    raw["device"], raw["precision"] = "cpu", "fp32"
    raw["masks"].update({"tasks": ["circle"], "families": ["original"], "seeds": list(seeds),
                         "alpha": 1e-4, "alpha_sweep": [1e-3], "steps": steps, "log_every": 2,
                         "batch_size": 8, "curve_n": 8, "eval_n": 0, "threads": 1,
                         "complement_masks": [], "families_last": [], **masks})
    from_dict(raw)  # valid
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def make_inputs(tmp: Path) -> tuple[Path, Path]:
    """Two tiny SCL checkpoints of network 0 and the sets circle / not_circle (16 px)."""
    cfg = load(ROOT / "params.yaml", "ci")
    train = tmp / "train" / "net0"
    train.mkdir(parents=True)
    for i, name in enumerate(("scl_1", "scl_2")):
        torch.manual_seed(i)
        model = build_model(cfg.model, SIZE)
        torch.save(checkpoint_dict(model, cfg.model, SIZE, i + 1, 10 * i, 1, 20.0),
                   train / f"{name}.pt")
    rng = np.random.default_rng(0)
    for task in ("circle", "not_circle"):
        for split, n in (("train", 24), ("val", 12), ("test", 12)):
            arrays = {"image": rng.integers(0, 256, (n, 16, SIZE, SIZE), dtype=np.uint8),
                      "target": rng.integers(0, 8, n).astype(np.int64)}
            write_shard(tmp / "raven" / "tasks" / task / split / "center_single.npz", arrays,
                        "center_single")
    return train, tmp / "raven"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    train, data = make_inputs(tmp)
    return tmp, train, data


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(params: Path, train: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "core.sweep", "--params", str(params), "--net", "0",
            "--train", str(train), "--data", str(data), "--out", str(out), *extra]


# ----------------------------------------------------------------------------- the plan


def test_plan_covers_checkpoints_sets_seeds_and_the_alpha_sweep(tmp_path):
    cfg = load(small_params(tmp_path))
    runs = sweep.plan(cfg)
    names = [r.relpath for r in runs]
    assert names == ["scl_1/circle-a1e-4-s0.pt", "scl_1/circle-a1e-4-s1.pt",
                     "scl_2/circle-a1e-4-s0.pt", "scl_2/circle-a1e-4-s1.pt",
                     "scl_2/circle-a1e-3-s0.pt"]
    assert {(r.family, r.complement) for r in runs} == {("original", "not_circle")}


def test_plan_complement_protocol_and_families():
    cfg = load(ROOT / "params.yaml", "ci")
    mc = cfg.masks.__class__(**{**cfg.masks.__dict__, "tasks": ["circle", "square"],
                                "families": ["original", "control"],
                                "complement_masks": ["original", "control"]})
    sets = sweep.mask_sets(mc)
    trained = [s[1] for s in sets]
    assert set(trained[:2]) == {"circle", "square"}  # the tasks first, in core.tasks order
    assert {"not_circle", "not_square", "all", "color_rule", "size_rule", "one_rule"} <= set(
        trained)
    assert not any("triangle" in t for t in trained)
    ref = next(s for s in sets if s[1] == "all")
    assert ref[2] is None and ref[3] is False  # no complement, no alpha sweep
    # an unknown family never reaches the sweep: the configuration refuses it when built
    for key, value in (("families", ["nope"]), ("families_last", ["shape"])):
        raw = compose("ci")
        raw["masks"][key] = value
        with pytest.raises(ConfigError, match=rf"masks\.{key}\[0\]: expected one of original"):
            from_dict(raw)


def test_tasks_early_masks_fewer_shapes_before_the_last_checkpoint():
    cfg = load(ROOT / "params.yaml", "ci")
    raw = cfg.to_dict()
    raw["train"]["milestones"] = [1.0, 2.0, 3.0]
    raw["masks"].update(tasks=["circle", "square", "triangle"], tasks_early=["square"],
                        families=["original"], alpha_sweep=[])
    runs = sweep.plan(from_dict(raw))
    by = {ck: sorted({(r.task, r.seed) for r in runs if r.checkpoint == ck})
          for ck in ("scl_1", "scl_2", "scl_3")}
    assert by["scl_1"] == by["scl_2"] == [("square", 0), ("square", 1)]
    assert {t for t, _ in by["scl_3"]} == {"circle", "square", "triangle"}
    raw["masks"]["tasks_early"] = ["hexagon"]  # not among masks.tasks
    with pytest.raises(ConfigError, match=r"masks\.tasks_early: 'hexagon' is not in masks\.tasks"):
        from_dict(raw)


def test_plan_last_only_families_complements_and_eval_plan():
    """families_last: masked at the last checkpoint only; complement and reference masks with
    seeds[0] only and no alpha sweep; the evaluation plan pays only for what metrics read."""
    cfg = load(ROOT / "params.yaml", "ci")
    raw = cfg.to_dict()
    raw["train"]["milestones"] = [1.0, 2.0]
    raw["masks"].update(tasks=["circle", "square"], seeds=[0, 1], alpha=1e-4,
                        alpha_sweep=[1e-3], families=["original", "shape_rule"],
                        families_last=["shape_rule"], complement_masks=["shape_rule"],
                        tasks_early=[])
    cfg = from_dict(raw)
    runs = sweep.plan(cfg)
    first = {r.task for r in runs if r.checkpoint == "scl_1"}
    assert first == {"circle", "square"}  # shape_rule only at the last checkpoint
    last = [r for r in runs if r.checkpoint == "scl_2"]
    comp = [r for r in last if sweep.role(r) != "task"]
    assert {(r.task, r.seed) for r in comp} == {("rule_not_circle", 0), ("rule_not_square", 0),
                                                ("rule_all", 0)}
    swept = {(r.task, r.alpha) for r in last if r.alpha != 1e-4}
    assert swept == {("circle", 1e-3), ("square", 1e-3)}  # not the last-only family
    plan = sweep.eval_plan(last, cfg.masks)
    main = plan["rule_circle-a1e-4-s1"]
    assert main["selective"] == {("rule_circle", "report"), ("rule_square", "report")}
    assert main["inverted"] == {("rule_circle", "report")}  # degenerate: the own set shows it
    assert ("rule_circle", "select") in main["mask"] and ("rule_square", "select") not in main["mask"]
    assert set(plan["circle-a1e-3-s0"]) == {"mask"}
    assert plan["circle-a1e-3-s0"]["mask"] == {("circle", "select"), ("circle", "report")}
    assert set(plan["rule_all-a1e-4-s0"]) == {"mask"}
    assert ("rule_square", "report") in plan["rule_not_circle-a1e-4-s0"]["mask"]
    assert set(sweep.eval_sets(last, cfg.masks.tasks)) == {
        "circle", "square", "rule_circle", "rule_square", "rule_not_circle", "rule_not_square",
        "rule_all"}


# ----------------------------------------------------------------------------- the sweep


@pytest.fixture(scope="module")
def reference(inputs):
    """An uninterrupted in-process sweep (the byte reference)."""
    tmp, train, data = inputs
    params = small_params(tmp)
    out = tmp / "ref"
    summary = sweep.Sweep(load(params), 0, train, data, out, log=lambda m: None).run()
    return params, out, summary


def test_sweep_writes_every_mask_and_evals(inputs, reference):
    tmp, train, data = inputs
    params, out, summary = reference
    cfg = load(params)
    assert summary["trained"] == 5 and summary["kept"] == 0
    assert len(summary["runs"]) == 5 and all(r["compute_s"] > 0 for r in summary["runs"])
    # the last checkpoint first (its evaluation then overlaps the earlier checkpoints' runs)
    assert [r["mask"].split("/")[0] for r in summary["runs"]] == ["scl_2"] * 3 + ["scl_1"] * 2
    for r in sweep.plan(cfg):
        rec = load_mask(out / r.relpath)
        assert (rec["network"], rec["checkpoint"], rec["family"], rec["task"], rec["seed"]) == \
            (0, r.checkpoint, "original", "circle", r.seed)
        assert rec["settings"]["checkpoint_sha256"] == file_sha256(
            train / f"{r.checkpoint}.pt")
        assert rec["settings"]["data"].keys() == {"circle", "not_circle"}
        # every masks.* key but the run list's is part of the settings (threads included)
        assert set(rec["settings"]["masks"]) == set(cfg.masks.__dataclass_fields__) - set(
            sweep.NOT_RUN_SETTINGS)
        assert rec["settings"]["masks"]["threads"] == 1
        assert all(t.device.type == "cpu" for t in rec["mask"].values())
    ds = xr.load_dataset(out / "scl_2" / "evals.nc")
    assert list(ds["mask"].values) == ["circle-a1e-4-s0", "circle-a1e-4-s1", "circle-a1e-3-s0"]
    assert set(ds["eval_set"].values) == {"circle"}  # the family's task sets (eval_plan)
    assert list(ds["split"].values) == ["select", "report"]
    assert (ds["n_problems"].sel(split="report", variant="mask") == 12).all()
    # the evaluation plan: ablations of the main-alpha masks only, on the report split only
    n = ds["n_problems"].sel(eval_set="circle")
    assert (n.sel(mask="circle-a1e-4-s0", variant="inverted", split="report") == 12)
    assert (n.sel(mask="circle-a1e-4-s0", variant="inverted", split="select") == 0)
    assert (n.sel(mask="circle-a1e-3-s0", variant="inverted") == 0).all()
    assert ds["accuracy"].sel(mask="circle-a1e-3-s0", variant="inverted").isnull().all()


def test_rerun_keeps_everything_and_rewrites_nothing(inputs, reference):
    tmp, train, data = inputs
    params, out, _ = reference
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    summary = sweep.Sweep(load(params), 0, train, data, out, log=lambda m: None).run()
    assert (summary["trained"], summary["kept"]) == (0, 5)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_changed_setting_retrains_only_what_it_touches(inputs, reference, tmp_path):
    tmp, train, data = inputs
    params, out, _ = reference
    work = tmp_path / "masks"
    for rel, blob in files(out).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(blob)
    # another alpha sweep: the old sweep mask goes, the new one is trained, the rest is kept
    p2 = small_params(tmp_path, alpha_sweep=[1e-2])
    logs: list[str] = []
    summary = sweep.Sweep(load(p2), 0, train, data, work, log=logs.append).run()
    assert (summary["trained"], summary["kept"]) == (1, 4)
    assert not (work / "scl_2" / "circle-a1e-3-s0.pt").exists()
    assert any("removed stale" in m and "circle-a1e-3-s0.pt" in m for m in logs)
    assert files(work)["scl_1/evals.nc"] == files(out)["scl_1/evals.nc"]
    # another evaluation size: every mask is kept (a run's own accuracies use QUICK_N), the
    # evaluations are redone on the new number of problems
    p4 = small_params(tmp_path, alpha_sweep=[1e-2], eval_n=6)
    summary = sweep.Sweep(load(p4), 0, train, data, work, log=logs.append).run()
    assert (summary["trained"], summary["kept"]) == (0, 5)
    ev = xr.load_dataset(work / "scl_1" / "evals.nc")
    assert int(ev["n_problems"].sel(split="report", variant="mask").max()) == 6
    # another number of steps: every mask is retrained
    p3 = small_params(tmp_path, steps=2)
    summary = sweep.Sweep(load(p3), 0, train, data, work, log=logs.append).run()
    assert (summary["trained"], summary["kept"]) == (5, 0)
    assert load_mask(work / "scl_1" / "circle-a1e-4-s0.pt")["steps"] == 2


def test_bad_inputs_name_the_file(inputs, tmp_path, capsys, monkeypatch):
    tmp, train, data = inputs
    params = small_params(tmp_path)
    cfg = load(params)
    with pytest.raises(sweep.SweepError, match=r"nowhere/scl_1\.pt: checkpoint not found"):
        sweep.Sweep(cfg, 0, tmp_path / "nowhere", data, tmp_path / "o").run()
    other = tmp_path / "raven"
    (other / "tasks" / "circle").mkdir(parents=True)
    with pytest.raises(sweep.SweepError, match=r"tasks/circle: no data files"):
        sweep.Sweep(cfg, 0, train, other, tmp_path / "o").run()
    (other / "tasks" / "circle" / "x.npz").write_bytes(b"x")
    with pytest.raises(sweep.SweepError, match=r"tasks/not_circle: task set not found"):
        sweep.Sweep(cfg, 0, train, other, tmp_path / "o").run()
    (tmp_path / "o" / "scl_1").mkdir(parents=True, exist_ok=True)
    bad = tmp_path / "o" / "scl_1" / "circle-a1e-4-s0.pt"
    bad.write_bytes(b"not a torch file")
    logs: list[str] = []
    s = sweep.Sweep(cfg, 0, train, data, tmp_path / "o", log=logs.append)
    assert not s.is_done(s.runs[0]) and not bad.exists()
    assert any("circle-a1e-4-s0.pt: not a readable mask file" in m for m in logs)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "scl_1").mkdir()
    (repo / "scl_1" / "circle-a5e-1-s0.pt").write_bytes(b"someone's file")
    with pytest.raises(sweep.SweepError, match="repo: refusing to use this folder"):
        sweep.Sweep(cfg, 0, train, data, repo).run()
    assert (repo / "scl_1" / "circle-a5e-1-s0.pt").exists()
    args = cli(params, train, data, tmp_path / "o2")[3:]  # the CLI's arguments, in-process
    assert sweep.main([*args, "--executor", "nope"]) == 2
    assert "--executor: expected one of inprocess, process, ray, got 'nope'" in capsys.readouterr().err
    monkeypatch.setenv("MASKS_EXECUTOR", "dask")
    assert sweep.main(args) == 2
    assert "MASKS_EXECUTOR: expected one of inprocess, process, ray" in capsys.readouterr().err
    assert sweep.main([*args[:3], "7", *args[4:]]) == 2
    assert "--net 7: not one of train.networks [0]" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume_is_byte_identical(inputs, reference, tmp_path):
    """A real SIGKILL of the CLI midway; the restart trains only what is missing, removes the
    litter and ends byte-identical to the uninterrupted sweep."""
    tmp, train, data = inputs
    params, ref_out, _ = reference
    out = tmp_path / "masks"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cli(params, train, data, out), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    def finished() -> list[Path]:
        return [p for p in out.rglob("*.pt") if not p.name.startswith(".tmp-")]

    while time.time() < deadline and len(finished()) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    workers = children.read_text().split() if children.exists() else []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    # the process executor's workers die with the sweep (no orphans left computing or idle)
    def alive(pid: str) -> bool:  # a zombie (exited, not yet reaped) is not alive
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    deadline = time.time() + 20
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if alive(w)], "orphaned mask workers"
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished()}
    assert 2 <= len(done) < 5
    # litter of an interrupted write, and a mask of a run that is no longer planned
    (out / "scl_1").mkdir(exist_ok=True)  # (the last checkpoint is trained first)
    (out / "scl_1" / ".tmp-circle-a1e-4-s1-x1y2.pt").write_bytes(b"partial")
    (out / "scl_9").mkdir()
    (out / "scl_9" / "circle-a1e-4-s0.pt").write_bytes(next(iter(done)).read_bytes())
    html = tmp_path / "reports" / "net0.html"
    r = subprocess.run(cli(params, train, data, out, "--report", str(html)), cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{5 - len(done)} trained, {len(done)} kept" in r.stdout
    assert "removed litter" in r.stdout and "removed stale" in r.stdout
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in done} == done
    assert files(out) == files(ref_out)
    # the one report of the network, and the timing beside it (not among the outputs)
    timing = json.loads(html.with_suffix(".json").read_text())
    assert (timing["trained"], timing["kept"]) == (5 - len(done), len(done))
    assert len(timing["runs"]) == 5 - len(done) and timing["wall_s"] >= timing["compute_s"]
    text = html.read_text()
    assert "network 0: 5 masks over 2 checkpoints" in text and "overhead" in text


@pytest.mark.slow
def test_process_two_workers_byte_identical_to_inprocess(inputs, reference, tmp_path):
    tmp, train, data = inputs
    params, ref_out, _ = reference
    out = tmp_path / "masks"
    summary = sweep.Sweep(load(params), 0, train, data, out, log=lambda m: None).run(
        "process", workers=2)
    assert summary["trained"] == 5 and summary["executor"] == "process"
    assert files(out) == files(ref_out)
    # overhead: wall time beyond the work divided over the 2 workers (a raw wall - work, as
    # the report printed before, came out at -859 s for a real network)
    busy = (summary["compute_s"] + summary["group_eval_s"]) / 2
    assert summary["overhead_s"] == pytest.approx(summary["wall_s"] - busy)
    assert summary["overhead_s"] > 0
    assert summary["overhead_share"] == pytest.approx(summary["overhead_s"] / busy)
    # an error inside a worker arrives as the run's own error
    bad = small_params(tmp_path, batch_size=64)
    with pytest.raises(MaskError, match="exceeds the 24 training problems"):
        sweep.Sweep(load(bad), 0, train, data, tmp_path / "bad").run("process", workers=2)


def test_ray_two_workers_byte_identical_to_inprocess(inputs, reference, tmp_path):
    ray = pytest.importorskip("ray", reason="ray not installed (pip install -e '.[ray]')")
    tmp, train, data = inputs
    params, ref_out, _ = reference
    out = tmp_path / "masks"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # 2 runs at a time
    try:
        summary = sweep.Sweep(load(params), 0, train, data, out, log=lambda m: None).run(
            "ray", workers=2)
        assert summary["trained"] == 5
        assert files(out) == files(ref_out)
        # an error inside a Ray task arrives as the run's own error, not Ray's wrapper
        bad = small_params(tmp_path, batch_size=64)
        with pytest.raises(MaskError, match="exceeds the 24 training problems"):
            sweep.Sweep(load(bad), 0, train, data, tmp_path / "bad").run("ray", workers=2)
    finally:
        ray.shutdown()
