"""Locked dependencies: requirements/lock.txt and lock-ray.txt (pip-compile, exact versions and
hashes) cover pyproject.toml, agree with each other and with environment.yml, name no machine's
index or folder, and the environment `make install` made is the lock's."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
LOCK_RAY = ROOT / "requirements" / "lock-ray.txt"

_spec = importlib.util.spec_from_file_location("lockfile", ROOT / "requirements" / "lockfile.py")
lockfile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lockfile)


def test_environment_yml_is_written_from_the_lock() -> None:
    assert (ROOT / "environment.yml").read_text() == lockfile.environment(LOCK), (
        "environment.yml differs from what `make lock` writes from requirements/lock.txt")


@pytest.mark.parametrize("lock", [LOCK, LOCK_RAY], ids=["lock", "lock-ray"])
def test_every_dependency_pinned_with_hashes(lock: Path) -> None:
    lockfile.check(lock)  # every dependency of pyproject.toml (+ dev, + ray for lock-ray)
    pkgs = [(name, lines) for name, lines in lockfile.blocks(lock) if name is not None]
    assert len(pkgs) == len(lockfile.pins(lock)) > 100
    for name, lines in pkgs:
        assert any("--hash=sha256:" in ln for ln in lines), f"{lock.name}: {name} has no hash"
    # no index, find-links or local path of the machine that compiled it
    options = [ln for ln in lock.read_text().splitlines() if ln.startswith("-")]
    assert options == [], options
    text = lock.read_text()
    assert " /" not in text and "=/" not in text and "file://" not in text  # no absolute path


def test_the_two_locks_pin_what_they_share_alike() -> None:
    base, ray = lockfile.pins(LOCK), lockfile.pins(LOCK_RAY)
    assert {k: ray[k] for k in base} == base
    assert "ray" in ray and "ray" not in base


def test_torch_is_the_cpu_build_of_the_pinned_release() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    release = next(d for d in deps if d.startswith("torch==")).split("==")[1]
    assert lockfile.pins(LOCK)["torch"] == f"{release}+cpu"


def test_without_drops_one_package_and_keeps_the_rest(tmp_path: Path) -> None:
    text = lockfile.without(LOCK, "torch")
    out = tmp_path / "lock.txt"
    out.write_text(text)
    rest = lockfile.pins(LOCK)
    del rest["torch"]
    assert lockfile.pins(out) == rest
    assert "torch==" not in text and text.count("--hash=") == (
        LOCK.read_text().count("--hash=") - sum(
            ln.count("--hash=") for n, lines in lockfile.blocks(LOCK) if n == "torch"
            for ln in lines))
    with pytest.raises(lockfile.LockError, match="lock.txt: nothing is not pinned"):
        lockfile.without(LOCK, "nothing")


def test_check_names_a_dependency_missing_from_the_lock(tmp_path: Path) -> None:
    project = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    project.write_text(text.replace('"tqdm",', '"tqdm",\n    "not-in-the-lock>=1",'))
    with pytest.raises(lockfile.LockError, match=r"lock.txt: not-in-the-lock>=1 \(pyproject.toml\) "
                                                 r"not pinned: .*run `make lock`"):
        lockfile.check(LOCK, project)


@pytest.mark.skipif(not (Path(sys.prefix) / ".installed-lock").exists(),
                    reason="not the virtualenv of `make install`")
def test_installed_packages_are_the_locked_versions() -> None:
    wrong = {}
    for name, version in lockfile.pins(LOCK).items():
        if name == "torch":
            continue  # a torch installed before `make install` (a CUDA build) is kept
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "not installed"
        if have != version:
            wrong[name] = (have, version)
    assert wrong == {}, f"installed vs locked: {wrong}"
