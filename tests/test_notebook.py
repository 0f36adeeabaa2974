"""core.notebook: papermill run + HTML report; failures name the notebook and the error."""

import nbformat
import pytest

from core import notebook


def make_nb(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\nout = 'unset'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_run_injects_parameters_and_writes_report(tmp_path):
    nb = make_nb(tmp_path / "a.ipynb", "open(out, 'w').write(str(x * 2))")
    report = tmp_path / "reports" / "a.html"
    notebook.run(nb, report, {"x": 21, "out": str(tmp_path / "res.txt")}, cwd=tmp_path)
    assert (tmp_path / "res.txt").read_text() == "42"
    assert report.exists() and "<html" in report.read_text()[:500].lower()


def test_failure_names_notebook_and_error(tmp_path):
    nb = make_nb(tmp_path / "bad.ipynb", "raise ValueError('milestone 90 not reached')")
    report = tmp_path / "bad.html"
    with pytest.raises(SystemExit) as err:
        notebook.run(nb, report, {}, cwd=tmp_path)
    msg = str(err.value)
    assert "bad.ipynb" in msg and "ValueError: milestone 90 not reached" in msg
    assert report.exists()  # the traceback stays readable


def test_missing_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ipynb: notebook not found"):
        notebook.run(tmp_path / "nope.ipynb", None, {})


def test_value_inference():
    assert notebook._value("3") == 3 and notebook._value("1e-5") == 1e-5
    assert notebook._value("None") is None and notebook._value("circle") == "circle"
