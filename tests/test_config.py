"""core.config: params.yaml composed from conf/; every bad input stops with one clear error
naming the file and the key."""

import copy
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from core import config as C
from core.config.load import _fields_by_path

ROOT = Path(__file__).resolve().parents[1]
RAW = C.compose("default")


def write(tmp_path, raw):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def bad(tmp_path, mutate):
    raw = copy.deepcopy(RAW)
    mutate(raw)
    with pytest.raises(C.ConfigError) as err:
        C.load(write(tmp_path, raw))
    return str(err.value)


def test_profiles_are_the_conf_group():
    assert sorted(C.PROFILES) == sorted(p.stem for p in (ROOT / "conf/profile").glob("*.yaml"))


@pytest.mark.parametrize("profile", C.PROFILES)
def test_every_profile_composes_and_loads(profile):
    cfg = C.load(ROOT / "params.yaml", profile)
    assert cfg.profile == profile
    assert cfg == C.from_dict(C.compose(profile))
    assert len(cfg.checkpoints) == len(cfg.train.milestones)


def test_networks_per_profile():
    """CIs are across independently trained networks: never fewer than 2 in the
    default profile, at least 3 at full scale."""
    assert len(C.load(ROOT / "params.yaml", "default").train.networks) >= 2
    paper = C.load(ROOT / "params.yaml", "paper").train.networks
    assert len(paper) >= 3 and len(set(paper)) == len(paper)


def test_committed_params_yaml_is_the_default_composition():
    # edit conf/, then `python -m core.config compose` and commit both. The committed file, not
    # the working copy: `make repro PROFILE=ci` rewrites the working copy with the ci profile.
    git = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True,
                         text=True)
    text = git.stdout if git.returncode == 0 else (ROOT / "params.yaml").read_text()
    assert text == C.compose_text("default"), (
        "params.yaml is not conf/ composed: run `python -m core.config compose` and commit it")


def test_compose_gives_the_bytes_dvc_exp_run_writes(tmp_path):
    from dvc.utils.hydra import compose_and_dump

    over = ["masks.alpha=1e-4", "masks.seeds=[3,4]"]
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(ROOT / "conf"), None, "config", str(tmp_path), ["profile=ci", *over])
    assert out.read_text() == C.compose_text("ci", over)


def test_profiles_override_default_and_overrides_win():
    ci, default = C.load(ROOT / "params.yaml", "ci"), C.load(ROOT / "params.yaml", "default")
    assert ci.data.n_per_config < default.data.n_per_config
    assert ci.model == default.model  # not overridden: inherited
    cfg = C.from_dict(C.compose("ci", ["masks.seeds=[5,6,7]", "masks.alpha=2e-4"]))
    assert cfg.masks.seeds == [5, 6, 7] and cfg.masks.alpha == 2e-4
    assert cfg.masks.steps == ci.masks.steps  # the profile's value under the override


def test_config_is_frozen():
    cfg = C.load(ROOT / "params.yaml")
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_unknown_profile(tmp_path):
    msg = bad(tmp_path, lambda r: r.update(profile="huge"))
    assert "profile: expected one of ci, default, paper" in msg and "'huge'" in msg
    with pytest.raises(C.ConfigError, match="unknown profile 'huge'"):
        C.compose("huge")


def test_unknown_key(tmp_path):
    msg = bad(tmp_path, lambda r: r["train"].update(lrate=1))
    assert "params.yaml: train.lrate: unknown key" in msg
    msg = bad(tmp_path, lambda r: r.update(extra=1))
    assert "params.yaml: extra: unknown key" in msg


def test_unknown_key_in_a_profile_file(tmp_path):
    conf = shutil.copytree(ROOT / "conf", tmp_path / "conf")
    with open(conf / "profile/ci.yaml", "a") as fh:
        fh.write("  n_problems: 3\n")  # under the last section of ci.yaml
    with pytest.raises(C.ConfigError, match=r"n_problems: unknown key"):
        C.write_params("ci", out=tmp_path / "params.yaml", conf=conf)
    assert not (tmp_path / "params.yaml").exists()  # nothing written


def test_unknown_key_by_override(tmp_path):
    with pytest.raises(C.ConfigError, match=r"masks.alpah"):
        C.write_params("ci", ["masks.alpah=1"], out=tmp_path / "params.yaml")


def test_missing_key(tmp_path):
    assert "masks.tau: missing key" in bad(tmp_path, lambda r: r["masks"].pop("tau"))
    assert "metrics: missing key" in bad(tmp_path, lambda r: r.pop("metrics"))


