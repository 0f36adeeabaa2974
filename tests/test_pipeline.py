"""The pipeline as its users meet it: committed results (the reviewer's path), the plot files,
and DVC experiments on a copy of the repository (ci-sized; marked slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from core import config as C
from core import plots, results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted(p for p in (ROOT / "results").glob("*") if (p / "provenance.json").is_file())


# --------------------------------------------------------------------------- committed results

def test_there_are_committed_results():
    assert RESULTS, "results/<profile>/ with provenance.json expected (python -m core.results export)"


@pytest.mark.parametrize("res", RESULTS, ids=lambda p: p.name)
def test_committed_results_match_the_current_code(res):
    # schema of every metric file, the figures' inputs, provenance hashes, the config validation
    prov = results.check(res)
    assert prov["profile"] == res.name
    cfg = C.load(res / "params.yaml")
    assert prov["config_hash"] == C.config_hash(cfg)
    size = sum(p.stat().st_size for p in res.rglob("*") if p.is_file())
    assert size < 20e6, f"{res}: {size / 1e6:.1f} MB is too much for git"


def test_check_refuses_edited_or_foreign_results(tmp_path):
    if not RESULTS:
        pytest.skip("no committed results")
    res = shutil.copytree(RESULTS[0], tmp_path / "r")
    summary = res / "metrics" / "summary.json"
    summary.write_text(summary.read_text().replace("{", "{ ", 1))
    with pytest.raises(results.ResultsError, match="summary.json: sha256 differs"):
        results.check(res)
    res = shutil.copytree(RESULTS[0], tmp_path / "r2")
    params = res / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["masks"]["steps"] += 1
    params.write_text(yaml.safe_dump(raw))
    prov = json.loads((res / "provenance.json").read_text())
    prov["files"]["params.yaml"] = results._sha256(params)
    (res / "provenance.json").write_text(json.dumps(prov))
    with pytest.raises(results.ResultsError, match="not the configuration recorded"):
        results.check(res)
    (res / "provenance.json").unlink()
    with pytest.raises(results.ResultsError, match="provenance.json: file not found"):
        results.check(res)


# --------------------------------------------------------------------------- plot files

def test_training_plot_rows_and_missing_log(tmp_path):
    ds = xr.Dataset({"loss": ("step", np.array([2.0, 1.5, 1.25])),
                     "val_acc": ("val_step", np.array([20.0, 55.5]))},
                    coords={"step": [1, 2, 3], "val_step": [2, 3]})
    (tmp_path / "net4").mkdir()
    ds.to_netcdf(tmp_path / "net4" / "training.nc", engine="netcdf4")
    loss, val = plots.training_rows(tmp_path, [4])
    assert loss == [("net4", 1, 2.0), ("net4", 2, 1.5), ("net4", 3, 1.25)]
    assert val == [("net4", 2, 20.0), ("net4", 3, 55.5)]
    with pytest.raises(plots.PlotError, match="net5/training.nc: file not found"):
        plots.training_rows(tmp_path, [5])


# --------------------------------------------------------------------------- DVC experiments

def copy_repo(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for f in set(files.split("\0")) - {"", "dvc.lock"}:
        if (ROOT / f).is_file() and not f.startswith("results/"):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    for f in (".dvc/config",):
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    C.write_params("ci", out=dst / "params.yaml", conf=dst / "conf")
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=dst, check=True)
    return dst


def run(repo: Path, *args: str, timeout: float = 900) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"dvc {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def expected_files(repo: Path, params: str) -> int:
    """Mask files of one network (core.sweep's plan) plus one evals.nc per checkpoint, computed
    by the copy's own code (the working tree may change while this slow test runs)."""
    (repo / ".expected.yaml").write_text(params)
    code = ("from core.config import load; from core.sweep import plan; "
            "c = load('.expected.yaml'); print(len(plan(c)) + len(c.checkpoints))")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    (repo / ".expected.yaml").unlink()
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def mask_files(repo: Path, net: int) -> int:
    return sum(1 for p in (repo / f"data/masks/net{net}").rglob("*") if p.is_file())


def lock_nfiles(lock: dict, net: int) -> int:
    outs = lock["stages"][f"masks@{net}"]["outs"]
    return next(o["nfiles"] for o in outs if o["path"] == f"data/masks/net{net}")


TARGETS = ("metrics", "plots")  # figures and paper need TeX; their stages are tested elsewhere
# ci, smaller still: one network, one checkpoint, one task, no alpha sweep (each -S below changes
# one key on top of these; a mask run is the unit of cost)
BASE = ("profile=ci", "train.networks=[0]", "train.milestones=[1]", "masks.tasks=[circle]",
        "masks.families=[original]", "masks.seeds=[0]", "masks.alpha_sweep=[]")


def exp_run(repo: Path, *overrides: str, queue: bool = False) -> str:
    over = [x for o in (*BASE, *overrides) for x in ("-S", o)]
    return run(repo, "exp", "run", *(["--queue"] if queue else []), *over, *TARGETS)


@pytest.mark.slow
def test_experiments_on_list_and_scalar_keys_and_a_queue(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    # a list key: mask seeds
    out = exp_run(repo, "masks.seeds=[0,1]")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["masks"]["seeds"] == [0, 1] and params["train"]["networks"] == [0]
    assert mask_files(repo, 0) == expected_files(repo, (repo / "params.yaml").read_text())
    assert "Running stage 'metrics'" in out
    # a scalar: alpha. Data and training are unaffected: they do not run again
    out = exp_run(repo, "masks.seeds=[0,1]", "masks.alpha=3e-4")
    assert "Running stage 'train@" not in out and "Running stage 'data'" not in out
    assert "Running stage 'masks@0'" in out and "Running stage 'metrics'" in out
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["masks"]["alpha"] == 3e-4
    assert mask_files(repo, 0) == expected_files(repo, (repo / "params.yaml").read_text())
    summary = json.loads((repo / "data/metrics/summary.json").read_text())
    assert summary["profile"] == "ci"
    # two queued experiments, two workers
    for seeds in ("[0]", "[1,2]"):
        exp_run(repo, f"masks.seeds={seeds}", queue=True)
    run(repo, "queue", "start", "-j", "2")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run(repo, "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Failed" not in status, status + run(repo, "queue", "logs", status.split()[-1])
    shown = json.loads(_exp_show(repo))
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    seen = {}
    for e in exps:
        for run_ in e.get("revs") or []:
            data = run_.get("data") or {}
            seeds = data.get("params", {}).get("params.yaml", {}).get("data", {}).get(
                "masks", {}).get("seeds")
            metrics = data.get("metrics", {}).get("data/headline.json", {}).get("data")
            if seeds is not None and metrics:
                seen[tuple(seeds)] = (run_["rev"], metrics)
    assert {(0,), (1, 2), (0, 1)} <= set(seen), sorted(seen)
    for seeds in ((0,), (1, 2)):
        rev, metrics = seen[seeds]
        assert metrics["profile"] == "ci"
        show = ["git", "show", f"{rev}:dvc.lock"]
        lock = yaml.safe_load(subprocess.run(show, cwd=repo, capture_output=True, text=True,
                                             check=True).stdout)
        show[-1] = f"{rev}:params.yaml"
        params = subprocess.run(show, cwd=repo, capture_output=True, text=True, check=True).stdout
        assert lock_nfiles(lock, 0) == expected_files(repo, params)
    table = run(repo, "exp", "show", "--no-pager", "--only-changed", "--md")
    assert "masks.seeds" in table


def _exp_show(repo: Path) -> str:
    out = run(repo, "exp", "show", "--json", "--no-pager")
    return out[out.index("["):] if "[" in out else out
