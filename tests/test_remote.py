"""Results anyone can pull (core/remote.py, `make publish` / `make pull`): a tiny pipeline of the
project's output kinds (a cached folder, a persistent folder, a report, a metric) in a temporary
git repository is pushed to a local-folder remote and pulled into a fresh clone, whose
`dvc status` is then clean without any stage running. Real git and DVC, no network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import remote

# every stage writes random bytes: a pulled output equal to the original was not recomputed
STEP_PY = """\
import json, os, pathlib, sys
stage = sys.argv[1]
out = pathlib.Path("out", {"gen": "data", "masks": "masks"}.get(stage, ""))
out.mkdir(parents=True, exist_ok=True)
if stage == "report":
    (out / "report.html").write_text(os.urandom(8).hex())
    (out / "headline.json").write_text(json.dumps({"x": os.urandom(1)[0]}))
else:
    (out / f"{stage}.bin").write_bytes(os.urandom(64))
"""
DVC_YAML = """\
metrics:
  - out/headline.json
stages:
  gen:
    cmd: python step.py gen
    params: [n]
    outs: [out/data]
  masks:
    cmd: python step.py masks
    deps: [out/data]
    outs:
      - out/masks:
          persist: true
  report:
    cmd: python step.py report
    deps: [out/masks, step.py]
    outs: [out/report.html, out/headline.json]
"""


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def _run(cwd: Path, *cmd: str) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}: {res.stdout}\n{res.stderr}"
    return res.stdout


def _dvc(cwd: Path, *args: str) -> str:
    return _run(cwd, sys.executable, "-m", "dvc", *args)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / "out").rglob("*")) if p.is_file()}


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with the tiny pipeline run once (dvc.lock not committed yet)."""
    monkeypatch.setenv("PATH", _env()["PATH"])
    repo = tmp_path / "a"
    repo.mkdir()
    _run(repo, "git", "init", "-q")
    _dvc(repo, "init", "-q")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("n: 1\n")
    (repo / "step.py").write_text(STEP_PY)
    (repo / ".gitignore").write_text("/out/\n")
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-qm", "pipeline")
    _dvc(repo, "repro", "-q")
    return repo


@pytest.mark.slow  # ~25 s on 2 busy cores: two repositories, a dozen DVC and git commands
def test_publish_then_pull_into_a_fresh_clone(run: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    assert remote.main(["publish", "--root", str(run), "--remote", str(store)]) == 0
    assert any(store.rglob("*")), "nothing was pushed"
    assert "share" in (run / ".dvc" / "config.local").read_text()  # the user's setting
    assert remote.uncommitted(run) == ["dvc.lock"]  # the reminder names it
    _run(run, "git", "add", "dvc.lock")
    _run(run, "git", "commit", "-qm", "the run")
    assert remote.uncommitted(run) == []

    clone = tmp_path / "b"
    _run(tmp_path, "git", "clone", "-q", str(run), str(clone))
    assert remote.status(clone), "a fresh clone without outputs cannot be clean"
    assert remote.main(["pull", "--root", str(clone), "--remote", str(store)]) == 0
    assert remote.status(clone) == {}
    original = _files(run)
    assert set(original) == {"out/data/gen.bin", "out/masks/masks.bin", "out/report.html",
                             "out/headline.json"}
    assert _files(clone) == original  # random bytes: restored, not recomputed
    # the metric reads as DVC reads it, without running anything
    assert '"x"' in _dvc(clone, "metrics", "show", "--json")

    # a stage whose code changed after the run is named; everything is restored all the same
    (clone / "step.py").write_text(STEP_PY + "# changed after the run\n")
    with pytest.raises(remote.RemoteError, match=r"not clean: stages report changed"):
        remote.pull(clone, str(store))
    assert _files(clone) == original


def test_publish_refuses_without_a_remote_or_with_a_stale_workspace(run: Path,
                                                                    tmp_path: Path) -> None:
    with pytest.raises(remote.RemoteError, match="no DVC remote configured: `make publish "
                                                 "REMOTE=/path/to/folder`"):
        remote.publish(run)
    with pytest.raises(remote.RemoteError, match="--remote nowhere: no DVC remote of that name"):
        remote.publish(run, "nowhere")
    (run / "params.yaml").write_text("n: 2\n")
    with pytest.raises(remote.RemoteError, match=r"does not match dvc.lock \(stages gen\)"):
        remote.publish(run, str(tmp_path / "store"))
    assert not (tmp_path / "store").exists()


def test_pull_without_dvc_lock_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(remote.RemoteError, match="dvc.lock: not found: nothing names"):
        remote.pull(tmp_path, str(tmp_path / "store"))


def test_committed_dvc_lock_is_the_reference_run() -> None:
    """The root dvc.lock, once committed with a published run, records the committed
    params.yaml's run: the same record as results/<profile>/dvc.lock (`make results`)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    show = subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=root, capture_output=True,
                          text=True)
    if show.returncode:
        pytest.skip("no dvc.lock committed at the root (no published reference run yet)")
    params = yaml.safe_load(subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=root,
                                           capture_output=True, text=True, check=True).stdout)
    copy = root / "results" / params["profile"] / "dvc.lock"
    assert copy.is_file() and show.stdout == copy.read_text(), (
        f"the committed dvc.lock is not {copy.relative_to(root)}: commit the dvc.lock of the "
        "run whose results/ and params.yaml are committed (make results, make publish)")
