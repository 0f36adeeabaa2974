"""core.config: every bad input stops with one clear error naming the key."""

import copy
import os
from pathlib import Path

import pytest
import yaml

from core import config as C

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def write(tmp_path, raw):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize("profile", C.PROFILES)
def test_every_profile_loads(profile):
    cfg = C.load(ROOT / "params.yaml", profile)
    assert cfg.profile == profile
    assert cfg.data.image_size % 16 == 0
    assert len(cfg.checkpoints) == len(cfg.train.milestones)


def test_config_is_frozen():
    cfg = C.load(ROOT / "params.yaml", "ci")
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_profiles_override_default():
    ci = C.load(ROOT / "params.yaml", "ci")
    default = C.load(ROOT / "params.yaml", "default")
    assert ci.data.n_per_config < default.data.n_per_config
    assert ci.model == default.model  # not overridden: inherited


def test_committed_active_yaml_is_in_sync():
    # the committed active.yaml is what params.yaml resolves to (load checks it)
    cfg = C.load(ROOT / "active.yaml")
    assert cfg == C.load(ROOT / "params.yaml", cfg.profile)


def bad(tmp_path, mutate, profile=None):
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises(C.ConfigError) as err:
        C.load(write(tmp_path, raw), profile)
    return str(err.value)


def test_unknown_profile(tmp_path):
    msg = bad(tmp_path, lambda r: r.update(profile="huge"))
    assert "profile" in msg and "'huge'" in msg and "ci, default, paper" in msg


def test_unknown_profile_argument(tmp_path):
    with pytest.raises(C.ConfigError, match="unknown profile 'nope'"):
        C.load(write(tmp_path, RAW), "nope")


def test_unknown_key(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"]["train"].update(lrate=1))
    assert "profiles.default.train.lrate: unknown key" in msg


def test_unknown_key_in_override(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["ci"]["data"].update(n_problems=3), "ci")
    assert "profiles.ci.data.n_problems: unknown key" in msg


def test_missing_key(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"]["masks"].pop("tau"))
    assert "profiles.default.masks.tau: missing key" in msg


def test_missing_section(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"].pop("metrics"))
    assert "profiles.default.metrics: missing key" in msg


def test_wrong_type(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"]["train"].update(batch_size="32"))
    assert "profiles.default.train.batch_size: expected an integer, got '32'" in msg


def test_wrong_type_list(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"]["masks"].update(seeds=3))
    assert "profiles.default.masks.seeds: expected a list of integers, got 3" in msg


def test_bool_is_not_int(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"]["data"].update(workers=True))
    assert "data.workers: expected an integer" in msg


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        ("data", "n_per_config", -5, "data.n_per_config: expected an integer >= 10, got -5"),
        ("data", "image_size", 81, "data.image_size: expected a multiple of 16, got 81"),
        ("data", "image_size", -16, "data.image_size: expected an integer > 0, got -16"),
        ("masks", "alpha", 0.0, "masks.alpha: expected a number > 0, got 0.0"),
        ("masks", "alpha", -1e-5, "masks.alpha: expected a number > 0, got -1e-05"),
        ("masks", "steps", 0, "masks.steps: expected an integer > 0, got 0"),
        ("masks", "batch_size", -1, "masks.batch_size: expected an integer > 0, got -1"),
        ("train", "milestones", [50, 100], "train.milestones[1]: expected a number > 0 and < 100, got 100"),
        ("train", "milestones", [0, 50], "train.milestones[0]: expected a number > 0 and < 100, got 0"),
        ("train", "milestones", [70, 50], "train.milestones: expected strictly increasing values"),
        ("train", "milestones", [], "train.milestones: expected a non-empty list"),
        ("data", "configs", ["center_single", "hexgrid"], "data.configs[1]: expected one of center_single"),
        ("masks", "tasks", ["circle", "star"], "masks.tasks[1]: expected one of triangle, square"),
        ("masks", "seeds", [0, 0], "masks.seeds: expected distinct values"),
        ("data", "answers", "fair", "data.answers: expected one of iraven, raven; got 'fair'"),
        ("metrics", "ci", 1.5, "metrics.ci: expected a number > 0 and < 1, got 1.5"),
    ],
)
def test_out_of_range(tmp_path, section, key, value, expected):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"][section].update({key: value}))
    assert expected in msg, msg


def test_error_names_the_file(tmp_path):
    msg = bad(tmp_path, lambda r: r["profiles"]["default"]["masks"].update(alpha=-1.0))
    assert str(tmp_path / "params.yaml") in msg


def test_float_written_without_dot(tmp_path):
    # PyYAML reads `1e-5` as a string; accept it as the number it means.
    raw = copy.deepcopy(RAW)
    raw["profiles"]["default"]["masks"]["alpha"] = "1e-5"
    assert C.load(write(tmp_path, raw), "default").masks.alpha == 1e-5


def test_missing_file(tmp_path):
    with pytest.raises(C.ConfigError, match="file not found"):
        C.load(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("profile: [unclosed\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(p)


def test_active_roundtrip_and_stale(tmp_path):
    params = write(tmp_path, RAW)
    out = C.write_active(params, "ci", tmp_path / "active.yaml")
    assert C.load(out) == C.load(params, "ci")
    mtime = out.stat().st_mtime_ns
    C.write_active(params, "ci", out)  # unchanged content: file untouched
    assert out.stat().st_mtime_ns == mtime
    raw = copy.deepcopy(RAW)
    raw["profiles"]["ci"]["masks"]["steps"] = 7
    write(tmp_path, raw)
    os.utime(out, ns=(0, 0))  # params.yaml edited after active.yaml was written: stale
    with pytest.raises(C.ConfigError, match="stale"):
        C.load(out)
    # active.yaml edited after params.yaml (a `dvc exp run -S active.yaml:...` override): used
    text = out.read_text().replace("steps: 20\n", "steps: 9\n")
    assert text != out.read_text()
    out.write_text(text)
    assert C.load(out).masks.steps == 9
    bad_text = text.replace("steps: 9\n", "steps: -9\n")
    out.write_text(bad_text)
    with pytest.raises(C.ConfigError, match="masks.steps: expected an integer > 0"):
        C.load(out)
    with pytest.raises(C.ConfigError, match="holds profile 'ci', not 'default'"):
        C.write_active(params, "ci", out) and C.load(out, "default")


def test_mask_runs_cover_grid():
    cfg = C.load(ROOT / "params.yaml", "default")
    runs = C.mask_runs(cfg)
    keys = [r["key"] for r in runs]
    assert len(keys) == len(set(keys))
    main = [r for r in runs if r["alpha"] == cfg.masks.alpha]
    assert len(main) >= len(cfg.checkpoints) * len(cfg.masks.tasks) * len(cfg.masks.seeds)
    sweep = {r["alpha"] for r in runs if r["checkpoint"] == cfg.checkpoints[-1]}
    assert set(cfg.masks.alpha_sweep) <= sweep
    assert all(k.replace("-", "").replace("_", "").isalnum() for k in keys)


def test_alpha_label():
    assert C.alpha_label(1e-5) == "1e-5"
    assert C.alpha_label(2.2e-6) == "2p2e-6"
    assert C.alpha_label(0.5) == "5e-1"


def test_cli_reports_error(tmp_path, capsys):
    raw = copy.deepcopy(RAW)
    raw["profiles"]["default"]["data"]["image_size"] = 100
    rc = C.main(["show", "--params", str(write(tmp_path, raw))])
    assert rc == 2
    assert "data.image_size: expected a multiple of 16" in capsys.readouterr().err
