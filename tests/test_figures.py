"""Figures from the metric files that core.metrics writes for the synthetic inputs of
tests/synthetic.py, and tiny problem shards: every family builds, outputs are non-empty and
byte-identical on a rebuild, metrics of another configuration are refused, and missing inputs
give one clear error naming what is missing."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import synthetic as syn  # tests/synthetic.py: the test-only input builders

from core.formats.metrics import metrics_hash
from core.tasks import SHAPES
from figures import FAMILIES, PROVENANCE_FILE, build
from figures.__main__ import main
from figures.style import FigureError, task_color


def _raven(root: Path, subsets=SHAPES, split="test") -> Path:
    """Tiny packed shards: two problems of 16 random 32 px panels per subset."""
    rng = np.random.default_rng(0)
    for name in subsets:
        folder = root / "tasks" / name / split
        folder.mkdir(parents=True)
        np.savez_compressed(folder / "center_single.npz",
                            image=rng.integers(0, 256, (2, 16, 32, 32), dtype=np.uint8),
                            target=np.array([3, 5], np.int64))
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    metrics, cfg, params = syn.built_metrics()
    raven = _raven(tmp_path_factory.mktemp("raven"), (*SHAPES, "light"))
    # figure settings are outside the metrics' config hash: a low dpi keeps the tests fast
    cfg = dataclasses.replace(cfg, figures=dataclasses.replace(cfg.figures, dpi=40))
    return metrics, raven, cfg, params


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    metrics, raven, cfg, _ = inputs
    outs = [tmp_path_factory.mktemp(f"figs{i}") for i in range(2)]
    # everything once; two families again for the byte-identity check (keeps the test fast)
    paths = [build(list(FAMILIES), metrics, raven, outs[0], cfg),
             build(["line_plots", "ablation"], metrics, raven, outs[1], cfg)]
    return outs, paths


@pytest.mark.slow
def test_every_family_builds_png_and_pdf(built, inputs):
    outs, paths = built
    expected = {f"{stem}.{ext}" for mod in FAMILIES.values() for stem in mod.OUTPUTS
                for ext in ("png", "pdf")}
    assert {p.name for p in paths[0]} == expected
    for f in paths[0]:
        assert f.stat().st_size > 1000, f
    assert not list(outs[0].glob(".tmp-*")), "temporary files left behind"
    prov = json.loads((outs[0] / PROVENANCE_FILE).read_text())
    assert prov["config_hash"] == metrics_hash(inputs[2]) and prov["profile"] == "ci"


@pytest.mark.slow
def test_rebuild_is_byte_identical(built):
    outs, paths = built
    assert len(paths[1]) > 4
    for p in paths[1]:
        assert p.read_bytes() == (outs[0] / p.name).read_bytes(), p.name


@pytest.mark.slow
def test_pdf_and_png_metadata_are_fixed(built):
    outs, _ = built
    pdf = (outs[0] / "line_plots.pdf").read_bytes()
    assert b"CreationDate" not in pdf and b"matplotlib" not in pdf.lower()
    assert b"Software" not in (outs[0] / "line_plots.png").read_bytes()


def test_metrics_of_another_configuration_are_refused(inputs, tmp_path):
    metrics, raven, _, _ = inputs
    other = syn.config(networks=(0, 1), seeds=(0, 1), train={"milestones": [20.0, 30.0]})
    with pytest.raises(FigureError, match="written for another configuration"):
        build(["line_plots"], metrics, raven, tmp_path, other)
    assert not list(tmp_path.iterdir())


def test_cli_list_and_build_some(inputs, tmp_path, capsys):
    metrics, raven, _, params = inputs
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in FAMILIES:
        assert name in listed
    rc = main(["line_plots", "--metrics", str(metrics), "--raven", str(raven), "--out",
               str(tmp_path), "--params", str(params)])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line_plots.pdf", "line_plots.png",
                                                          PROVENANCE_FILE]


def test_cli_unknown_name(capsys):
    assert main(["no_such_figure"]) == 2
    assert "unknown figure 'no_such_figure'" in capsys.readouterr().err


def test_missing_metrics_file_is_named(inputs, tmp_path):
    metrics, raven, cfg, _ = inputs
    for f in metrics.glob("*.nc"):
        shutil.copy(f, tmp_path / f.name)
    with pytest.raises(FigureError, match=r"summary\.json: file not found"):
        build(["sharing_matrices"], tmp_path, raven, tmp_path / "out", cfg)
    shutil.copy(metrics / "summary.json", tmp_path / "summary.json")
    (tmp_path / "sharing.nc").unlink()
    with pytest.raises(FigureError, match=r"sharing\.nc: file not found"):
        build(["sharing_matrices"], tmp_path, raven, tmp_path / "out", cfg)


def test_cli_reports_error_without_traceback(inputs, tmp_path, capsys):
    rc = main(["ablation", "--metrics", str(tmp_path), "--out", str(tmp_path / "o"),
               "--params", str(inputs[3])])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "summary.json: file not found" in err


def test_problem_instances_needs_task_folders(inputs, tmp_path):
    metrics, _, cfg, _ = inputs
    with pytest.raises(FigureError, match=r"tasks: no task folders"):
        build(["problem_instances"], metrics, tmp_path / "raven", tmp_path / "out", cfg)


def test_problem_instances_names_missing_split(inputs, tmp_path):
    metrics, _, cfg, _ = inputs
    _raven(tmp_path / "raven", ("circle",), split="train")
    with pytest.raises(FigureError, match=r"circle"):
        build(["problem_instances"], metrics, tmp_path / "raven", tmp_path / "out", cfg)


def test_task_colours():
    assert task_color("circle") == task_color("rule_circle") == task_color("not_circle")
    assert task_color("color_rule") != task_color("size_rule")


def test_a_run_without_converged_masks_still_draws_its_figures(inputs, tmp_path, capsys):
    """A settings sweep where no mask converged (every module NaN) gets empty panels and a
    warning per empty input, not a failed figures stage."""
    import xarray as xr
    metrics, raven, cfg, _ = inputs
    empty = tmp_path / "metrics"
    shutil.copytree(metrics, empty)
    with xr.open_dataset(metrics / "modules.nc") as ds:
        md = ds.load()
    md["converged"] = md["converged"] * 0
    md["dispersity_norm"] = md["dispersity_norm"] * np.nan  # e.g. every read-out empty
    md.to_netcdf(empty / "modules.nc")
    paths = build(["line_plots", "spatial_dist"], empty, raven, tmp_path / "figs", cfg)
    assert {p.name for p in paths} >= {"line_plots.png", "spatial_dist.png"}
    assert "modules.nc dispersity_norm: no finite values" in capsys.readouterr().err
