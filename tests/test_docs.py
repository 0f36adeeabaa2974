"""The docs hold together: every link and anchor resolves, every cited section exists, and the
picture of the layers in docs/architecture.md is the code's real import graph."""

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# `docs/x.md#anchor` written in code, conf or docs outside a Markdown link
MD_ANCHOR = re.compile(r"(?<![\w/.(-])((?:[\w.-]+/)*[\w.-]+\.md)#([\w-]+)")
# `docs/x.md, "Section"` or `README, "Section"`: a section cited by its title
SECTION = re.compile(r"((?:[\w.-]+/)*[\w.-]+\.md|README)`?,? (?:section )?\"([^\"]+)\"")


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return [ROOT / f for f in out if f and (ROOT / f).is_file()]


def heading_text(raw: str) -> str:
    """A heading's visible text: links to their text, code spans and emphasis unwrapped."""
    return re.sub(r"[`*]", "", re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)).strip()


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(path: Path) -> list[str]:
    return [heading_text(h) for h in HEADING.findall(FENCE.sub("", path.read_text()))]


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = defaultdict(int)
    out = set()
    for h in headings(path):
        s = slug(h)
        out.add(s if not seen[s] else f"{s}-{seen[s]}")
        seen[s] += 1
    return out


def link_problems(md: Path) -> list[str]:
    problems = []
    for target in LINK.findall(FENCE.sub("", md.read_text())):
        if re.match(r"[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        where = f"{md.relative_to(ROOT)}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: {path} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    return problems


def test_slugs_follow_github():
    assert slug("Can the method find modules? The composite control") == \
        "can-the-method-find-modules-the-composite-control"
    assert slug("`make repro`: the pipeline (DVC)") == "make-repro-the-pipeline-dvc"
    assert heading_text("[decisions](docs/decisions.md) for `conf`") == "decisions for conf"


def test_link_check_catches_missing_files_and_anchors(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "b.md").write_text("# Title\n\n## A section\n")
    a = tmp_path / "a.md"
    a.write_text("[ok](b.md#a-section) [ok](#here) [web](https://x.org/y#z)\n# Here\n"
                 "```\n[not a link](nowhere.md)\n```\n[bad](c.md) [bad](b.md#nope)\n")
    problems = link_problems(a)
    assert len(problems) == 2, problems
    assert "c.md does not exist" in problems[0] and "no heading #nope" in problems[1]


def test_every_markdown_link_and_anchor_resolves():
    problems = [p for md in tracked("*.md") for p in link_problems(md)]
    assert not problems, "\n".join(problems)


def test_every_cited_section_and_anchor_exists():
    """Outside Markdown links too: `docs/x.md#anchor` and `docs/x.md, "Section"` in code,
    conf, docs and pyproject name things that exist."""
    problems = []
    for f in tracked():
        if f.suffix in {".nc", ".npz", ".pt", ".png", ".pdf", ".ipynb"} or f == Path(__file__):
            continue  # this file holds examples of both forms
        try:
            text = f.read_text()
        except UnicodeDecodeError:
            continue
        where = f.relative_to(ROOT)
        for path, anchor in MD_ANCHOR.findall(text):
            dest = next((d for d in (ROOT / path, f.parent / path) if d.is_file()), None)
            if dest is None:
                problems.append(f"{where}: {path} does not exist")
            elif anchor not in anchors(dest):
                problems.append(f"{where}: no heading #{anchor} in {path}")
        for path, title in SECTION.findall(text):
            dest = ROOT / ("README.md" if path == "README" else path)
            if not dest.is_file():
                problems.append(f'{where}: {path} does not exist (cited with "{title}")')
            elif title not in headings(dest):
                problems.append(f'{where}: no section "{title}" in {path}')
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------- layers

PACKAGES = ("core", "figures", "paper", "benchmarks")


def unit(module: str) -> str:
    """The diagram's name of a module: ``core.<x>`` inside core, else its top-level package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "core" and len(parts) > 1 else parts[0]


def import_graph() -> dict[str, set[str]]:
    """Unit -> the units it imports (anywhere in its files, function bodies included)."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    names = {}
    for p in files:
        mod = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        names[p] = mod.removesuffix(".__init__")
    units = {unit(m) for m in names.values()}
    graph: dict[str, set[str]] = {u: set() for u in units}
    for p, mod in names.items():
        pkg = mod if p.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t.split(".")[0] in PACKAGES and unit(t) in units and unit(t) != unit(mod):
                    graph[unit(mod)].add(unit(t))
    return graph


def diagram() -> list[list[str]]:
    text = (ROOT / "docs/architecture.md").read_text()
    block = text.split("<!-- layers -->", 1)[1].split("<!-- /layers -->", 1)[0]
    body = block.strip().strip("`").strip()
    return [line.split() for line in body.splitlines() if line.strip()]


def test_layers_picture_is_the_import_graph():
    floors = diagram()
    floor = {u: len(floors) - i for i, line in enumerate(floors) for u in line}
    graph = import_graph()
    missing = sorted(set(graph) - set(floor))
    assert not missing, f"docs/architecture.md, Layers: add {missing} to the picture"
    gone = sorted(set(floor) - set(graph))
    assert not gone, f"docs/architecture.md, Layers: {gone} no longer exist"
    upward = [f"{u} (line {len(floors) - floor[u] + 1}) imports {v} (line "
              f"{len(floors) - floor[v] + 1})" for u, vs in sorted(graph.items())
              for v in sorted(vs) if floor[v] >= floor[u]]
    assert not upward, ("docs/architecture.md, Layers: each line imports only from the lines "
                        "below it:\n" + "\n".join(upward))


@pytest.mark.parametrize("line", [0, -1])
def test_layers_picture_check_fails_on_a_moved_module(line, monkeypatch):
    floors = diagram()
    moved = [list(f) for f in floors]
    name = "core.io" if line == 0 else "benchmarks"  # bottom to top, or top to bottom
    for f in moved:
        if name in f:
            f.remove(name)
    moved[line].append(name)
    monkeypatch.setattr(sys.modules[__name__], "diagram", lambda: [f for f in moved if f])
    with pytest.raises(AssertionError, match="imports only from the lines below"):
        test_layers_picture_is_the_import_graph()
