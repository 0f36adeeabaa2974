"""dvc.yaml: complete stage deps (each command's import closure), params that select exactly the
affected stages, declared metrics and plots. Fast: real DVC on a copy of the repository with
placeholder outputs, no stage is run (the sweeps that run stages are in test_pipeline.py)."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from core import config as C

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
LOCAL = ("core", "figures", "paper", "benchmarks")


# --------------------------------------------------------------------------- import closure

def module_file(name: str) -> Path | None:
    p = ROOT.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return None


def imported_modules(source: str, package: str) -> set[str]:
    """Local modules named by import statements anywhere in ``source`` (function bodies too)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in LOCAL and module_file(m)}


def notebook_source(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code"
                     and not c.source.lstrip().startswith(("%", "!")))


def closure(cmd: str) -> set[Path]:
    """Files a stage command runs: its ``python -m`` module, every local module imported from
    there (with the packages' ``__init__``), every module they run in a child process
    (``"-m", "core.x"``) and every analysis notebook they name."""
    todo = [m for m in re.findall(r"python -m ([\w.]+)", cmd)]
    todo += [f"{m}.__main__" for m in todo if (ROOT.joinpath(*m.split(".")) / "__main__.py").is_file()]
    files: set[Path] = set()
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        path = ROOT.joinpath(*parts).with_suffix(".py")
        path = path if path.is_file() else module_file(name)
        if path is None:
            continue
        files.add(path)
        src = path.read_text()
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        todo += imported_modules(src, package)
        # modules it runs in a child process (``[sys.executable, "-m", "core.train", ...]``)
        todo += [m for m in re.findall(r"[\"']-m[\"'],\s*[\"']([\w.]+)[\"']", src)
                 if m.split(".")[0] in LOCAL]
        for nb in re.findall(r"[\"'](\w+\.ipynb)[\"']", src):
            nb_path = ROOT / "analysis" / nb
            if nb_path.is_file() and nb_path not in files:
                files.add(nb_path)
                todo += imported_modules(notebook_source(nb_path), "")
    for nb in re.findall(r"(analysis/\w+\.ipynb)", cmd):
        files.add(ROOT / nb)
        todo_nb = imported_modules(notebook_source(ROOT / nb), "")
        files |= closure(" ".join(f"python -m {m}" for m in todo_nb))
    return files


def command(stage: str) -> str:
    """The stage's command(s) as one line."""
    cmd = STAGES[stage]["cmd"]
    return " ; ".join(" ".join(c.split()) for c in ([cmd] if isinstance(cmd, str) else cmd))


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_import_closure(stage):
    spec = STAGES[stage]
    deps = [d for d in spec.get("deps", []) if isinstance(d, str)]
    files = closure(command(stage))
    assert files, f"{stage}: no python module found in its command"
    missing = sorted(p.relative_to(ROOT).as_posix() for p in files if not covered(p, deps))
    assert not missing, (f"dvc.yaml stage {stage!r} runs code it does not list in deps "
                         f"(a change to it would leave the stage stale): {missing}")


def test_closure_follows_imports_inside_functions_and_notebooks():
    files = {p.relative_to(ROOT).as_posix() for p in closure(command("masks"))}
    assert {"core/sweep/sweep.py", "core/formats/masks.py", "core/config/sections.py",
            "core/__init__.py"} <= files
    assert "analysis/train_masks.ipynb" in files


def test_deps_exist_and_reports_are_never_deps():
    for name, spec in STAGES.items():
        for dep in spec.get("deps", []):
            assert "reports" not in dep, f"{name}: an HTML report is a dependency: {dep}"
            if not dep.startswith("data/"):
                assert (ROOT / dep.replace("${item.net}", "0")).exists(), f"{name}: {dep} missing"


# --------------------------------------------------------------------------- params

def stage_params(stage: str) -> set[str]:
    out = set()
    for p in STAGES[stage].get("params", []):
        out |= set(p) if isinstance(p, dict) else {p}
    return out


