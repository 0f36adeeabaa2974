"""core.lock: one writer per output folder (training, sweeps, exports), stale locks taken
over, and stage processes that die with the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core import config as C
from core.lock import LockError, lock_path, owner, writer_lock

ROOT = Path(__file__).resolve().parents[1]


def hold(folder: Path, command: str = "a test holder") -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until killed."""
    p = subprocess.Popen(
        [sys.executable, "-c", "import time; from core.lock import writer_lock\n"
         f"with writer_lock({str(folder)!r}, {command!r}):\n"
         "    print('held', flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def stop(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()


def test_a_live_writer_is_named_and_a_dead_one_is_taken_over(tmp_path):
    out = tmp_path / "masks" / "net0"
    p = hold(out)
    try:
        assert owner(out)["pid"] == p.pid
        with pytest.raises(LockError, match=rf"net0: another process is writing this folder "
                                            rf"\(pid {p.pid}: a test holder"):
            with writer_lock(out, "second"):
                pass
    finally:
        stop(p)
    assert lock_path(out).exists()  # left behind by a killed owner: stale
    with writer_lock(out, "second"):
        assert owner(out)["pid"] == os.getpid() and owner(out)["command"] == "second"


def test_a_lock_file_naming_a_dead_pid_is_stale(tmp_path):
    out = tmp_path / "train"
    lock_path(out).write_text('{"pid": 999999999, "command": "core.train"}\n')
    with writer_lock(out, "core.train"):
        assert owner(out)["pid"] == os.getpid()


def test_the_owners_children_write_under_its_lock(tmp_path):
    out = tmp_path / "train" / "net0"
    child = _under_lock(out, "from core.lock import writer_lock\n"
                             f"with writer_lock({str(out)!r}, 'core.train --net 0'): print('in')")
    assert child.returncode == 0 and child.stdout.strip() == "in", child.stderr


def _under_lock(out: Path, code: str) -> subprocess.CompletedProcess:
    """``python -c code`` run while this process holds ``out``'s writer lock."""
    with writer_lock(out, "core.train --net all"):
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by its new parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
@pytest.mark.parametrize("shell", [False, True])
def test_killing_the_parent_stops_the_stage(tmp_path, shell):
    """As DVC's kill -9: the stage process (which calls die_with_parent at its entry, as
    core.sweep and core.train do) ends with the process that started it, also when a shell
    that does not exec the command (/bin/sh -c, as DVC runs stages) stands between."""
    import shlex

    pidfile = tmp_path / "child.pid"
    child_code = ("import os, time; from core.lock import die_with_parent; die_with_parent(); "
                  f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)")
    argv = [sys.executable, "-c", child_code]
    launch = (f"subprocess.Popen({shlex.join(argv)!r} + '; true', shell=True)" if shell
              else f"subprocess.Popen({argv!r})")
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys, time\n{launch}; time.sleep(120)"],
        cwd=ROOT)
    try:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert _alive(child)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its killed parent")


def _ci_params(tmp_path: Path, **masks) -> Path:
    raw = C.compose("ci")
    raw["masks"].update(masks)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_a_second_sweep_on_one_folder_says_so(tmp_path, capsys, monkeypatch):
    from core import sweep
    from core.sweep import cli

    calls = []
    monkeypatch.setattr(cli, "die_with_parent", lambda: calls.append(1))
    out = tmp_path / "masks" / "net0"
    p = hold(out, "core.sweep")
    try:
        code = sweep.main(["--params", str(_ci_params(tmp_path)), "--net", "0", "--train",
                           str(tmp_path / "train"), "--out", str(out)])
    finally:
        stop(p)
    assert code == 2 and calls == [1]
    assert f"another process is writing this folder (pid {p.pid}: core.sweep" in \
        capsys.readouterr().err


def test_a_second_training_on_one_folder_says_so(tmp_path, capsys, monkeypatch):
    from core import train
    from core.train import entry

    monkeypatch.setattr(entry, "die_with_parent", lambda: None)
    out, state = tmp_path / "train", tmp_path / "state"
    p = hold(state / "net1", "core.train --out train/net1")
    try:
        code = train.main(["--params", str(_ci_params(tmp_path)), "--net", "all", "--data",
                           str(tmp_path / "raven"), "--out", str(out), "--state", str(state)])
    finally:
        stop(p)
    assert code == 1
    assert f"net1: another process is writing this folder (pid {p.pid}: core.train --out " \
        "train/net1" in capsys.readouterr().err
    assert not [f for f in out.rglob("*") if f.name.endswith(".lock")]  # outside the output


def test_bad_settings_never_delete_finished_masks(tmp_path, capsys):
    """masks.lr=1e300 (a hand-edited params file): refused before the sweep looks at its
    folder, so the finished masks there stay."""
    from core import sweep

    out = tmp_path / "masks" / "net0"
    done = out / "scl_1" / "circle-a1e-5-s0.pt"
    done.parent.mkdir(parents=True)
    done.write_bytes(b"a finished mask")
    code = sweep.main(["--params", str(_ci_params(tmp_path, lr=1e300)), "--net", "0",
                       "--train", str(tmp_path / "train"), "--out", str(out)])
    assert code == 2
    assert "outside the plausible range [1e-06, 10] of masks.lr" in capsys.readouterr().err
    assert done.read_bytes() == b"a finished mask"


def test_grandchildren_write_under_the_lock_too(tmp_path):
    """torchrun's ranks under a `--net all` network process: the lock's owner is their
    grandparent."""
    out = tmp_path / "train" / "net0"
    inner = (f"from core.lock import writer_lock\nwith writer_lock({str(out)!r}, 'rank'): "
             "print('in')")
    child = _under_lock(out, "import subprocess, sys\n"
                             f"sys.exit(subprocess.run([sys.executable, '-c', {inner!r}]).returncode)")
    assert child.returncode == 0 and child.stdout.strip() == "in", child.stderr
