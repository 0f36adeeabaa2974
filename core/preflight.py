"""Before the first stage: can this machine finish the run that ``params.yaml`` describes?

    python -m core.preflight --params params.yaml      (``make repro`` runs it before ``dvc repro``)

A study that stops at its last stage after 25-45 minutes for want of a system tool is found out
here, in seconds. Checked, each only where the run needs it:

- ``git`` (DVC keeps its state in the git repository; provenance records the commit);
- TeX for the paper stage (``paper.pdf: true``): ``latexmk``, ``pdflatex`` and every LaTeX
  package ``paper/report.tex`` loads (through ``kpsewhich``); without TeX, ``make repro PAPER=0``
  runs everything but the PDF (``paper.pdf: false``);
- a CUDA device when ``device`` names one;
- Ray when the mask sweep is to run on it (``MASKS_EXECUTOR=ray``).

Every missing tool is listed with its install hint, then the exit status is 2; nothing is
written.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

from core.config import Config, ConfigError, load

REPORT_TEX = Path(__file__).resolve().parents[1] / "paper" / "report.tex"
TEX_HINT = ("the paper stage needs TeX: run `make tex` (as root it installs the Debian packages "
            "latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended) "
            "or install a TeX distribution with latexmk and pdflatex")
NO_TEX = "or run everything but the PDF: `make repro PAPER=0` (params: paper.pdf: false)"


def tex_packages(tex: Path = REPORT_TEX) -> list[str]:
    """The LaTeX packages ``tex`` loads (``\\usepackage[...]{a,b}``), in order."""
    text = re.sub(r"(?<!\\)%.*", "", tex.read_text())
    names: list[str] = []
    for group in re.findall(r"\\usepackage\s*(?:\[[^\]]*\])?\s*\{([^}]*)\}", text):
        names += [n.strip() for n in group.split(",") if n.strip() and n.strip() not in names]
    return names


def missing_tex(tex: Path = REPORT_TEX) -> list[str]:
    """What the paper stage lacks to build the PDF: programs, then LaTeX packages."""
    progs = [p for p in ("latexmk", "pdflatex") if shutil.which(p) is None]
    if progs:
        return [f"{' and '.join(progs)} not found: {TEX_HINT}; {NO_TEX}"]
    kpse = shutil.which("kpsewhich")
    if kpse is None:
        return []
    pkgs = tex_packages(tex)
    res = subprocess.run([kpse, *(f"{p}.sty" for p in pkgs)], capture_output=True, text=True,
                         timeout=60)
    found = {Path(line).stem for line in res.stdout.splitlines() if line.strip()}
    absent = [p for p in pkgs if p not in found]
    if absent:
        return [f"LaTeX package(s) {', '.join(absent)} not found (paper/report.tex loads them): "
                f"{TEX_HINT}; {NO_TEX}"]
    return []


def problems(cfg: Config, env: dict[str, str] | None = None) -> list[str]:
    """Every reason the run of ``cfg`` cannot finish here (empty: it can)."""
    env = dict(os.environ if env is None else env)
    out = []
    if shutil.which("git") is None:
        out.append("git not found: DVC keeps the pipeline's state in the git repository "
                   "(install git, e.g. `apt-get install git`)")
    if cfg.paper.pdf:
        out += missing_tex()
    if cfg.device.startswith("cuda"):
        from core.device import DeviceError, resolve_device

        try:
            resolve_device(cfg.device)
        except DeviceError as err:
            out.append(f"{err} (params.yaml)")
    if env.get("MASKS_EXECUTOR") == "ray" and find_spec("ray") is None:
        out.append("MASKS_EXECUTOR=ray, but ray is not installed: `make install RAY=1` "
                   "(or `pip install -e '.[ray]'`)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.preflight",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.params)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    found = problems(cfg)
    if found:
        print(f"error: this run (profile {cfg.profile}, {args.params}) cannot finish on this "
              "machine; nothing was run:", file=sys.stderr)
        for p in found:
            print(f"  - {p}", file=sys.stderr)
        return 2
    print(f"preflight: every tool the run needs is here (profile {cfg.profile}"
          f"{'' if cfg.paper.pdf else ', no PDF: paper.pdf is false'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