def test_stage_params_follow_the_keys_roles():
    # train: every train key but those that only spread the work (train.jobs); masks: the
    # whole masks section; control: the mask method; metrics: the plan of the study
    train = {f"train.{fl.name}" for fl in dataclasses.fields(C.TrainConfig)}
    spread = {f"train.{k}" for k in C.keys(C.TrainConfig, "spread")}
    assert spread == {"train.jobs"}
    params = stage_params("train")
    assert train - spread <= params, f"train misses params {sorted(train - spread - params)}"
    assert not spread & params and "train" not in params
    assert {"model", "device", "precision"} <= params
    assert "masks" in stage_params("masks")
    method = {f"masks.{k}" for k in C.keys(C.MaskConfig, "method", "run")}
    assert method <= stage_params("control"), sorted(method - stage_params("control"))


def test_matrix_stages_expand_over_the_networks():
    assert STAGES["masks"]["matrix"] == {"net": "${train.networks}"}
    assert "${item.net}" in command("masks")
    masks_out = STAGES["masks"]["outs"][0]
    assert masks_out == {"data/masks/net${item.net}": {"persist": True}}
    # every network in one stage (train.jobs at a time), resume state outside its output
    assert "-p state data/state/train" in command("train")
    assert STAGES["train"]["outs"] == ["data/train", "data/reports/train.html"]  # cached: publish


NOTEBOOK_STAGES = {"train": "analysis/train_scl.ipynb", "masks": "analysis/train_masks.ipynb",
                   "metrics": "analysis/module_metrics.ipynb"}


@pytest.mark.parametrize("stage", sorted(NOTEBOOK_STAGES))
def test_notebook_stages_run_their_notebook_with_declared_parameters(stage):
    # the stage is the notebook (one kernel), its report a (cached) output; every parameter
    # the command passes is one the notebook declares, of the declared type (papermill's -p)
    from papermill.cli import _resolve_type

    from core import notebook

    words = command(stage).split()
    assert words[:4] == ["python", "-m", "core.notebook", NOTEBOOK_STAGES[stage]]
    report = words[words.index("--report") + 1]
    assert report in STAGES[stage]["outs"]
    given = {}
    for i, w in enumerate(words):
        if w in ("-p", "-r"):
            name, value = words[i + 1], words[i + 2].replace("${item.net}", "0")
            given[name] = _resolve_type(value) if w == "-p" else value
    assert given
    notebook.check(ROOT / NOTEBOOK_STAGES[stage], given)


def test_metrics_and_plots_declared():
    # the headline numbers are the metric; curves are images (readable offline)
    assert DVC_YAML["metrics"] == ["data/headline.json"]
    assert "data/headline.json" in STAGES["plots"]["outs"]
    for path in DVC_YAML["plots"]:
        assert isinstance(path, str) and path.startswith("data/plots/") and path.endswith(".png")


# --------------------------------------------------------------------------- real DVC

def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def locked_repo(tmp_path_factory):
    """A copy of the tracked files, ci profile, every output a placeholder, dvc.lock committed."""
    repo = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    extra = ["dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore"]
    for f in {*files, *extra} - {""}:
        src = ROOT / f
        if src.is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, repo / f)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    C.write_params("ci", out=repo / "params.yaml", conf=repo / "conf")
    nets = C.load(repo / "params.yaml").train.networks
    for spec in STAGES.values():
        for out in spec.get("outs", []):
            out = next(iter(out)) if isinstance(out, dict) else out
            for k in nets if "${item.net}" in out else [None]:
                path = repo / out.replace("${item.net}", str(k))
                path = path if path.suffix else path / "x"  # a folder output: one file in it
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("placeholder\n")
    for spec in STAGES.values():  # data deps inside another stage's folder output
        for dep in spec.get("deps", []):
            for k in nets if "${item.net}" in dep else [None]:
                path = repo / dep.replace("${item.net}", str(k))
                if dep.startswith("data/") and not path.exists():
                    (path / "x").parent.mkdir(parents=True, exist_ok=True)
                    (path / "x").write_text("placeholder\n")
    from dvc.repo import Repo

    with contextlib.chdir(repo), Repo(str(repo)) as r:
        r.commit(None, force=True)
    return repo


def changed_stages(repo: Path, *overrides: str, profile: str = "ci") -> set[str]:
    before = (repo / "params.yaml").read_text()
    try:
        from dvc.repo import Repo

        C.write_params(profile, list(overrides), out=repo / "params.yaml", conf=repo / "conf")
        with contextlib.chdir(repo), Repo(str(repo)) as r:  # in-process: ~10x faster than `dvc status` processes
            return set(r.status())
    finally:
        (repo / "params.yaml").write_text(before)


