"""Run one analysis notebook with papermill, check its parameters, render it to HTML.

    python -m core.notebook analysis/train_masks.ipynb --report data/reports/x.html \\
        -p task circle -p alpha 1e-5 ...      (-p: papermill's own type inference;
                                              -r NAME VALUE: a raw string; -y: YAML)

The pipeline runs every notebook stage through this (one kernel per stage): the executed
notebook is the stage's *report* (its bytes change every run), so it goes to ``--report`` as
HTML (nbconvert's exporter, images embedded) and is never a dependency of a later stage. A
failing cell stops with one message naming the notebook and the error; the executed notebook
(with the traceback) is still rendered so the failure can be read. Every report written also
refreshes ``index.html`` in the reports folder (the nearest parent named ``reports``): one page
linking every report with its time and size.

Parameters. A notebook declares them in its cell tagged ``parameters``, one per line as
``name: type = default  # what it is`` (``papermill --help-notebook`` shows them; types: str,
int, float, bool, list, dict). :func:`check` compares given parameters with that declaration,
read by papermill's own :func:`papermill.inspect_notebook`: an unknown name or a value of
another type is one :class:`ParameterError` naming the parameter, before any kernel starts.
Papermill itself only warns about unknown names, so each notebook also checks inside, right
after its parameters (:class:`Parameters`): a plain ``papermill`` run with a wrong name or type
stops there with the same message.

The kernel runs without its own log lines and without capturing its file descriptors
(:data:`KERNEL_ARGS`), and without the debugger's frozen-modules warning
(``PYDEVD_DISABLE_FILE_VALIDATION``): the pipeline log shows the notebook's own output once,
and progress bars of the work a notebook starts (``core.progress``: the process's stderr) go
to the log, not into the report.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import papermill as pm
import yaml
from papermill.cli import _resolve_type  # papermill's own `-p` type inference

from core.io import atomic_write_text


class ParameterError(ValueError):
    """A notebook parameter that the notebook does not declare, or of another type."""


# parameter types a notebook may declare (what papermill.inspect_notebook infers)
TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float, int),
                                      "bool": (bool,), "list": (list,), "dict": (dict,)}


def declared(notebook: str | Path) -> dict[str, dict[str, str]]:
    """The notebook's parameters: name -> papermill's ``{inferred_type_name, default, help}``."""
    if not Path(notebook).is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found")
    return pm.inspect_notebook(str(notebook))


def check(notebook: str | Path, given: Mapping[str, Any]) -> None:
    """Refuse a parameter ``notebook`` does not declare or a value of another type."""
    spec = declared(notebook)
    for name, value in given.items():
        if name not in spec:
            raise ParameterError(
                f"{notebook}: unknown parameter {name!r} (the notebook's parameters: "
                f"{', '.join(spec) or 'none'}; papermill --help-notebook {notebook})")
        kind = spec[name]["inferred_type_name"]
        if kind not in TYPES:
            raise ParameterError(f"{notebook}: parameter {name!r} is declared with type "
                                 f"{kind!r} (expected one of {', '.join(TYPES)})")
        ok = isinstance(value, TYPES[kind]) and not (isinstance(value, bool) and kind != "bool")
        if not ok:
            hint = (f"; papermill's -p reads {value!r} as a {type(value).__name__}, give a "
                    f"string with -r {name} VALUE" if kind == "str" else "")
            raise ParameterError(
                f"{notebook}: parameter {name!r} ({spec[name]['help']}): expected {kind}, got "
                f"{type(value).__name__} {value!r}{hint}")


class Parameters:
    """A notebook's own check of the parameters it was run with (for plain papermill runs).

    In the cell before the parameters cell: ``_parameters = Parameters("x.ipynb", globals())``
    (the names defined so far are not parameters); in the cell after it (after papermill's
    injected parameters): ``_parameters.check()``. ``notebook``: the notebook's file, relative
    to the repository's ``analysis/`` folder unless absolute."""

    def __init__(self, notebook: str | Path, namespace: MutableMapping[str, Any]):
        self.notebook = Path(__file__).resolve().parents[1] / "analysis" / notebook
        self.namespace = namespace
        self.before = set(namespace)

    def check(self) -> None:
        given = {k: v for k, v in self.namespace.items()
                 if k not in self.before and not k.startswith("_")}
        try:
            check(self.notebook, given)
        except ParameterError as err:  # the traceback would only point here
            raise ParameterError(str(err).replace(str(self.notebook), self.notebook.name)
                                 ) from None


