"""core.notebook: papermill run + HTML report; failures name the notebook and the error."""

from pathlib import Path

import nbformat
import pytest

from core import notebook


def make_nb(path, body, check=False):
    """A notebook with typed parameters x (int) and out (str); ``check``: it checks the
    parameters it runs with itself (core.notebook.Parameters), as the analysis notebooks do."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x: int = 1  # a number\nout: str = 'unset'  # a file")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    if check:
        nb.cells = [nbformat.v4.new_code_cell(
            "from core.notebook import Parameters\n"
            f"_parameters = Parameters({str(path)!r}, globals())"),
            params, nbformat.v4.new_code_cell("_parameters.check()\n" + body)]
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


def test_subprocess_output_reaches_the_log_once_and_not_the_report(tmp_path, capfd):
    # progress bars of work a notebook starts (a training process, sys.__stderr__) go to the
    # pipeline log once, not into the HTML report (the kernel does not capture its fds)
    body = ("import subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'import sys; print(\"bar\", 3 - 2, "
            "file=sys.stderr)'])\n"
            "print('result', 6 * 7)")
    nb = make_nb(tmp_path / "a.ipynb", body)
    notebook.run(nb, tmp_path / "a.html", {}, cwd=tmp_path)
    log = capfd.readouterr()
    assert (log.out + log.err).count("bar 1") == 1 and "result 42" in log.out
    page = (tmp_path / "a.html").read_text()
    assert "result 42" in page and "bar 1" not in page


def test_missing_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ipynb: notebook not found"):
        notebook.run(tmp_path / "nope.ipynb", None, {})


def test_cli_types_parameters_like_papermill(tmp_path):
    # -p: papermill's own inference (1e-5 a float, 3 an int); -r: a raw string; -y: YAML
    nb = make_nb(tmp_path / "a.ipynb", "open(out, 'w').write(repr(x))")
    res = tmp_path / "res.txt"
    assert notebook.main([str(nb), "-p", "x", "3", "-r", "out", str(res)]) == 0
    assert res.read_text() == "3"
    assert notebook.main([str(nb), "-y", "{x: 4}", "-p", "out", str(res)]) == 0
    assert res.read_text() == "4"


def test_wrong_parameter_name_or_type_is_one_error_before_a_kernel_starts(tmp_path, capsys):
    nb = make_nb(tmp_path / "a.ipynb", "open(out, 'w').write('ran')")
    res = tmp_path / "res.txt"
    with pytest.raises(notebook.ParameterError,
                       match=r"a.ipynb: unknown parameter 'alpha' \(the notebook's parameters: "
                             r"x, out"):
        notebook.run(nb, None, {"alpha": 1e-5, "out": str(res)}, cwd=tmp_path)
    with pytest.raises(notebook.ParameterError,
                       match=r"parameter 'x' \(a number\): expected int, got str 'three'"):
        notebook.run(nb, None, {"x": "three", "out": str(res)}, cwd=tmp_path)
    with pytest.raises(notebook.ParameterError, match="expected int, got bool True"):
        notebook.run(nb, None, {"x": True}, cwd=tmp_path)
    assert not res.exists()  # nothing ran
    # the CLI: one line naming the parameter, and papermill's -p typing explained for strings
    assert notebook.main([str(nb), "-p", "out", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "parameter 'out' (a file): expected str, got int 5" in err
    assert "-r out VALUE" in err
    notebook.check(nb, {"x": 2, "out": "f"})  # right names and types pass


def test_plain_papermill_runs_stop_at_the_notebooks_own_check(tmp_path):
    # papermill itself only warns about an unknown name: the notebook's check cell refuses it
    import papermill as pm

    nb = make_nb(tmp_path / "a.ipynb", "open(out, 'w').write(str(x))", check=True)
    res = tmp_path / "res.txt"
    pm.execute_notebook(str(nb), str(tmp_path / "ok.ipynb"), {"x": 5, "out": str(res)},
                        progress_bar=False)
    assert res.read_text() == "5"
    for bad, msg in (({"alhpa": 1}, "unknown parameter 'alhpa'"),
                     ({"x": "5"}, "parameter 'x' (a number): expected int, got str '5'")):
        with pytest.raises(pm.PapermillExecutionError) as err:
            pm.execute_notebook(str(nb), str(tmp_path / "bad.ipynb"), bad, progress_bar=False)
        assert err.value.ename == "ParameterError" and msg in err.value.evalue


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


# --------------------------------------------------------------------------- the stage notebooks

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_notebook_trains_every_network_through_the_launcher(tmp_path):
    # the train stage: train_all (train.jobs processes) from the notebook, then the report
    import copy

    import test_train as tt
    import xarray as xr

    raw = copy.deepcopy(tt.raw_cfg(milestones=[1, 2], epochs=1, networks=[0, 1], jobs=2))
    params = tt.write_params(tmp_path / "params.yaml", raw)
    data = tt.write_data(tmp_path / "raven")
    report = tmp_path / "reports" / "train.html"
    notebook.run(ROOT / "analysis" / "train_scl.ipynb", report,
                 {"params": str(params), "data": str(data), "out": str(tmp_path / "train"),
                  "state": str(tmp_path / "state"), "progress": False}, cwd=ROOT)
    for k in (0, 1):
        log = xr.open_dataset(tmp_path / "train" / f"net{k}" / "training.nc")
        assert list(log["checkpoint"].values) == ["scl_1", "scl_2"]
    page = report.read_text()
    assert "networks [0, 1] trained" in page and "== network 1 ==" in page
    assert "milestone_test_acc" in page and "<img" in page  # the curves, embedded
    # failed trainings: one error (each process's own is on stderr)
    with pytest.raises(SystemExit, match="train_scl.ipynb failed in cell .*training failed"):
        notebook.run(ROOT / "analysis" / "train_scl.ipynb", None,
                     {"params": str(params), "data": str(tmp_path / "none"),
                      "out": str(tmp_path / "t2"), "state": str(tmp_path / "s2"),
                      "progress": False}, cwd=ROOT)


@pytest.mark.slow
def test_mask_notebook_makes_masks_at_new_settings_that_metrics_reads(tmp_path):
    # `papermill analysis/train_masks.ipynb out.ipynb -p checkpoint ... -p task circle -p steps
    # N`: mask files (core/formats/masks.py) + evals.nc + the parameters they were made with, which
    # the metrics stage's code reads as it reads the pipeline's masks
    import papermill as pm
    import synthetic as syn
    import test_sweep as ts

    from core import metrics
    from core.config import load
    from core.formats.masks import load_mask

    train, data = ts.make_inputs(tmp_path)
    params = ts.small_params(tmp_path)
    out = tmp_path / "masks" / "net0"
    pm.execute_notebook(str(ROOT / "analysis" / "train_masks.ipynb"), str(tmp_path / "r.ipynb"),
                        {"params": str(params), "checkpoint": str(train / "scl_2.pt"),
                         "task": "circle", "steps": 6, "seed": 1, "alpha": 3e-4,
                         "data": str(data), "out": str(out)}, cwd=str(ROOT), progress_bar=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["scl_2/circle-a3e-4-s1.pt", "scl_2/evals.nc"]
    rec = load_mask(out / "scl_2" / "circle-a3e-4-s1.pt")
    assert rec["steps"] == 6 and rec["settings"]["masks"]["steps"] == 6
    cfg = load(tmp_path / "masks" / "params.yaml")
    assert (cfg.masks.steps, cfg.masks.alpha, cfg.masks.seeds, cfg.masks.alpha_sweep) == \
        (6, 3e-4, [1], [])
    assert cfg.checkpoints == ["scl_2"] and cfg.train.networks == [0]
    syn.write_training(train, cfg, 0)
    metrics.run(tmp_path / "masks", tmp_path / "train", tmp_path / "masks" / "params.yaml",
                tmp_path / "metrics", progress=False)
    assert (tmp_path / "metrics" / "summary.json").is_file()


@pytest.mark.parametrize("given,message", [
    ({"steps": "2k"}, "parameter 'steps' (mask-training steps (0: masks.steps)): expected int, "
                      "got str '2k'"),
    ({"task": "circel"}, "task: unknown task set 'circel'"),
    ({"task": "not_circle"}, "task: 'not_circle' is a complement or reference set"),
    ({"checkpoint": "scl_9"}, "checkpoint: 'scl_9' is not a checkpoint of train.milestones"),
    ({"steps": 7, "out": "data/masks/net0"}, "out: data/masks/net0 is under data/"),
])
def test_mask_notebook_refuses_bad_settings_naming_the_parameter(tmp_path, given, message):
    import papermill as pm
    import test_sweep as ts

    params = ts.small_params(tmp_path)
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(ROOT / "analysis" / "train_masks.ipynb"),
                            str(tmp_path / "r.ipynb"), {"params": str(params), **given},
                            cwd=str(ROOT), progress_bar=False)
    assert err.value.ename == "ParameterError" and message in err.value.evalue
