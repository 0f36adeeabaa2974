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
