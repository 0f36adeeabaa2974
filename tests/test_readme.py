"""README.md on one screen first, and its generated parts (and results/control/README.md) are
what `python -m paper readme` makes from the committed results."""

import json
import shutil
from pathlib import Path

import pytest

from paper import numbers
from paper.build import COMMANDS_BEGIN, COMMANDS_END, README_BEGIN, README_END
from paper.build import main as paper_main

ROOT = Path(__file__).resolve().parents[1]
SCREEN = 60  # lines: the first screen


def test_first_screen_has_commands_times_reviewer_path_and_finding():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:SCREEN])
    times = json.loads((ROOT / "results/test_times.json").read_text())
    stages = json.loads((ROOT / "results/default/stage_times.json").read_text())
    block = head.split(COMMANDS_BEGIN, 1)[1].split(COMMANDS_END, 1)[0]
    assert block == "\n" + numbers.commands_markdown(stages, times)
    assert "make figures" in head and "about a minute" in head
    assert "**What it found**" in head and "## What this is" in head
    assert "| checkpoint | val / test acc. (%) |" in head  # the one results table


def regenerate(tmp_path):
    """`make readme` on a copy of README.md, results/control and results/test_times.json."""
    readme = tmp_path / "README.md"
    shutil.copyfile(ROOT / "README.md", readme)
    control = tmp_path / "control"
    shutil.copytree(ROOT / "results/control", control)
    results = ROOT / "results/default"
    rc = paper_main(["readme", "--params", str(results / "params.yaml"), "--metrics",
                     str(results / "metrics"), "--readme", str(readme), "--control",
                     str(control), "--test-times", str(ROOT / "results/test_times.json")])
    assert rc == 0
    return readme, control / "README.md"


def test_generated_parts_are_up_to_date(tmp_path):
    readme, control = regenerate(tmp_path)
    assert readme.read_text() == (ROOT / "README.md").read_text(), "run `make readme`"
    assert control.read_text() == (ROOT / "results/control/README.md").read_text(), \
        "run `make readme`"


def test_commands_block_needs_its_measurements(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{COMMANDS_BEGIN}\n{COMMANDS_END}\n{README_BEGIN}\n{README_END}\n")
    results = ROOT / "results/default"
    rc = paper_main(["readme", "--params", str(results / "params.yaml"), "--metrics",
                     str(results / "metrics"), "--readme", str(readme),
                     "--test-times", str(tmp_path / "missing.json")])
    assert rc == 2 and "missing.json" in capsys.readouterr().err


def test_commands_and_finding_from_the_numbers():
    stages = {"data": 60.0, "train": 600.0, "masks@0": 540.0}
    times = {"suite_s": 420.0, "fast_s": 90.0, "how": "somewhere"}
    text = numbers.commands_markdown(stages, times)
    assert "make repro   # the whole study, default profile: ~20 min" in text
    assert "make test    # the test suite: ~7.0 min (make test-fast: ~1.5 min)" in text
    assert "20.0 min of stages" in text and "1.5 min of CPU time" in text
    summary = {"trends": {"original": {
        "sparsity": {"verdict": "not reproduced"},
        "dispersity": {"verdict": "reproduced (rises)"},
        "dispersity_norm": {"verdict": "not reproduced"}}}, "checkpoints": {}}
    fails = {"verdict": {"passes": False}}
    found = numbers.finding_markdown(summary, [fails, {"verdict": {"passes": True}}])
    assert ("task family: sparsity and random-normalised dispersity not reproduced; "
            "dispersity reproduced;") in found
    assert "fail the composite positive control (longer mask runs pass it)" in found
    assert "pass the composite" in numbers.finding_markdown(summary, [{"verdict": {
        "passes": True}}])
    assert "control" not in numbers.finding_markdown(summary)
    # with masks at a checkpoint: the shape modules' verdict, with how many converged
    ck = {"scl_80": {"families": {"original": {"runs": 18, "converged": 8, "iomin": {
        "verdict": "not distinct (cross-task overlap as high as the same-task overlap)"}}}}}
    shared = numbers.finding_markdown({**summary, "checkpoints": ck}, [{
        "verdict": {"passes": True}, "masks": {"steps": 5}}], {"steps": 5})
    assert "at SCL_80 the shape modules: shared modules shown (8 of 18 masks" in shared
    # a control run at other mask settings says nothing of these results' masks
    ran = {"verdict": {"passes": True}, "masks": {"steps": 2000, "lr": 0.05, "alpha": 1e-4}}
    other = numbers.finding_markdown(summary, [ran], {"steps": 200, "lr": 0.05, "alpha": 1e-5})
    assert "made at other mask settings than these results'" in other
    assert "pass the composite" in numbers.finding_markdown(
        summary, [ran], {"steps": 2000, "lr": 0.05, "alpha": 1e-4, "init": 2.0})


@pytest.mark.parametrize("name", ["README.md", "results/control/README.md", "docs/gpu.md"])
def test_generated_markdown_holds_no_hand_typed_control_or_device_tables(name):
    """Each generated part has one home: the control tables only in results/control/README.md,
    the GPU measurements only in docs/gpu.md."""
    text = (ROOT / name).read_text()
    assert ("| mask | seed | density (%)" in text) == (name == "results/control/README.md")
    assert ("<!-- device:" in text) == (name == "docs/gpu.md")


def test_record_times_sums_the_files_and_keeps_the_fast_run(tmp_path):
    from record_times import record

    def run(name, cpu, wall, tests):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"rc": 0, "cpu_s": cpu, "wall_s": wall, "tests": tests}))
        return path

    a = run("test_a", 10.0, 30.0, {"a::x": 8.0, "a::y": 1.0})
    b = run("test_b", 25.5, 60.0, {"b::z": 24.0})
    fast = run("fast", 12.0, 40.0, {"a::y": 1.0})
    out = record([a, b], fast, "here", "2026-12-07")
    assert (out["suite_s"], out["fast_s"], out["suite_wall_s"]) == (35.5, 12.0, 90.0)
    assert out["runs"] == {"test_a": 10.0, "test_b": 25.5}
    assert list(out["slowest"]) == ["b::z", "a::x", "a::y"]
    assert (out["suite_tests"], out["fast_tests"], out["how"]) == (3, 1, "here")