def test_a_key_added_later_reads_as_its_old_behaviour_when_absent(tmp_path):
    # masks.readout came after results were exported: a file without it means logit > 0, and
    # hashes as it did (committed results stay checkable); another value changes the hash
    raw = copy.deepcopy(RAW)
    raw["masks"].pop("readout")
    old = C.load(write(tmp_path, raw))
    assert old.masks.readout == 0.0
    assert C.config_hash(old) == C.config_hash(C.load(write(tmp_path, RAW)))
    raw["masks"]["readout"] = -3.0
    assert C.config_hash(C.load(write(tmp_path, raw))) != C.config_hash(old)


def test_wrong_types(tmp_path):
    msg = bad(tmp_path, lambda r: r["train"].update(batch_size="32"))
    assert "train.batch_size: expected an integer, got '32'" in msg
    msg = bad(tmp_path, lambda r: r["masks"].update(seeds=3))
    assert "masks.seeds: expected a list of integers, got 3" in msg
    msg = bad(tmp_path, lambda r: r["data"].update(workers=True))
    assert "data.workers: expected an integer, got True" in msg


@pytest.mark.parametrize(
    "section,key,value,expected",
    [
        ("data", "n_per_config", -5, "data.n_per_config: expected an integer >= 10, got -5"),
        ("data", "image_size", 81, "data.image_size: expected a multiple of 16, got 81"),
        ("data", "image_size", -16, "data.image_size: expected an integer > 0, got -16"),
        ("masks", "alpha", 0.0, "masks.alpha: expected a number > 0, got 0.0"),
        ("masks", "alpha", -1e-5, "masks.alpha: expected a number > 0, got -1e-05"),
        ("masks", "steps", 0, "masks.steps: expected an integer > 0, got 0"),
        ("train", "milestones", [50, 100], "train.milestones[1]: expected a number > 0 and < 100, got 100"),
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
    msg = bad(tmp_path, lambda r: r[section].update({key: value}))
    assert expected in msg, msg
    assert str(tmp_path / "params.yaml") in msg  # the file is named too


# `.inf` learning rates trained to NaN weights, `init: .nan` gave an empty mask
@pytest.mark.parametrize(
    "section,key,text",
    [("train", "lr", ".inf"), ("train", "weight_decay", ".inf"), ("masks", "tau", ".inf"),
     ("masks", "init", ".nan"), ("masks", "lr", "-.inf"), ("masks", "alpha", "'inf'"),
     ("metrics", "ci", ".nan"), ("masks", "alpha_sweep", "[1.0e-5, .nan]")],
)
def test_non_finite_numbers_are_rejected(tmp_path, section, key, text):
    raw = copy.deepcopy(RAW)
    raw[section][key] = yaml.safe_load(text)
    with pytest.raises(C.ConfigError) as err:
        C.load(write(tmp_path, raw))
    msg = str(err.value)
    assert f"{section}.{key}" in msg and "expected a finite number" in msg, msg


def test_non_finite_by_override_is_rejected_before_writing(tmp_path):
    out = tmp_path / "params.yaml"
    with pytest.raises(C.ConfigError, match=r"train.lr(\[\d\])?: expected a finite number"):
        C.write_params("ci", ["train.lr=inf"], out=out)
    assert not out.exists()


def test_float_written_without_dot(tmp_path):
    # PyYAML reads `1e-5` as a string; accept it as the number it means.
    raw = copy.deepcopy(RAW)
    raw["masks"]["alpha"] = "1e-5"
    assert C.load(write(tmp_path, raw)).masks.alpha == 1e-5
    assert math.isfinite(C.load(write(tmp_path, raw)).masks.alpha)


def test_missing_file(tmp_path):
    with pytest.raises(C.ConfigError, match="nope.yaml: file not found"):
        C.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize("content", [bytes(range(256)), b"\x89PNG\r\n\x1a\n\x00\x00",
                                     b"seed: 0\x00\x00", os.urandom(64) + b"\xff"])
def test_binary_params_file(tmp_path, content):
    p = tmp_path / "params.yaml"
    p.write_bytes(content)
    with pytest.raises(C.ConfigError) as err:
        C.load(p)
    assert str(err.value).startswith(f"{p}: not a text file"), err.value


def test_invalid_yaml_and_non_mapping(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("profile: [unclosed\n")
    with pytest.raises(C.ConfigError, match="params.yaml: not valid YAML"):
        C.load(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(C.ConfigError, match="params.yaml: expected a mapping of parameters"):
        C.load(p)


def test_a_directory_as_params(tmp_path):
    with pytest.raises(C.ConfigError, match="cannot read"):
        C.load(tmp_path)


def test_write_params_reports_changes_and_keeps_bytes(tmp_path):
    out = tmp_path / "params.yaml"
    assert C.write_params("ci", out=out)  # new file: every key reported
    mtime = out.stat().st_mtime_ns
    assert C.write_params("ci", out=out) == []
    assert out.stat().st_mtime_ns == mtime  # unchanged content: file untouched
    changed = C.write_params("ci", ["masks.steps=7"], out=out)
    assert changed == ["masks.steps: 20 -> 7"]
    assert C.load(out).masks.steps == 7


def test_load_with_another_profile_composes_it(tmp_path):
    out = tmp_path / "params.yaml"
    C.write_params("ci", ["masks.steps=7"], out=out)
    assert C.load(out, "ci").masks.steps == 7  # the file holds ci: used as it is
    assert C.load(out, "default") == C.load(ROOT / "params.yaml", "default")


def test_alpha_label():
    assert C.alpha_label(1e-5) == "1e-5"
    assert C.alpha_label(2.2e-6) == "2p2e-6"
    assert C.alpha_label(0.5) == "5e-1"


def test_cli(tmp_path, capsys):
    out = tmp_path / "params.yaml"
    assert C.main(["compose", "--profile", "ci", "--out", str(out), "masks.steps=9"]) == 0
    assert "profile ci, config hash" in capsys.readouterr().out
    assert C.main(["show", "--params", str(out)]) == 0
    assert "steps: 9" in capsys.readouterr().out
    raw = copy.deepcopy(RAW)
    raw["data"]["image_size"] = 100
    assert C.main(["show", "--params", str(write(tmp_path, raw))]) == 2
    assert "data.image_size: expected a multiple of 16" in capsys.readouterr().err
    assert C.main(["compose", "--out", str(out), "data.image_size=100"]) == 2
    assert "data.image_size: expected a multiple of 16" in capsys.readouterr().err


# --------------------------------------------------------------------------- plausible ranges


@pytest.mark.parametrize("override, key", [("masks.alpha=1e30", "masks.alpha"),
                                           ("masks.lr=1e300", "masks.lr"),
                                           ("train.lr=5", "train.lr"),
                                           ("masks.init=1e9", "masks.init"),
                                           ("masks.alpha_sweep=[1e-5,1e10]", "masks.alpha_sweep")])
def test_values_outside_their_plausible_range_are_refused_up_front(tmp_path, override, key):
    """A setting far outside its documented range (which training would read as a flat,
    'converged' run, or overflow on) stops before anything runs, naming the key; params.yaml
    is left as it was."""
    out = tmp_path / "params.yaml"
    out.write_text("untouched\n")
    with pytest.raises(C.ConfigError, match=rf"outside the plausible range .* of {key}"):
        C.write_params("ci", [override], out)
    assert out.read_text() == "untouched\n"
    assert C.main(["compose", "--profile", "ci", "--out", str(out), override]) == 2
    assert out.read_text() == "untouched\n"


def test_every_numeric_setting_has_a_plausible_range_holding_every_profile():
    fields = _fields_by_path()
    numeric = [k for k, (tp, _) in fields.items()
               if tp in (int, float, list[int], list[float]) and k != "outside_range"]

    def ranged(meta):  # a documented range, or hard bounds on both sides
        return "plausible" in meta or ({"gt", "ge"} & set(meta) and {"lt", "le"} & set(meta))

    assert numeric and not [k for k in numeric if not ranged(fields[k][1])]
    for profile in C.PROFILES:  # the committed profiles are inside their ranges
        C.check_ranges(C.from_dict(C.compose(profile)))


def test_outside_range_is_an_explicit_override(tmp_path):
    raw = C.compose("ci", ["masks.alpha=2"])
    with pytest.raises(C.ConfigError, match="masks.alpha"):
        C.from_dict(raw)
    cfg = C.from_dict({**raw, "outside_range": ["masks.alpha"]})
    assert cfg.masks.alpha == 2.0
    # Hydra's syntax for it, as `make repro SET=...` passes it
    cfg = C.from_dict(C.compose("ci", ["masks.alpha=2", "+outside_range=[masks.alpha]"]))
    assert cfg.masks.alpha == 2.0 and cfg.outside_range == ["masks.alpha"]
    # the hard bounds still hold, and only known numeric keys may be listed
    with pytest.raises(C.ConfigError, match=r"masks.alpha: expected a number > 0"):
        C.from_dict({**C.compose("ci", ["masks.alpha=-1"]), "outside_range": ["masks.alpha"]})
    with pytest.raises(C.ConfigError, match=r"outside_range: 'masks.alfa' is not a numeric"):
        C.from_dict({**raw, "outside_range": ["masks.alfa"]})
    # absent (the normal case) leaves the configuration hash of existing results unchanged
    plain = C.from_dict(C.compose("ci"))
    assert "outside_range" not in C.compose("ci")
    assert C.config_hash(plain) == C.config_hash(
        {k: v for k, v in plain.to_dict().items() if k != "outside_range"})


def test_check_field_is_the_settings_path_for_one_value():
    assert C.check_field("masks.lr", 0.05, "--lr") == 0.05
    for value, msg in ((float("inf"), "finite"), (float("nan"), "finite"), (-5.0, "> 0"),
                       (1e300, "plausible range")):
        with pytest.raises(C.ConfigError, match=rf"--lr.*{msg}"):
            C.check_field("masks.lr", value, "--lr")
    assert C.check_field("masks.lr", 50.0, "--lr", allowed=["masks.lr"]) == 50.0


# --------------------------------------------------------------------------- duplicate keys


def test_duplicate_key_in_a_params_file_is_one_error(tmp_path):
    text = C.compose_text("ci")
    p = tmp_path / "params.yaml"
    p.write_text(text.replace("masks:\n", "masks:\n  lr: 0.5\n", 1))
    with pytest.raises(C.ConfigError, match=rf"{p}: duplicate key 'masks.lr' at line \d+ "
                                            r"\(first at line \d+\)"):
        C.load(p)
    top = tmp_path / "top.yaml"
    top.write_text(text + "seed: 3\n")
    with pytest.raises(C.ConfigError, match=rf"{top}: duplicate key 'seed'"):
        C.load(top)


def test_duplicate_key_in_conf_is_one_error(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    ci = conf / "profile" / "ci.yaml"
    ci.write_text(ci.read_text().replace("masks:\n", "masks:\n  steps: 7\n", 1))
    with pytest.raises(C.ConfigError, match=rf"{ci}: duplicate key 'masks.steps'"):
        C.compose_text("ci", conf=conf)


@pytest.mark.parametrize("section, values, expected", [
    ("train", {"val_min_every": 50, "val_every": 10},
     r"train\.val_min_every \(50\) must not exceed train\.val_every \(10\)"),
    ("train", {"batch_size": 30, "nproc": 4},
     r"train\.batch_size \(30\) must be divisible by train\.nproc \(4\)"),
    ("masks", {"batch_size": 4, "n_samples": 8},
     r"masks\.batch_size \(4\) must be >= masks\.n_samples \(8\)"),
    ("masks", {"tasks": ["circle"], "tasks_early": ["square"]},
     r"masks\.tasks_early: 'square' is not in masks\.tasks \['circle'\]"),
    ("masks", {"families": ["original"], "complement_masks": ["nonsense"]},
     r"masks\.complement_masks\[0\]: expected one of original, shape_rule, control"),
])
def test_cross_key_checks_run_when_the_config_is_built(tmp_path, section, values, expected):
    msg = bad(tmp_path, lambda raw: raw[section].update(values))
    assert re.search(expected, msg), msg


def test_every_family_selects_a_task_of_any_shape_list():
    # why no check "masks.tasks selects no task of masks.families" exists: it cannot happen
    from core.tasks import FAMILIES, SHAPES, selects
    assert selects(FAMILIES["control"], ["circle"]) == ("color_rule", "size_rule")  # no shape
    assert selects(FAMILIES["shape_rule"], ["circle"]) == ("rule_circle",)
    assert all(selects(fam, [s]) for fam in FAMILIES.values() for s in SHAPES)


def test_settings_derived_in_code_are_checked_too():
    import dataclasses
    cfg = C.from_dict(copy.deepcopy(RAW))
    with pytest.raises(C.ConfigError, match=r"masks\.batch_size \(8\) must be >= masks\.n_samples"):
        dataclasses.replace(cfg.masks, batch_size=8, n_samples=9)
    with pytest.raises(C.ConfigError, match=r"train\.val_min_every \(9\) must not exceed"):
        dataclasses.replace(cfg.train, val_min_every=9, val_every=8)
