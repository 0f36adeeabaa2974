"""The paper stage: numbers.tex, results.tex and the README table from the metrics of the
synthetic inputs (tests/synthetic.py): verdicts follow the data, every report macro is defined,
output is byte-identical, metrics and figures of another configuration are refused, errors
are clear, and (when TeX is installed) the PDF builds."""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import synthetic as syn  # tests/synthetic.py: the test-only input builders

from core.formats.metrics import metrics_hash
from figures import FAMILIES, PROVENANCE_FILE
from figures.style import FigureError
from paper import build as paper
from paper import numbers
from paper.build import PaperError

ROOT = Path(__file__).resolve().parents[1]
DEFINED = re.compile(r"\\newcommand\{\\([A-Za-z]+)\}")
TEX = shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None


@pytest.fixture(scope="module")
def inputs():
    return syn.built_metrics()


def _generate(inputs, gen: Path) -> dict[str, str]:
    metrics, cfg, _ = inputs
    paper.build(metrics, gen / "nofig", gen / "out", cfg, gen=gen, compile_pdf=False)
    return {p.stem: p.read_text() for p in gen.glob("*.tex")}


def test_results_follow_the_summary(inputs, tmp_path):
    text = _generate(inputs, tmp_path)["results"]
    summary = json.loads((inputs[0] / "summary.json").read_text())
    last = summary["checkpoints"]["scl_30"]["families"]
    for fam in ("original", "control"):
        assert rf"\subsection{{Task family \texttt{{{fam}}}}}" in text
        io = last[fam]["iomin"]
        assert numbers.fmt_iv(io["same_task"], 1) in text
        assert numbers.tex_escape(io["verdict"]) in text
    # planted: control distinct and specific, original neither; no shape_rule masks here
    assert "Modules: distinct" in text and "shape\\_rule" not in text
    assert "specific (own-set drop above other-set drop)" in text
    assert "degenerate evaluations not reported" in text
    assert r"Side by side with the original study" in text
    assert "sparsity reproduced" in text


def test_generated_tex_is_byte_identical(inputs, tmp_path):
    a, b = _generate(inputs, tmp_path / "a"), _generate(inputs, tmp_path / "b")
    assert a.pop("paths") == b.pop("paths")  # relative: the same wherever the figures are
    assert a == b


def test_every_report_macro_is_generated(inputs, tmp_path):
    gen = _generate(inputs, tmp_path)
    defined = set(DEFINED.findall(gen["numbers"]))
    tex = (ROOT / "paper" / "report.tex").read_text() + gen["results"]
    tex = re.sub(r"(?<!\\)%.*", "", tex)  # drop comments, keep \%
    used = set(re.findall(r"\\([A-Z][A-Za-z]+)", tex))
    assert used - defined == set()
    assert all(name.isalpha() for name in defined)
    m = re.search(r"\\newcommand\{\\ConfigHash\}\{([0-9a-f]+)\}", gen["numbers"])
    assert m and metrics_hash(inputs[1]).startswith(m.group(1))


