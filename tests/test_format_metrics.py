"""Tests of core.formats.metrics: the spec is complete, the metric files written by core.metrics (from
the synthetic inputs of tests/synthetic.py) follow it, validate() and open_metrics() name what
is missing or wrong, and files of another configuration are refused."""

from __future__ import annotations

import pytest
import synthetic as syn  # tests/synthetic.py: the test-only input builders
import xarray as xr

from core.formats import metrics as schema
from core.formats.metrics import FILES, SCHEMA, SchemaError, metrics_hash, open_metrics, validate


@pytest.fixture(scope="module")
def files():
    out, cfg, _ = syn.built_metrics()
    return out, cfg, {n: open_metrics(out, n) for n in FILES}


def test_spec_is_complete():
    assert set(SCHEMA) == set(FILES)
    for name, spec in SCHEMA.items():
        for key, v in {**spec["coords"], **spec["vars"]}.items():
            assert v.units in ("1", "percent"), (name, key)
            assert v.long_name, (name, key)
            assert set(v.dims) <= set(spec["dims"]), (name, key)
        assert not set(spec["coords"]) & set(spec["vars"]), name
        assert {"network", "checkpoint"} <= set(spec["dims"]), name


def test_written_files_follow_the_schema(files):
    _, _, ds = files
    for name in FILES:
        validate(ds[name], name)
        assert ds[name].attrs["Conventions"] == schema.CONVENTIONS
        for var in ds[name].variables:
            assert ds[name][var].attrs["units"] and ds[name][var].attrs["long_name"]


def _without_attr(ds: xr.Dataset, attr: str) -> xr.Dataset:
    out = ds.copy()
    out.attrs = {k: v for k, v in ds.attrs.items() if k != attr}
    return out


def test_validate_names_what_is_wrong(files):
    m = files[2]["modules"]
    with pytest.raises(SchemaError, match="modules.nc: variable 'dispersity' missing"):
        validate(m.drop_vars("dispersity"), "modules")
    with pytest.raises(SchemaError, match="dimension 'seed' missing"):
        validate(m.rename({"seed": "run"}), "modules")
    bad = m.copy(deep=True)
    bad["sparsity"].attrs["units"] = "1"
    with pytest.raises(SchemaError, match="'sparsity' attribute 'units' is '1', expected "
                                          "'percent'"):
        validate(bad, "modules")
    with pytest.raises(SchemaError, match="'sparsity' has dims"):
        validate(m.assign(sparsity=m["sparsity"].transpose("seed", ...)), "modules")
    for attr in ("source", "config_hash", "profile"):
        with pytest.raises(SchemaError, match=f"global attribute '{attr}' missing"):
            validate(_without_attr(m, attr), "modules")
    with pytest.raises(SchemaError, match="'milestone' is a data variable"):
        validate(m.reset_coords("milestone"), "modules")
    with pytest.raises(SchemaError, match="unknown metrics file 'figures'"):
        validate(m, "figures")


def test_finalize_requires_every_variable(files):
    ds = files[2]["layers"].drop_vars("share")
    with pytest.raises(SchemaError, match="layers.nc: variable 'share' missing"):
        schema.finalize(ds, "layers", "test")


def test_open_metrics_errors(tmp_path):
    with pytest.raises(SchemaError, match="curves.nc: file not found"):
        open_metrics(tmp_path, "curves")
    (tmp_path / "curves.nc").write_text("garbage")
    with pytest.raises(SchemaError, match="curves.nc: cannot be read as netCDF"):
        open_metrics(tmp_path, "curves")
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(tmp_path / "layers.nc")
    with pytest.raises(SchemaError, match="layers.nc: .*dimension 'network' missing"):
        open_metrics(tmp_path, "layers")


def test_files_of_another_configuration_are_refused(files):
    out, cfg, _ = files
    assert open_metrics(out, "sharing", metrics_hash(cfg)).sizes["network"] == 3
    other = syn.config(networks=(0, 1, 2), seeds=(0, 1, 2))
    with pytest.raises(SchemaError, match=r"sharing.nc: written for another configuration "
                                          r"\(config_hash [0-9a-f]{12}, profile ci"):
        open_metrics(out, "sharing", metrics_hash(other))
