"""core.results export: validates every input before it touches --out, replaces only a folder
it made (marker, nothing added), writes through a temporary folder and one rename, under the
folder's writer lock, and names one commit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core import results as R
from core.lock import LockError
from core.raven.store import OutDirError

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "results" / "ci"


def export(out: Path, **kw):
    kw.setdefault("check_commit", False)
    return R.export(CI / "params.yaml", CI / "metrics", CI / "raven", out, **kw)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def exported(tmp_path):
    out = export(tmp_path / "r")
    return out, snapshot(out)


def test_export_writes_a_checked_bundle_with_its_marker(exported, tmp_path):
    out, files = exported
    assert R.MARKER in files and R.PROVENANCE in files
    assert R.check(out)["profile"] == "ci"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    # the same inputs again: replaced (with --force), byte-identical
    export(out, force=True)
    assert snapshot(out) == files


def test_a_folder_with_foreign_files_is_never_deleted(tmp_path):
    out = tmp_path / "thesis"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "thesis.tex").write_text("\\documentclass{article}")
    before = snapshot(out)
    with pytest.raises(OutDirError, match=r"holds files core.results export did not make"):
        export(out)
    with pytest.raises(OutDirError, match=r"holds files core.results export did not make"):
        export(out, force=True)
    assert snapshot(out) == before
    assert R.main(["export", "--params", str(CI / "params.yaml"), "--metrics",
                   str(CI / "metrics"), "--raven", str(CI / "raven"), "--out", str(out),
                   "--force", "--no-commit-check"]) == 2
    assert snapshot(out) == before


def test_an_export_folder_with_an_added_file_is_not_replaced(exported):
    out, _ = exported
    with pytest.raises(OutDirError, match=r"is not empty \(pass --force to replace it\)"):
        export(out)
    (out / "notes.txt").write_text("added by hand")
    with pytest.raises(OutDirError, match="did not make"):
        export(out, force=True)
    assert (out / "notes.txt").read_text() == "added by hand"


def test_an_export_made_before_the_marker_is_recognised(exported):
    out, files = exported
    (out / R.MARKER).unlink()  # what export wrote before the marker existed
    export(out, force=True)
    assert snapshot(out) == files


def test_a_misspelled_timing_log_is_refused_before_anything_is_touched(exported, tmp_path):
    out, files = exported
    with pytest.raises(R.ResultsError, match=r"repro-ci\.lgo: timing log not found"):
        export(out, force=True, timing=tmp_path / "repro-ci.lgo")
    assert snapshot(out) == files


def test_metrics_of_other_params_are_refused(exported, tmp_path):
    """ci metrics with the default profile's params (an interrupted profile switch)."""
    out, files = exported
    with pytest.raises(R.ResultsError, match=r"written for another configuration .*\(export "
                                             r"refuses metrics that the params, profile default"):
        R.export(ROOT / "results/default/params.yaml", CI / "metrics", CI / "raven", out,
                 force=True, check_commit=False)
    assert snapshot(out) == files
    # a summary.json of other params beside matching netCDF files
    metrics = tmp_path / "metrics"
    shutil.copytree(CI / "metrics", metrics)
    summary = json.loads((metrics / "summary.json").read_text())
    summary["config_hash"] = "0" * 64
    (metrics / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(R.ResultsError, match=r"summary.json: written for another configuration"):
        R.export(CI / "params.yaml", metrics, CI / "raven", out, force=True, check_commit=False)
    assert snapshot(out) == files


def test_a_live_writer_is_named_instead_of_raced(exported):
    out, files = exported
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from core.lock import writer_lock\n"
         f"with writer_lock({str(out)!r}, 'another export'):\n"
         "    print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=rf"pid {holder.pid}: another export"):
            export(out, force=True)
    finally:
        holder.kill()
        holder.wait()
    assert snapshot(out) == files
    export(out, force=True)  # the dead holder's lock is stale: taken over


def _repo(tmp_path: Path, source_commit: str | None = None) -> Path:
    """A git checkout holding one commit; metrics whose ``source`` names ``source_commit``
    (default: that commit)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    (repo / "code.py").write_text("x = 1\n")
    (repo / "params.yaml").write_text("p\n")
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "c"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    import xarray as xr

    metrics = repo / "metrics"
    metrics.mkdir()
    for p in (CI / "metrics").iterdir():
        if p.suffix == ".nc":
            with xr.open_dataset(p) as ds:
                ds = ds.load()
            ds.attrs["source"] = f"modules-avr 0.1.0 (git {(source_commit or head)[:7]})"
            ds.to_netcdf(metrics / p.name)
        else:
            shutil.copy(p, metrics / p.name)
    return repo


def test_the_export_names_one_clean_commit(tmp_path):
    repo = _repo(tmp_path)

    def run(out):
        return R.export(CI / "params.yaml", repo / "metrics", CI / "raven", out, root=repo)

    out = run(tmp_path / "r")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    assert json.loads((out / R.PROVENANCE).read_text())["commit"] == head
    # what a run rewrites (params.yaml) is not "dirty"; code is
    (repo / "params.yaml").write_text("q\n")
    run(tmp_path / "r2")
    (repo / "code.py").write_text("x = 2\n")
    with pytest.raises(R.ResultsError, match=r"dirty \(code differs from HEAD\); commit first"):
        run(tmp_path / "r3")
    assert not (tmp_path / "r3").exists()


def test_metrics_of_another_commit_are_refused(tmp_path):
    repo = _repo(tmp_path, source_commit="abcdef1")
    with pytest.raises(R.ResultsError, match=r"made at commit abcdef1, but the checkout is at"):
        R.export(CI / "params.yaml", repo / "metrics", CI / "raven", tmp_path / "r", root=repo)
    assert not (tmp_path / "r").exists()


def test_the_run_control_is_exported_and_another_profiles_refused(tmp_path):
    ctl = json.loads((ROOT / "results" / "control" / "control.json").read_text())
    assert ctl["profile"] != "ci"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(ctl))
    with pytest.raises(R.ResultsError, match="a control of profile 'default', not of 'ci'"):
        export(tmp_path / "r", control=other)
    assert not (tmp_path / "r").exists()
    ctl["profile"] = "ci"
    own = tmp_path / "own.json"
    own.write_text(json.dumps(ctl))
    out = export(tmp_path / "r", control=own)
    assert (out / R.CONTROL).read_bytes() == own.read_bytes()
    assert R.CONTROL in json.loads((out / R.PROVENANCE).read_text())["files"]
    assert export(tmp_path / "n", control=tmp_path / "absent.json")  # no control: none copied
    assert not (tmp_path / "n" / R.CONTROL).exists()


def test_modules_of_other_networks_are_refused_before_writing(tmp_path):
    empty_masks, train = tmp_path / "masks", tmp_path / "train"
    empty_masks.mkdir()
    train.mkdir()
    with pytest.raises(R.ResultsError, match="modules: .*no mask files of networks"):
        export(tmp_path / "r", train=train, masks=empty_masks)
    assert not (tmp_path / "r").exists()