def test_readme_table_is_generated_and_rewritten(inputs, tmp_path, capsys):
    metrics, _, params = inputs
    assert paper.main(["table", "--metrics", str(metrics), "--params", str(params)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("Profile `ci`") and "| SCL_30 |" in table
    assert "| distinct modules shown | specific |" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{paper.README_BEGIN}\nold\n{paper.README_END}\ntail\n")
    assert paper.main(["readme", "--metrics", str(metrics), "--params", str(params),
                       "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and table in text and text.endswith(f"{paper.README_END}\ntail\n")
    readme.write_text("no markers\n")
    assert paper.main(["readme", "--metrics", str(metrics), "--params", str(params),
                       "--readme", str(readme)]) == 2
    assert "markers missing" in capsys.readouterr().err


def test_metrics_of_another_configuration_are_refused(inputs, tmp_path):
    metrics, _, _ = inputs
    other = syn.config(networks=(0, 1))
    with pytest.raises(FigureError, match="another configuration"):
        paper.build(metrics, tmp_path, tmp_path / "out", other, gen=tmp_path / "g",
                    compile_pdf=False)


def test_missing_metrics_file_is_named(inputs, tmp_path):
    with pytest.raises(FigureError, match=r"summary\.json: file not found"):
        paper.build(tmp_path, tmp_path, tmp_path / "out", inputs[1], gen=tmp_path / "g",
                    compile_pdf=False)


def _dummy_figures(folder: Path, config_hash: str) -> Path:
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
    (folder / PROVENANCE_FILE).write_text(json.dumps({"config_hash": config_hash}))
    return folder


def test_missing_or_stale_figures_are_named(inputs, tmp_path):
    metrics, cfg, _ = inputs
    with pytest.raises(PaperError, match=r"figure\(s\) missing: problem_instances\.pdf"):
        paper.build(metrics, tmp_path, tmp_path / "out", cfg, gen=tmp_path / "g")
    figs = _dummy_figures(tmp_path / "figs", "0" * 64)
    with pytest.raises(PaperError, match=r"provenance.json: figures drawn from metrics of "
                                         r"another configuration"):
        paper.build(metrics, figs, tmp_path / "out", cfg, gen=tmp_path / "g")


def test_missing_tex_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(paper.shutil, "which", lambda name: None)
    with pytest.raises(PaperError, match=r"needs TeX: run `make tex`"):
        paper.latex(tmp_path / "out", tmp_path)


@pytest.mark.skipif(not TEX, reason="TeX (latexmk, pdflatex) not installed: `make tex`")
def test_pdf_builds_and_is_reproducible(inputs, tmp_path, monkeypatch):
    metrics, cfg, _ = inputs
    figs = _dummy_figures(tmp_path / "figs", metrics_hash(cfg))
    monkeypatch.chdir(tmp_path)  # the second build gets a relative --out, as in dvc.yaml
    pdfs = []
    for k in range(2):
        out = tmp_path / "out0" if k == 0 else Path("out1")
        pdf = paper.build(metrics, figs, out, cfg, gen=tmp_path / f"g{k}")[-1]
        assert pdf.name == "report.pdf" and pdf.read_bytes().startswith(b"%PDF")
        assert not [p for p in pdf.parent.iterdir() if p.name.startswith(".tmp-")]
        pdfs.append(pdf.read_bytes())
    assert not (tmp_path / "out0" / "report.log").exists()
    assert pdfs[0] == pdfs[1]


@pytest.mark.skipif(not TEX, reason="TeX (latexmk, pdflatex) not installed: `make tex`")
def test_pdf_is_identical_wherever_the_checkout_lives(inputs, tmp_path, monkeypatch):
    """Two checkouts in different folders (figures, generated TeX and output each inside
    their own) give byte-identical PDFs that name no folder of either."""
    metrics, cfg, _ = inputs
    pdfs = []
    for where in ("checkout-a", "elsewhere/checkout-bb"):
        root = tmp_path / where
        figs = _dummy_figures(root / "figs", metrics_hash(cfg))
        monkeypatch.chdir(tmp_path)
        pdf = paper.build(metrics, figs, root / "out", cfg, gen=root / "generated")[-1]
        data = pdf.read_bytes()
        for text in (str(tmp_path), str(root), "/tmp/", "PTEX.FileName"):
            assert text.encode() not in data, f"{text!r} is in the PDF"
        pdfs.append(data)
    assert pdfs[0] == pdfs[1]
    assert (tmp_path / "checkout-a/generated/paths.tex").read_text() == \
        "\\graphicspath{{figures/}}\n"


@pytest.mark.skipif(not TEX, reason="TeX (latexmk, pdflatex) not installed: `make tex`")
def test_undefined_reference_fails_and_keeps_the_log(tmp_path):
    src, gen = tmp_path / "src", tmp_path / "gen"
    src.mkdir()
    gen.mkdir()
    (src / "report.tex").write_text("\\documentclass{article}\\begin{document}"
                                    "See Fig.~\\ref{fig:missing}.\\end{document}\n")
    with pytest.raises(PaperError, match="undefined references"):
        paper.latex(tmp_path / "out", gen, paper=src)
    assert (tmp_path / "out" / "report.log").exists()
    assert not (tmp_path / "out" / "report.pdf").exists()


def test_tasks_outside_the_alpha_tolerance_are_stated(inputs):
    """A checkpoint whose selected alpha is outside metrics.alpha_tolerance for some task (the
    rule's fallback) says so in the paper's verdicts and under the README table."""
    metrics, _, params = inputs
    summary = json.loads((metrics / "summary.json").read_text())
    ck, entry = next(iter(summary["checkpoints"].items()))
    fam, f = next((k, v) for k, v in entry["families"].items() if v.get("runs"))
    entry["alpha_outside_tolerance"] = [f["tasks"][0]]
    ms = {c: 10.0 * (i + 1) for i, c in enumerate(summary["checkpoints"])}
    tex = numbers.results_tex(summary, ms, masks=inputs[1].masks)
    assert tex.count("these modules are not faithful") == 1
    assert numbers.tex_escape(f["tasks"][0]) + r" lose more than \AlphaTolerance{}" in tex
    md = numbers.results_markdown(summary, ms, masks=inputs[1].masks)
    assert "Selected alpha more than the tolerance below" in md and f["tasks"][0] in md
    entry["alpha_outside_tolerance"] = []
    assert "not faithful" not in numbers.results_tex(summary, ms, masks=inputs[1].masks)


def test_restarts_are_stated(inputs):
    """A network re-initialised at chance (train.restart_after) is named under the README's
    table head and in the paper's Networks paragraph; none: the paper says none was."""
    metrics, base, _ = inputs
    summary = json.loads((metrics / "summary.json").read_text())
    ms = {c: 10.0 * (i + 1) for i, c in enumerate(summary["checkpoints"])}

    def compose_cfg(**train):
        return dataclasses.replace(base, train=dataclasses.replace(base.train, **train))

    assert summary["restarts"] == {"1": 1}  # tests/synthetic.py: network 1 restarted once
    assert "3 networks (re-initialised at chance: network 1 1x);" in numbers.results_markdown(summary, ms, masks=inputs[1].masks)
    cfg = compose_cfg(restart_after=800, max_restarts=2)
    assert numbers.restarts_text(summary, cfg) == (
        "A network still at chance after 800 steps is re-initialised (at most 2 times; "
        "train.restart_after): re-initialised network 1 1 time (the kept run is the last "
        "attempt).")
    none = {**summary, "restarts": {}}
    assert numbers.restarts_text(none, cfg).endswith(": none was.")
    assert "re-initialised" not in numbers.results_markdown(none, ms, masks=inputs[1].masks).split("\n")[0]
    assert "never re-initialised" in numbers.restarts_text(none, compose_cfg(restart_after=0))
    assert "Restarts" in numbers.macros(summary, cfg, "test")


def test_positive_control_conclusion_follows_the_verdicts(inputs):
    """The paper and README say what the control family implies for the method, from the
    verdicts at the last checkpoint with control masks ("if it finds neither, the
    method has not been shown able to see modules, and the paper says so")."""
    metrics, _, _ = inputs
    summary = json.loads((metrics / "summary.json").read_text())
    ms = {c: 10.0 * (i + 1) for i, c in enumerate(summary["checkpoints"])}
    # synthetic data: control distinct and specific, original neither
    text = numbers.control_conclusion(summary, ms)
    assert "separates the control's modules" in text and "a finding about the shapes" in text
    assert r"\paragraph{Positive control.}" in numbers.results_tex(summary, ms, masks=inputs[1].masks)
    assert "Positive control: " + text in numbers.results_markdown(summary, ms, masks=inputs[1].masks)
    last = summary["checkpoints"][list(summary["checkpoints"])[-1]]["families"]
    ctrl, orig = last["control"], last["original"]
    ctrl["iomin"]["verdict"] = "not shown distinct (cross-task below same-task, intervals overlap)"
    ctrl["selective_drop"]["verdict"] = "not specific (own-set drop no larger than other-set drop)"
    assert "has not been shown able to see modules" in numbers.control_conclusion(summary, ms)
    orig["iomin"]["verdict"] = "distinct (cross-task overlap below the same-task overlap)"
    assert "does not behave as designed" in numbers.control_conclusion(summary, ms)
    ctrl["iomin"]["verdict"] = ctrl["selective_drop"]["verdict"] = "not testable (missing values)"
    assert "not testable" in numbers.control_conclusion(summary, ms)
    for e in summary["checkpoints"].values():
        e["families"].pop("control", None)
    assert numbers.control_conclusion(summary, ms) is None


def test_validation_paragraph_escapes_the_profile_name():
    """An unvalidated profile's sentence is valid LaTeX for every profile name (paper_smoke)."""
    from core.config import compose, from_dict
    from paper.build import validation_tex
    cfg = from_dict(compose("paper_smoke"))
    tex = validation_tex(None, cfg)
    assert "paper\\_smoke" in tex and "not been validated" in tex


def test_title_and_abstract_claim_only_what_the_validation_shows():
    from paper.build import claims
    assert "not validated" in claims(None)["TitleClaim"]
    checks = {k: {"passes": True} for k in ("planted", "complement", "control", "faithful",
                                             "continuation")}
    every = claims({"passes": True, "checks": checks})
    assert every["TitleClaim"] == "several networks, validated converged masks and the right nulls"
    checks["continuation"]["passes"] = False
    moving = claims({"passes": False, "checks": checks})
    assert "converged" not in moving["TitleClaim"] and "validated" not in moving["TitleClaim"]
    assert "(continuation)" in moving["ValidityClaim"]


def test_a_validation_holds_for_other_plans_not_other_methods(tmp_path):
    """Which masks a study trains (families, shapes, sweep) does not change the method that
    was validated; a method key (alpha, steps) does."""
    import dataclasses as dc

    from core.config import load
    from paper.build import read_validation
    cfg = load(ROOT / "params.yaml", "default")
    src = json.loads((ROOT / "results" / "validation" / "default.json").read_text())
    (tmp_path / "default.json").write_text(json.dumps(src))
    assert read_validation(cfg, tmp_path) is not None
    plan = dc.replace(cfg, masks=dc.replace(cfg.masks, families=["original", "shape_rule"],
                                            alpha_sweep=[1e-2], tasks_early=[]))
    assert read_validation(plan, tmp_path) is not None
    method = dc.replace(cfg, masks=dc.replace(cfg.masks, alpha=cfg.masks.alpha * 2))
    assert read_validation(method, tmp_path) is None


def test_which_checkpoints_each_family_and_shape_is_masked_at(inputs):
    summary = json.loads((inputs[0] / "summary.json").read_text())
    assert numbers._family_when(summary, []) == "at every checkpoint"
    assert numbers._family_when(summary, [], ["circle"], ["circle", "square"]) == (
        "at every checkpoint (before the last checkpoint the shapes circle only)")
    assert numbers._family_when(summary, [], ["circle", "square"], ["square", "circle"]) == (
        "at every checkpoint")
