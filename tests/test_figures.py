"""Figures from small synthetic datasets with the real schema (core.schema.synthetic) and tiny
problem shards: every family builds, outputs are non-empty and byte-identical on a rebuild, and
missing inputs give one clear error naming what is missing."""

from pathlib import Path

import numpy as np
import pytest

from core.config import SHAPES, load
from core.metrics import write
from core.schema import synthetic
from figures import FAMILIES, build
from figures.__main__ import main
from figures.style import FigureError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cfg():
    return load(ROOT / "params.yaml", "ci")


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
    root = tmp_path_factory.mktemp("fig_inputs")
    write(synthetic(), root / "metrics")
    _raven(root / "raven", (*SHAPES, "light"))
    return root


@pytest.fixture(scope="module")
def built(inputs, cfg, tmp_path_factory):
    outs = [tmp_path_factory.mktemp(f"figs{i}") for i in range(2)]
    paths = [build(list(FAMILIES), inputs / "metrics", inputs / "raven", o, cfg) for o in outs]
    return outs, paths


def test_every_family_builds_png_and_pdf(built):
    outs, paths = built
    stems = {p.stem for p in paths[0]}
    for mod in FAMILIES.values():
        for stem in mod.OUTPUTS:
            assert stem in stems, stem
            for ext in ("png", "pdf"):
                f = outs[0] / f"{stem}.{ext}"
                assert f.stat().st_size > 1000, f
    assert {p.suffix for p in paths[0]} == {".png", ".pdf"}
    assert not list(outs[0].glob(".tmp-*")), "temporary files left behind"


def test_rebuild_is_byte_identical(built):
    outs, paths = built
    for p in paths[0]:
        assert p.read_bytes() == (outs[1] / p.name).read_bytes(), p.name


def test_pdf_and_png_metadata_are_fixed(built):
    outs, _ = built
    pdf = (outs[0] / "line_plots.pdf").read_bytes()
    assert b"CreationDate" not in pdf and b"matplotlib" not in pdf.lower()
    png = (outs[0] / "line_plots.png").read_bytes()
    assert b"Software" not in png


def test_cli_list_and_build_some(inputs, tmp_path, capsys):
    assert main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in FAMILIES:
        assert name in listed
    rc = main(["line_plots", "--metrics", str(inputs / "metrics"), "--raven",
               str(inputs / "raven"), "--out", str(tmp_path), "--params",
               str(ROOT / "params.yaml"), "--profile", "ci"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line_plots.pdf", "line_plots.png"]


def test_cli_unknown_name(capsys):
    assert main(["no_such_figure"]) == 2
    assert "unknown figure 'no_such_figure'" in capsys.readouterr().err


def test_missing_metrics_file_is_named(inputs, cfg, tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "modules.nc").write_bytes((inputs / "metrics" / "modules.nc").read_bytes())
    with pytest.raises(FigureError, match=r"sharing\.nc: file not found"):
        build(["sharing_matrices"], metrics, inputs / "raven", tmp_path / "out", cfg)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(("name", "var", "family"), [("sharing", "iomin", "sharing_matrices"),
                                                      ("modules", "dispersity_norm", "line_plots"),
                                                      ("curves", "keep_prob", "mask_evolution")])
def test_missing_variable_is_named(cfg, tmp_path, name, var, family):
    ds = synthetic()
    ds[name] = ds[name].drop_vars(var)
    write(ds, tmp_path)
    with pytest.raises(FigureError, match=rf"{name}\.nc: variable '{var}' missing"):
        build([family], tmp_path, tmp_path / "raven", tmp_path / "out", cfg)


def test_cli_reports_error_without_traceback(tmp_path, capsys):
    rc = main(["ablation", "--metrics", str(tmp_path), "--out", str(tmp_path / "o"),
               "--params", str(ROOT / "params.yaml"), "--profile", "ci"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "modules.nc: file not found" in err


def test_problem_instances_needs_task_folders(cfg, tmp_path):
    with pytest.raises(FigureError, match=r"tasks: no task folders"):
        build(["problem_instances"], tmp_path, tmp_path / "raven", tmp_path / "out", cfg)


def test_problem_instances_names_missing_split(cfg, tmp_path):
    _raven(tmp_path / "raven", ("circle",), split="train")
    with pytest.raises(FigureError, match=r"circle"):
        build(["problem_instances"], tmp_path, tmp_path / "raven", tmp_path / "out", cfg)


def test_selected_alpha_missing_is_named(cfg, tmp_path):
    ds = synthetic()
    ds["modules"]["selected_alpha"][:] = np.nan
    write(ds, tmp_path)
    with pytest.raises(FigureError, match="selected_alpha is NaN"):
        build(["line_plots"], tmp_path, tmp_path, tmp_path / "out", cfg)


def test_empty_specific_modules_still_draw(cfg, tmp_path):
    """Every kept weight shared (e.g. dense masks): the task-specific matrices read n/a."""
    ds = synthetic()
    ds["sharing"]["iomin_specific"][:] = np.nan
    write(ds, tmp_path)
    paths = build(["sharing_matrices"], tmp_path, tmp_path, tmp_path / "out", cfg)
    assert sorted(p.name for p in paths) == sorted(
        f"{s}.{e}" for s in ("sharing_matrices", "sharing_matrices_specific")
        for e in ("png", "pdf"))
