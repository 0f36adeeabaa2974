"""The dependency locks (pip-compile output: exact versions and sha256 hashes) and what is
derived from them. Standard library only: ``make install`` runs it in a bare virtualenv.

    python requirements/lockfile.py check LOCK            every dependency of pyproject.toml is pinned
    python requirements/lockfile.py without torch LOCK    LOCK less one package (a kept torch build)
    python requirements/lockfile.py environment LOCK      write environment.yml from LOCK

``make lock`` (pip-compile, see the Makefile) rewrites ``lock.txt`` / ``lock-ray.txt`` and then
``environment.yml``; ``tests/test_lock.py`` checks that the three agree with pyproject.toml.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a requirement line of pip-compile: "name==version \" then indented "--hash=..." / "# via" lines
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?\s*$")


class LockError(ValueError):
    """A lock that does not match pyproject.toml or cannot be read; names the file."""


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, str]:
    """``{canonical name: version}`` of every package pinned in ``lock``."""
    out = {}
    for line in lock.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            out[canonical(m.group(1))] = m.group(2)
    if not out:
        raise LockError(f"{lock}: no pinned requirement (expected pip-compile output)")
    return out


def blocks(lock: Path) -> list[tuple[str | None, list[str]]]:
    """``lock`` as (package or None for header/comments, its lines) in file order."""
    out: list[tuple[str | None, list[str]]] = []
    for line in lock.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            out.append((canonical(m.group(1)), [line]))
        elif line.startswith((" ", "\t")) and out and out[-1][0] is not None:
            out[-1][1].append(line)  # --hash=... and "# via" lines of the package above
        else:
            out.append((None, [line]))
    return out


def without(lock: Path, package: str) -> str:
    """The text of ``lock`` less ``package``'s requirement (its hashes and comments too)."""
    name = canonical(package)
    kept = [lines for pkg, lines in blocks(lock) if pkg != name]
    if len(kept) == len(blocks(lock)):
        raise LockError(f"{lock}: {package} is not pinned there")
    return "\n".join(line for lines in kept for line in lines) + "\n"


def _name(req: str) -> str:
    return canonical(re.split(r"[=<>!~\[ ;]", req.strip(), maxsplit=1)[0])


def direct(pyproject: Path = ROOT / "pyproject.toml",
           extras: tuple[str, ...] = ("dev",)) -> list[str]:
    """The requirement strings of pyproject.toml's dependencies and the given extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return reqs


def check(lock: Path, pyproject: Path = ROOT / "pyproject.toml") -> None:
    """Every direct dependency (and each extra whose name the lock's file name carries: ``ray``
    in ``lock-ray.txt``) is pinned in ``lock``."""
    extras = ("dev", *(e for e in ("ray",) if e in lock.stem))
    have = pins(lock)
    missing = [r for r in direct(pyproject, extras) if _name(r) not in have]
    if missing:
        raise LockError(f"{lock}: {', '.join(missing)} (pyproject.toml) not pinned: the lock is "
                        "older than pyproject.toml; run `make lock`")


def environment(lock: Path, pyproject: Path = ROOT / "pyproject.toml") -> str:
    """environment.yml: conda's Python, then pip with every direct dependency of pyproject.toml
    (and the dev extra) at its locked version. torch is pinned to its release without the
    local label (``+cpu``), so conda users get the build for their platform."""
    have = pins(lock)
    lines = [
        "# Conda environment for users with conda, written by `make lock` from "
        f"{lock.relative_to(ROOT)}: do not edit.",
        "# The direct dependencies at the locked versions (torch: the locked release, any build);",
        "# the tested, hash-checked install of every package is `make install` (pip, the lock).",
        "name: modules-avr",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
    ]
    for req in direct(pyproject):
        name = _name(req)
        if name not in have:
            raise LockError(f"{lock}: {req} (pyproject.toml) not pinned: run `make lock`")
        version = have[name].split("+")[0] if name == "torch" else have[name]
        lines.append(f"      - {name}=={version}")
    lines.append("      - -e .")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = __doc__.split("\n\n")[1]
    try:
        if len(args) == 2 and args[0] == "check":
            check(Path(args[1]))
        elif len(args) == 3 and args[0] == "without":
            sys.stdout.write(without(Path(args[2]), args[1]))
        elif len(args) == 2 and args[0] == "environment":
            path = ROOT / "environment.yml"
            tmp = path.with_name(".tmp-environment.yml")
            tmp.write_text(environment(Path(args[1]).resolve()))
            tmp.replace(path)
            print(f"{path.name}: from {args[1]}")
        else:
            print(f"usage:\n{usage}", file=sys.stderr)
            return 2
    except (LockError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