def test_clean_after_commit(locked_repo):
    assert changed_stages(locked_repo) == set()


@pytest.mark.parametrize("overrides,expected", [
    (["masks.alpha=3e-4"], {"masks@0", "masks@1", "control", "metrics", "plots", "paper"}),
    (["masks.seeds=[0,1,2]"], {"masks@0", "masks@1", "metrics", "paper"}),
    (["train.lr=1e-3"], {"train", "control_train", "paper"}),
    (["train.jobs=1"], {"paper"}),
    (["train.networks=[0,1,2]"], {"train", "masks@2", "metrics", "plots", "paper"}),
    (["train.networks=[1]"], {"train", "metrics", "plots", "paper"}),
    (["figures.dpi=300"], {"figures", "paper"}),
    (["train.eval_batch_size=64"], {"train", "control_train", "masks@0", "masks@1", "paper"}),
    (["seed=3"], {"data", "control_train", "paper"}),
    (["control.seeds=[0,1,2]"], {"control", "paper"}),  # the control's own keys: its stages
    (["control.n=80"], {"control_train", "paper"}),
])
def test_editing_params_changes_exactly_the_affected_stages(locked_repo, overrides, expected):
    assert changed_stages(locked_repo, *overrides) == expected


def test_profile_switch_changes_every_stage_it_touches(locked_repo):
    got = changed_stages(locked_repo, profile="default")
    assert {"data", "train", "masks@0", "masks@1", "metrics", "figures",
            "paper"} <= got


def test_litter_of_killed_writes_leaves_dvc_status_clean(locked_repo):
    # `.tmp-*` files in data/masks once made `dvc status` report changes
    litter = [locked_repo / "data/masks/net0/.tmp-circle-a3e-5-s0-x1.pt",
              locked_repo / "data/.tmp-raven-123/main/x.npz",
              locked_repo / "data/.old-raven-123/x.npz",
              locked_repo / "data/state/train/net0/last.pt",
              locked_repo / "data/masks/.net0.lock"]  # the writer lock of a sweep run by hand
    for p in litter:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    try:
        assert changed_stages(locked_repo) == set()
    finally:
        for p in litter:
            p.unlink()


# --------------------------------------------------------------------------- the deps, rewritten

def code_deps(stage: str) -> list[str]:
    """The stage's code deps: its import closure, a package folder where the stage runs all of
    it (``core/models``, ``core/raven``), else file by file."""
    files = {p.relative_to(ROOT).as_posix() for p in closure(command(stage))}
    out = set(files)
    for pkg in ("core/models", "core/raven", "core/formats"):
        inside = {p.relative_to(ROOT).as_posix() for p in (ROOT / pkg).rglob("*.py")}
        if inside <= files:
            out = (out - inside) | {pkg}
    return sorted(out)


def fix_deps(text: str) -> str:
    """``dvc.yaml`` with every stage's code deps (lines ``- core/...``, ``- analysis/...``,
    ``- figures/...``, ``- paper/...``) replaced by :func:`code_deps`, data deps and comments
    kept."""
    lines, out, stage, in_deps = text.splitlines(), [], None, False
    code = re.compile(r"^(\s+)- (core|analysis|figures|paper|benchmarks)(/\S*)?\s*$")
    for line in lines:
        m = re.match(r"^  (\w+):\s*$", line)
        if m and m.group(1) in STAGES:
            stage, in_deps = m.group(1), False
        if stage and re.match(r"^    deps:\s*$", line):
            in_deps, written = True, False
            out.append(line)
            continue
        if in_deps and re.match(r"^    \w", line):
            in_deps = False
        c = code.match(line) if in_deps else None
        if c:
            if not written:
                out += [f"{c.group(1)}- {d}" for d in code_deps(stage)]
                written = True
            continue
        out.append(line)
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python tests/test_dvc.py --fix: rewrite dvc.yaml's code deps
    if sys.argv[1:] != ["--fix"]:
        raise SystemExit("usage: python tests/test_dvc.py --fix")
    (ROOT / "dvc.yaml").write_text(fix_deps((ROOT / "dvc.yaml").read_text()))
