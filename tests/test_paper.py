"""The paper stage: numbers.tex from synthetic metric files (values, verdicts, determinism),
every report macro defined, clear errors, and (when TeX is installed) the PDF build."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config import load
from core.metrics import write
from core.schema import synthetic
from figures import FAMILIES, paper
from figures.inputs import Inputs
from figures.paper import PaperError, trend_verdict
from figures.style import FigureError

ROOT = Path(__file__).resolve().parents[1]
DEFINED = re.compile(r"\\newcommand\{\\([A-Za-z]+)\}")


@pytest.fixture(scope="module")
def cfg():
    return load(ROOT / "params.yaml", "ci")


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    d = tmp_path_factory.mktemp("metrics")
    write(synthetic(), d)
    return d


def _numbers(metrics, cfg, gen):
    paper.build(metrics, gen / "nofig", gen / "out", cfg, gen=gen, compile_pdf=False)
    return (gen / "numbers.tex").read_text()


def _macro(text: str, name: str) -> str:
    m = re.search(rf"\\newcommand\{{\\{name}\}}\{{(.*)\}}", text)
    assert m, name
    return m.group(1)


def test_numbers_match_an_independent_computation(metrics, cfg, tmp_path):
    text = _numbers(metrics, cfg, tmp_path)
    md = synthetic()["modules"]
    for i, suffix in ((0, "First"), (-1, "Last")):
        a = float(md["selected_alpha"][i])
        sp = md["sparsity"].isel(checkpoint=i).sel(alpha=a).values  # task x seed
        assert _macro(text, f"Sparsity{suffix}") == f"{np.nanmean(np.nanmean(sp, 0)):.1f}"
        d = md["dispersity"].isel(checkpoint=i).sel(alpha=a).values
        assert _macro(text, f"Disp{suffix}") == f"{np.nanmean(np.nanmean(d, 0)):.3f}"
    assert _macro(text, "OrigSparsityLast") == "94"
    assert _macro(text, "CkptLast") == r"SCL\_90"
    assert _macro(text, "NSeeds") == "3"
    # synthetic sparsity rises 65 -> 94 and dispersity falls: both trends reproduce
    assert _macro(text, "VerdictSparsity") == "reproduced"
    assert _macro(text, "VerdictDisp") == "reproduced"
    assert _macro(text, "VerdictSharing").startswith("reproduced")


def test_numbers_are_byte_identical(metrics, cfg, tmp_path):
    a = _numbers(metrics, cfg, tmp_path / "a")
    b = _numbers(metrics, cfg, tmp_path / "b")
    assert a == b


def test_every_report_macro_is_generated(metrics, cfg, tmp_path):
    defined = set(DEFINED.findall(_numbers(metrics, cfg, tmp_path)))
    tex = (ROOT / "paper" / "report.tex").read_text()
    tex = re.sub(r"(?<!\\)%.*", "", tex)  # drop comments, keep \%
    used = set(re.findall(r"\\([A-Z][A-Za-z]+)", tex))
    assert used - defined == set()
    assert all(name.isalpha() for name in defined)


def test_sharing_verdict_follows_the_data(cfg, tmp_path):
    ds = synthetic()
    sh = ds["sharing"]
    sh["iomin"][:] = (sh["iomin_chance"] - 1.0).values
    write(ds, tmp_path / "m")
    text = _numbers(tmp_path / "m", cfg, tmp_path / "g")
    assert _macro(text, "VerdictSharing") == "not reproduced (no pair above chance)"


def test_trend_verdict():
    assert trend_verdict((60, 58, 62), (90, 88, 92), +1) == "reproduced"
    assert trend_verdict((60, 50, 70), (65, 55, 75), +1) == "direction only (CIs overlap)"
    assert trend_verdict((0.3, 0.29, 0.31), (0.35, 0.34, 0.36), -1) == "not reproduced"
    assert trend_verdict((60, np.nan, np.nan), (90, np.nan, np.nan), +1).startswith("direction")
    assert trend_verdict((np.nan,) * 3, (90, 88, 92), +1).startswith("not testable")


def test_missing_metrics_file_is_named(cfg, tmp_path):
    with pytest.raises(FigureError, match=r"modules\.nc: file not found"):
        paper.numbers(Inputs(tmp_path, tmp_path, cfg))


def test_missing_figure_is_named(metrics, cfg, tmp_path):
    with pytest.raises(PaperError, match=r"figure\(s\) missing: problem_instances\.pdf"):
        paper.build(metrics, tmp_path, tmp_path / "out", cfg, gen=tmp_path / "g")


def test_missing_tex_says_how_to_install(metrics, cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(paper.shutil, "which", lambda name: None)
    with pytest.raises(PaperError, match=r"needs TeX: run `make tex`"):
        paper.latex(tmp_path / "out", tmp_path)


def _dummy_figures(folder: Path) -> Path:
    """A valid one-page PDF per expected figure (the paper only includes them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True)
    fig = plt.figure(figsize=(3, 2))
    fig.savefig(folder / "x.pdf", metadata={"CreationDate": None})
    plt.close(fig)
    for mod in FAMILIES.values():
        for stem in mod.OUTPUTS:
            shutil.copy(folder / "x.pdf", folder / f"{stem}.pdf")
    return folder


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("pdflatex") is None,
                    reason="TeX (latexmk, pdflatex) not installed: `make tex` installs it")
def test_pdf_builds_and_is_reproducible(metrics, cfg, tmp_path, monkeypatch):
    figs = _dummy_figures(tmp_path / "figs")
    monkeypatch.chdir(tmp_path)  # the second build gets a relative --out, as in dvc.yaml
    pdfs = []
    for k in range(2):
        out = tmp_path / "out0" if k == 0 else Path("out1")
        paths = paper.build(metrics, figs, out, cfg, gen=tmp_path / f"g{k}")
        pdf = paths[-1]
        assert pdf.name == "report.pdf" and pdf.read_bytes().startswith(b"%PDF")
        assert not [p for p in pdf.parent.iterdir() if p.name.startswith(".tmp-")]
        pdfs.append(pdf.read_bytes())
    # a clean build raises on undefined references and keeps no (time-stamped) log
    assert not (tmp_path / "out0" / "report.log").exists()
    assert pdfs[0] == pdfs[1]


def test_specificity_verdict_needs_a_selective_ablation():
    # removing the module kills both sets (what the default profile shows): not specific
    assert paper.specificity_verdict(97.0, 12.0, 86.0, 14.0).startswith("no: removing it costs")
    # task collapses, not-task keeps most of its accuracy: specific
    assert paper.specificity_verdict(97.0, 12.0, 86.0, 80.0) == "yes"
    # the module is not even necessary for its task
    assert "only" in paper.specificity_verdict(97.0, 90.0, 86.0, 80.0)
    assert "missing" in paper.specificity_verdict(float("nan"), 12.0, 86.0, 80.0)


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("pdflatex") is None,
                    reason="TeX (latexmk, pdflatex) not installed: `make tex` installs it")
def test_undefined_reference_fails_and_keeps_the_log(tmp_path):
    src, gen = tmp_path / "src", tmp_path / "gen"
    src.mkdir()
    gen.mkdir()
    (src / "report.tex").write_text("\\documentclass{article}\\begin{document}"
                                    "See Fig.~\\ref{fig:missing}.\\end{document}\n")
    with pytest.raises(paper.PaperError, match="undefined references"):
        paper.latex(tmp_path / "out", gen, paper=src)
    assert (tmp_path / "out" / "report.log").exists()
    assert not (tmp_path / "out" / "report.pdf").exists()
