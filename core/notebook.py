"""Run one analysis notebook with papermill and render the executed copy to HTML.

    python -m core.notebook analysis/train_masks.ipynb --report data/reports/x.html \\
        -p task circle -p alpha 1e-5 ...

The pipeline runs every notebook stage through this: the executed notebook is a *report*
(its bytes change every run), so it goes to ``--report`` as HTML and is never a dependency of
a later stage. A failing cell stops with one message naming the notebook and the error; the
executed notebook (with the traceback) is still rendered so the failure can be read. Every
report written also refreshes ``index.html`` in the reports folder (the nearest parent named
``reports``): one page linking every report with its time and size.

The kernel runs without its own log lines (:data:`KERNEL_ARGS`) and without the debugger's
frozen-modules warning (``PYDEVD_DISABLE_FILE_VALIDATION``), so that the pipeline log shows the
notebook's own output only.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import tempfile
import time
from pathlib import Path

import nbconvert
import nbformat
import papermill as pm

from core.io import atomic_write_text


def _value(text: str) -> object:
    """papermill's ``-p`` inference: int, float, bool/None, else string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def to_html(notebook: Path, html: Path) -> None:
    exporter = nbconvert.HTMLExporter()
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    atomic_write_text(html, body)


# The kernel's own log (not the notebook's output): without this every kernel start prints
# "[IPKernelApp] WARNING | Kernel is running over TCP without encryption" and its shutdown a
# "KeyboardInterrupt caught in kernel" error into the pipeline log.
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


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
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook}: notebook not found")
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / notebook.name
        try:
            pm.execute_notebook(str(notebook), str(executed), parameters=parameters,
                                kernel_name="python3", cwd=str(cwd), progress_bar=False,
                                log_output=True, stdout_file=sys.stdout, stderr_file=sys.stderr,
                                extra_arguments=KERNEL_ARGS)
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
                    help="a parameter (type inferred like papermill's -p)")
    ap.add_argument("-r", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter kept as a raw string")
    args = ap.parse_args(argv)
    params = {k: _value(v) for k, v in args.p} | {k: v for k, v in args.r}
    run(args.notebook, args.report, params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
