"""Share a run through a DVC remote: push every output that ``dvc.lock`` records, pull them into
a clone without recomputing anything.

    python -m core.remote publish [--remote NAME_OR_FOLDER]    (make publish REMOTE=...)
    python -m core.remote pull    [--remote NAME_OR_FOLDER]    (make pull REMOTE=...)

``--remote`` is a remote's name (``dvc remote list``) or a folder / URL, which is then kept as
the default remote ``share`` in ``.dvc/config.local`` (not committed: where a copy lives is the
user's setting); without it, the default remote. The project configures no remote of its own.

``publish`` refuses a workspace that does not match ``dvc.lock`` (``dvc status`` not clean:
what would be pushed is not what dvc.lock names), pushes the cache of every stage's outputs
(``dvc push``) and reminds to commit ``dvc.lock`` and ``params.yaml``: a clone pulls what its
committed dvc.lock names. ``pull`` fetches and checks them out (``dvc pull``, no stage runs),
then requires ``dvc status`` to be clean and names the stages that are not (their code or
params changed after the run: ``make repro`` re-runs just those).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

SHARE = "share"  # the name under which a folder / URL given as --remote is configured


class RemoteError(RuntimeError):
    """No remote, a workspace that does not match dvc.lock, a failed push or pull."""


def _dvc(root: Path, *args: str, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, text=True,
                          capture_output=capture)


def _is_location(remote: str) -> bool:
    return "/" in remote or "\\" in remote or re.match(r"^[a-z][a-z0-9+]*://", remote) is not None


def remote_name(root: Path, remote: str | None) -> str:
    """The remote to use: ``remote`` if it names one; a folder or URL is configured first as the
    default remote ``share`` (``.dvc/config.local``); None: the default remote."""
    if remote and _is_location(remote):
        url = remote if "://" in remote else str(Path(remote).expanduser().resolve())
        res = _dvc(root, "remote", "add", "--local", "--default", "--force", SHARE, url)
        if res.returncode:
            raise RemoteError(f"dvc remote add {SHARE} {url}: {res.stderr.strip()}")
        return SHARE
    names = [ln.split()[0] for ln in _dvc(root, "remote", "list").stdout.splitlines()
             if ln.strip()]
    if remote:
        if remote not in names:
            raise RemoteError(f"--remote {remote}: no DVC remote of that name (configured: "
                              f"{', '.join(names) or 'none'}); give a folder or URL instead")
        return remote
    res = _dvc(root, "config", "core.remote")
    default = res.stdout.strip() if res.returncode == 0 else ""
    if not default:
        raise RemoteError("no DVC remote configured: `make publish REMOTE=/path/to/folder` (or a "
                          "URL; kept as the default remote in .dvc/config.local), or "
                          "`dvc remote add -d NAME URL` once")
    return default


def status(root: Path) -> dict:
    """``dvc status`` as a dict: stage -> what changed; empty when the workspace matches."""
    res = _dvc(root, "status", "--json")
    if res.returncode:
        raise RemoteError(f"dvc status failed: {res.stderr.strip()}")
    return json.loads(res.stdout or "{}")


def _stages(st: dict) -> str:
    return ", ".join(sorted(st))


def uncommitted(root: Path, paths: tuple[str, ...] = ("dvc.lock", "params.yaml")) -> list[str]:
    """Those of ``paths`` that git does not hold as they are now (modified or untracked)."""
    res = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=root,
                         capture_output=True, text=True)
    return [ln[3:] for ln in res.stdout.splitlines() if ln.strip()]


def publish(root: str | Path = ".", remote: str | None = None) -> str:
    """Push every output of the run that dvc.lock records; returns the remote's name."""
    root = Path(root)
    if not (root / "dvc.lock").is_file():
        raise RemoteError(f"{root / 'dvc.lock'}: not found: no run to publish (`make repro`)")
    name = remote_name(root, remote)
    st = status(root)
    if st:
        raise RemoteError(f"the workspace does not match dvc.lock (stages {_stages(st)}): "
                          "`make repro` first, or `dvc status` for details")
    if _dvc(root, "push", "--remote", name, capture=False).returncode:
        raise RemoteError(f"dvc push --remote {name} failed (above)")
    return name


def pull(root: str | Path = ".", remote: str | None = None) -> str:
    """Fetch and check out what dvc.lock records, then require a clean ``dvc status``."""
    root = Path(root)
    if not (root / "dvc.lock").is_file():
        raise RemoteError(f"{root / 'dvc.lock'}: not found: nothing names the outputs to pull "
                          "(the run's dvc.lock is committed with it)")
    name = remote_name(root, remote)
    if _dvc(root, "pull", "--remote", name, capture=False).returncode:
        raise RemoteError(f"dvc pull --remote {name} failed (above)")
    st = status(root)
    if st:
        raise RemoteError(f"pulled, but dvc status is not clean: stages {_stages(st)} changed "
                          "after the run that dvc.lock records (their code or params): "
                          "`make repro` re-runs just those")
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.remote", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("publish", "pull"))
    ap.add_argument("--remote", default=None,
                    help="a DVC remote's name, or a folder / URL (kept as the default remote "
                         f"'{SHARE}' in .dvc/config.local); default: the default remote")
    ap.add_argument("--root", default=".", help="the repository (default: here)")
    args = ap.parse_args(argv)
    try:
        if args.command == "publish":
            name = publish(args.root, args.remote)
            print(f"published: every output that dvc.lock records is on remote '{name}'")
            left = uncommitted(Path(args.root))
            if left:
                print(f"now commit {' and '.join(left)} (a clone pulls what its committed "
                      f"dvc.lock names): git add {' '.join(left)} && git commit")
        else:
            name = pull(args.root, args.remote)
            print(f"pulled from remote '{name}': dvc status is clean (nothing to recompute)")
    except RemoteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
