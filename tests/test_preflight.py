"""A run that cannot finish says so at the start (core/preflight.py), and `paper.pdf: false`
(`make repro PAPER=0`) runs the paper stage without TeX, writing a note instead of the PDF."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path

import pytest
import synthetic as syn  # tests/synthetic.py: the test-only input builders
from test_paper import _dummy_figures

from core import config as C
from core import preflight
from core.formats.metrics import metrics_hash
from paper import build as paper


def _bin(folder: Path, **scripts: str) -> str:
    """A PATH of one folder holding the given programs (shell scripts)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        p = folder / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(folder)


@pytest.fixture
def cfg(tmp_path: Path) -> C.Config:
    C.write_params("ci", out=tmp_path / "params.yaml")
    return C.load(tmp_path / "params.yaml")


def test_tex_packages_read_from_the_report(tmp_path: Path) -> None:
    tex = tmp_path / "r.tex"
    tex.write_text("\\usepackage[a4paper]{geometry}\n% \\usepackage{commented}\n"
                   "\\usepackage{amsmath, booktabs}\\usepackage{geometry}\n")
    assert preflight.tex_packages(tex) == ["geometry", "amsmath", "booktabs"]
    assert "hyperref" in preflight.tex_packages()  # paper/report.tex


def test_missing_tex_is_found_with_both_ways_out(cfg, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", _bin(tmp_path / "bin", git="exit 0"))
    found = preflight.problems(cfg, env={})
    assert len(found) == 1
    assert found[0].startswith("latexmk and pdflatex not found: the paper stage needs TeX: "
                               "run `make tex`")
    assert "make repro PAPER=0" in found[0]
    # the switch: no PDF, so TeX is not needed
    no_pdf = dataclasses.replace(cfg, paper=C.PaperConfig(pdf=False))
    assert preflight.problems(no_pdf, env={}) == []


def test_missing_latex_package_and_git_are_named(cfg, tmp_path, monkeypatch) -> None:
    # kpsewhich finds only geometry.sty
    path = _bin(tmp_path / "bin", latexmk="exit 0", pdflatex="exit 0",
                kpsewhich='for a in "$@"; do [ "$a" = geometry.sty ] && echo /tex/geometry.sty; '
                          "done; exit 1")
    monkeypatch.setenv("PATH", path)
    found = preflight.problems(cfg, env={"MASKS_EXECUTOR": "process"})
    assert found[0].startswith("git not found")
    assert found[1].startswith("LaTeX package(s) graphicx, booktabs, array, amsmath, caption, "
                               "microtype, hyperref not found (paper/report.tex loads them)")


@pytest.mark.skipif("ray" in sys.modules or __import__("importlib").util.find_spec("ray"),
                    reason="ray is installed")
def test_ray_executor_without_ray(cfg) -> None:
    no_pdf = dataclasses.replace(cfg, paper=C.PaperConfig(pdf=False))
    found = preflight.problems(no_pdf, env={"MASKS_EXECUTOR": "ray", "PATH": os.environ["PATH"]})
    assert found == ["MASKS_EXECUTOR=ray, but ray is not installed: `make install RAY=1` "
                     "(or `pip install -e '.[ray]'`)"]


def test_main_stops_before_anything_runs(cfg, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", _bin(tmp_path / "bin", git="exit 0"))
    params = tmp_path / "params.yaml"
    assert preflight.main(["--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert f"this run (profile ci, {params}) cannot finish on this machine; nothing was run" in err
    C.write_params("ci", ["paper.pdf=false"], out=params)
    assert preflight.main(["--params", str(params)]) == 0
    assert "no PDF: paper.pdf is false" in capsys.readouterr().out


def test_paper_stage_without_pdf_writes_the_note(tmp_path, monkeypatch) -> None:
    metrics, cfg, _ = syn.built_metrics()
    cfg = dataclasses.replace(cfg, paper=C.PaperConfig(pdf=False))
    monkeypatch.setattr(paper.shutil, "which", lambda name: None)  # no TeX on this machine
    figs = _dummy_figures(tmp_path / "figs", metrics_hash(cfg))
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.pdf").write_bytes(b"%PDF of an earlier build")
    paths = paper.build(metrics, figs, out, cfg, gen=tmp_path / "g")
    assert paths[-1] == out / paper.NO_PDF
    assert sorted(p.name for p in out.iterdir()) == [paper.NO_PDF]
    note = (out / paper.NO_PDF).read_text()
    assert "paper.pdf: false (make repro PAPER=0)" in note and "make tex" in note
    assert (tmp_path / "g" / "numbers.tex").is_file()  # the generated TeX all the same
    # the switch is a parameter, and the metrics stay valid under it
    assert metrics_hash(cfg) == metrics_hash(dataclasses.replace(cfg, paper=C.PaperConfig(pdf=True)))
