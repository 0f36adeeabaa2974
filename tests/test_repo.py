"""Repository hygiene: dependency lists in sync, notebooks without outputs, layout present."""

import json
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {_name(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_name(r) for r in pip if not r.startswith("-e")}
    assert have == wanted
    assert "-e ." in pip
    assert "python=3.11" in env["dependencies"]


def test_torch_pinned_and_no_torchvision():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps
    assert not any(_name(d) == "torchvision" for d in deps)


def test_notebooks_in_git_have_no_outputs():
    files = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        nb = json.loads((ROOT / f).read_text())
        for cell in nb["cells"]:
            assert not cell.get("outputs"), f"{f}: a cell has outputs; run nbstripout"
            assert cell.get("execution_count") is None, f"{f}: execution counts; run nbstripout"


def test_layout():
    for p in ["core", "figures", "analysis", "data", "paper", "tests", "benchmarks",
              "environment.yml", "dvc.yaml", "params.yaml", "README.md", "Makefile",
              "pyproject.toml", "LICENSE", "CITATION.cff", ".ci/run"]:
        assert (ROOT / p).exists(), p


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    lines = [ln.split("#")[0].strip() for ln in first_block.splitlines()]
    lines = [ln for ln in lines if ln]
    assert lines == ["make repro", "make test"], lines


# The project speaks of itself: no numbered work periods, no issue numbers, no folders outside
# the repository. This file, which holds the examples, is the one file not scanned.
FOREIGN = re.compile("|".join([
    r"\bsessions?[ -]#?\d",                 # numbered work periods
    r"\bissues?[ -]#?\d",                   # issue numbers
    r"/w[o]rk/", r"sh[a]red/reference", r"\.\./sh[a]red",  # folders outside the repository
    r"/coord\b", r"\bcoordination\b", r"COORD\.md", r"NOTES-\w+\.md",
]), re.I)
BINARY = {".nc", ".npz", ".pt", ".png", ".pdf", ".jpg", ".gz", ".zip", ".pkl"}


def tracked_text_files() -> list[Path]:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    out = []
    for f in filter(None, files):
        p = ROOT / f
        if p.suffix in BINARY or not p.is_file() or p == Path(__file__).resolve():
            continue
        try:
            p.read_text()
        except UnicodeDecodeError:
            continue
        out.append(p)
    return out


def foreign_references(text: str) -> list[str]:
    return [m.group(0) for m in FOREIGN.finditer(text)]


def test_foreign_reference_pattern_catches_each_kind():
    # the examples are assembled, so that this file does not itself cite what it forbids
    w, sh, ses = "/wo" + "rk/", "sha" + "red/", "sess" + "ion"
    for bad in [f"MEASURED ({ses} 11)", f"{ses}s 10-11", f"see {ses}-8", "issue 15",
                "issues 17/18", "issue #20", f"{w}main/x", f"{sh}reference/a.md",
                f"../{sh}x", f"{w}coord/NOTES.md", "NOTES-masking.md"]:
        assert foreign_references(bad), bad
    for ok in ["coords={'mask': 1}", "coordinate", "an issue of numerics", "10 sessions",
               "the session's machine"]:
        assert not foreign_references(ok), ok


def test_no_text_cites_work_periods_issues_or_outside_folders():
    hits = [f"{p.relative_to(ROOT)}:{i}: {ln.strip()[:100]}"
            for p in tracked_text_files()
            for i, ln in enumerate(p.read_text().splitlines(), 1) if foreign_references(ln)]
    assert not hits, ("text citing work periods, issue numbers or folders outside the "
                      "repository (cite files in the repository or dates; measurements go to "
                      "docs/decisions.md):\n" + "\n".join(hits))