def to_html(notebook: Path, html: Path) -> None:
    import nbconvert  # here: a kernel that imports Parameters does not need it

    body, _ = nbconvert.HTMLExporter(embed_images=True).from_filename(str(notebook))
    atomic_write_text(html, body)


# The kernel's own log (not the notebook's output): without this every kernel start prints
# "[IPKernelApp] WARNING | Kernel is running over TCP without encryption" and its shutdown a
# "KeyboardInterrupt caught in kernel" error into the pipeline log.
# Without capture_fd_output the kernel no longer copies what is written to its file descriptors
# (subprocesses, sys.__stderr__) into the notebook *and* the log (twice in the log).
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL", "--IPKernelApp.capture_fd_output=False"]
# The kernel is stopped at once when the notebook has run (every output is written by then):
# a graceful shutdown waited ~1 s per stage for nothing.
SHUTDOWN = "immediate"


def reports_root(report: Path) -> Path:
    """The folder whose ``index.html`` lists ``report``: its nearest parent named ``reports``."""
    for parent in report.resolve().parents:
        if parent.name == "reports":
            return parent
    return report.resolve().parent


def write_index(root: Path) -> Path:
    """``root/index.html``: a link to every other HTML report under ``root``, newest first."""
    rows = []
    for path in sorted(root.rglob("*.html"), key=lambda q: (-q.stat().st_mtime, str(q))):
        if path == root / "index.html":
            continue
        st = path.stat()
        rel = path.relative_to(root).as_posix()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(st.st_mtime))
        rows.append(f'<tr><td><a href="{html.escape(rel)}">{html.escape(rel)}</a></td>'
                    f"<td>{when}</td><td>{st.st_size / 1e6:.1f} MB</td></tr>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Reports</title></head>"
            "<body><h1>Reports</h1><p>Executed notebooks of the pipeline (newest first).</p>"
            "<table><tr><th>report</th><th>written</th><th>size</th></tr>"
            + "".join(rows) + "</table></body></html>\n")
    return atomic_write_text(root / "index.html", page)


def run(notebook: str | Path, report: str | Path | None, parameters: dict[str, object],
        cwd: str | Path = ".") -> None:
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # inherited by the kernel
    notebook = Path(notebook)
    check(notebook, parameters)
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / notebook.name
        try:
            pm.execute_notebook(str(notebook), str(executed), parameters=parameters,
                                kernel_name="python3", cwd=str(cwd), progress_bar=False,
                                log_output=True, stdout_file=sys.stdout, stderr_file=sys.stderr,
                                extra_arguments=KERNEL_ARGS, shutdown_kernel=SHUTDOWN)
        except pm.PapermillExecutionError as err:
            if report and executed.exists():
                to_html(executed, Path(report))
                write_index(reports_root(Path(report)))
            raise SystemExit(f"error: {notebook} failed in cell {err.exec_count}: "
                             f"{err.ename}: {err.evalue}") from None
        if report:
            to_html(executed, Path(report))
            write_index(reports_root(Path(report)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.notebook", description=__doc__.split("\n")[0])
    ap.add_argument("notebook")
    ap.add_argument("--report", help="HTML report of the executed notebook")
    ap.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter (typed by papermill's -p inference)")
    ap.add_argument("-r", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter kept as a raw string")
    ap.add_argument("-y", action="append", default=[], metavar="YAML",
                    help="parameters as a YAML mapping (lists, dicts)")
    args = ap.parse_args(argv)
    params: dict[str, Any] = {}
    for text in args.y:
        params.update(yaml.safe_load(text) or {})
    params |= {k: _resolve_type(v) for k, v in args.p} | {k: v for k, v in args.r}
    try:
        run(args.notebook, args.report, params)
    except (ParameterError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
