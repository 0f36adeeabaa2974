"""core.notebook: papermill run + HTML report; failures name the notebook and the error."""

from pathlib import Path

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


def test_pipeline_log_has_no_kernel_warnings(tmp_path, capfd):
    nb = make_nb(tmp_path / "a.ipynb", "print('step 10: loss 2.0')")
    notebook.run(nb, None, {}, cwd=tmp_path)
    err = capfd.readouterr()
    assert "step 10: loss 2.0" in err.out
    assert "IPKernelApp" not in err.out + err.err and "Debugger warning" not in err.out + err.err


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


def test_report_index_lists_every_report(tmp_path):
    nb = make_nb(tmp_path / "a.ipynb", "pass")
    reports = tmp_path / "data" / "reports"
    notebook.run(nb, reports / "masks" / "net0.html", {}, cwd=tmp_path)
    notebook.run(nb, reports / "train.html", {}, cwd=tmp_path)
    index = (reports / "index.html").read_text()
    assert 'href="masks/net0.html"' in index and 'href="train.html"' in index
    assert "index.html</a>" not in index


ANALYSIS = sorted((Path(__file__).resolve().parents[1] / "analysis").glob("*.ipynb"))


def parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path}: expected one cell tagged 'parameters'"
    return cells[0].source


@pytest.mark.parametrize("path", ANALYSIS, ids=lambda p: p.name)
def test_parameters_are_typed_commented_and_documented(path):
    # `papermill --help-notebook analysis/X.ipynb` must document every parameter
    import ast

    import papermill as pm

    names = [n.target.id for n in ast.parse(parameters_cell(path)).body
             if isinstance(n, ast.AnnAssign)]
    untyped = [n.targets[0].id for n in ast.parse(parameters_cell(path)).body
               if isinstance(n, ast.Assign)]
    assert not untyped, f"{path.name}: parameters without a type annotation: {untyped}"
    found = pm.inspect_notebook(str(path))
    for name in names:
        assert name in found, f"{path.name}: papermill cannot parse parameter {name!r}"
        assert found[name]["help"].strip(), f"{path.name}: parameter {name!r} has no comment"
        assert found[name]["inferred_type_name"] != "None", f"{path.name}: {name!r} untyped"


@pytest.mark.parametrize("path", ANALYSIS, ids=lambda p: p.name)
def test_hand_runs_never_write_into_data(path):
    # run by hand (defaults), a notebook writes to a scratch folder, never into DVC's data/
    import papermill as pm

    for name, p in pm.inspect_notebook(str(path)).items():
        if name.startswith("out") or name.endswith(("_out", "out_dir", "report")):
            assert not p["default"].strip("\"'").startswith("data/"), (
                f"{path.name}: {name} defaults to {p['default']} (use scratch/...)")
