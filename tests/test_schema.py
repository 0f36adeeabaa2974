"""Tests of core.schema: the spec is complete, synthetic datasets follow it (and survive a
netCDF round trip byte-identically), validate() names what is missing or wrong."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from core import schema
from core.schema import FILES, SCHEMA, SchemaError, open_metrics, synthetic, validate


@pytest.fixture(scope="module")
def syn():
    return synthetic()


def test_spec_is_complete():
    assert set(SCHEMA) == set(FILES)
    for name, spec in SCHEMA.items():
        for key, v in {**spec["coords"], **spec["vars"]}.items():
            assert v.units in ("1", "percent"), (name, key)
            assert v.long_name, (name, key)
            assert set(v.dims) <= set(spec["dims"]), (name, key)
        assert not set(spec["coords"]) & set(spec["vars"]), name


def test_synthetic_follows_the_schema(syn, tmp_path):
    for name in FILES:
        ds = syn[name]
        validate(ds, name)
        ds.to_netcdf(tmp_path / f"{name}.nc", engine="netcdf4")
        back = open_metrics(tmp_path, name)
        assert back.attrs["Conventions"] == schema.CONVENTIONS
        for var in back.variables:
            assert back[var].attrs["units"] and back[var].attrs["long_name"]
    m = syn["modules"]
    # realistic layout: the sweep only at the last checkpoint, first seed
    assert np.isnan(m["sparsity"].sel(checkpoint="scl_50", alpha=1e-4)).all()
    assert np.isfinite(m["sparsity"].sel(checkpoint="scl_90", alpha=1e-4, seed=0)).all()
    sp = m["sparsity"].sel(alpha=1e-5).mean(["task", "seed"]).values
    assert sp[0] < sp[-1] and (m["sparsity"].fillna(50) <= 100).all()


def test_synthetic_is_deterministic_and_sized(tmp_path):
    a = synthetic(rng_seed=3)
    b = synthetic(rng_seed=3)
    for name in FILES:
        for i, ds in enumerate((a[name], b[name])):
            ds.to_netcdf(tmp_path / f"{name}{i}.nc", engine="netcdf4")
        assert (tmp_path / f"{name}0.nc").read_bytes() == (tmp_path / f"{name}1.nc").read_bytes()
    small = synthetic(checkpoints=("scl_20", "scl_30"), milestones=(20.0, 30.0),
                      tasks=("circle", "square"), alpha_sweep=(1e-4,), seeds=(0, 1))
    assert dict(small["sharing"].sizes) == {"checkpoint": 2, "task": 2, "other_task": 2,
                                            "seed": 2}
    assert small["modules"]["alpha"].values.tolist() == [1e-5, 1e-4]


def _without_attr(ds: xr.Dataset, attr: str) -> xr.Dataset:
    out = ds.copy()
    out.attrs = {k: v for k, v in ds.attrs.items() if k != attr}
    return out


def test_validate_names_what_is_wrong(syn):
    m = syn["modules"]
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
    with pytest.raises(SchemaError, match="global attribute 'source' missing"):
        validate(_without_attr(m, "source"), "modules")
    with pytest.raises(SchemaError, match="'milestone' is a data variable"):
        validate(m.reset_coords("milestone"), "modules")
    with pytest.raises(SchemaError, match="unknown metrics file 'figures'"):
        validate(m, "figures")


def test_finalize_requires_every_variable(syn):
    ds = syn["layers"].drop_vars("share")
    with pytest.raises(SchemaError, match="layers.nc: variable 'share' missing"):
        schema.finalize(ds, "layers", "test")


def test_open_metrics_errors(tmp_path):
    with pytest.raises(SchemaError, match="curves.nc: file not found"):
        open_metrics(tmp_path, "curves")
    (tmp_path / "curves.nc").write_text("garbage")
    with pytest.raises(SchemaError, match="curves.nc: cannot be read as netCDF"):
        open_metrics(tmp_path, "curves")
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(tmp_path / "layers.nc")
    with pytest.raises(SchemaError, match="layers.nc: .*dimension 'checkpoint' missing"):
        open_metrics(tmp_path, "layers")
