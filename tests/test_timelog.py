"""benchmarks.timelog: the pipeline log gets every progress-bar update as its own line."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_carriage_returns_become_timestamped_lines(tmp_path):
    log = tmp_path / "repro.log"
    text = "Running stage 'train':\nbar 1%\rbar 2%\rbar 3%\n\nRunning stage 'masks':\n"
    r = subprocess.run([sys.executable, "-m", "benchmarks.timelog", str(log)],
                       input=text.encode(), capture_output=True, cwd=ROOT, check=True)
    assert r.stdout == text.encode()  # the terminal sees the stream unchanged
    lines = [line.split("\t", 1) for line in log.read_text().splitlines()]
    assert [t for _, t in lines] == ["Running stage 'train':", "bar 1%", "bar 2%", "bar 3%",
                                     "Running stage 'masks':", "# end"]
    assert all(float(s) >= 0 for s, _ in lines)


def test_stage_times_from_one_or_several_logs(tmp_path):
    from core.results import stage_times

    first = tmp_path / "first.log"  # an earlier run: every stage ran
    first.write_text("1.0\tRunning stage 'data':\n100.0\tRunning stage 'train':\n"
                     "700.0\tRunning stage 'masks@0':\n1000.0\tUpdating lock file 'dvc.lock'\n"
                     "1001.0\t# end\n")
    second = tmp_path / "second.log"  # data and train cached (skipped), masks ran again
    second.write_text("0.5\tStage 'data' didn't change, skipping\n"
                      "0.6\tStage 'train' didn't change, skipping\n"
                      "1.0\tRunning stage 'masks@0':\nprogress\n400.0\tRunning stage 'metrics':\n"
                      "430.0\tUse `dvc push` to send your updates to remote storage.\n")
    assert stage_times(first) == {"data": 99.0, "train": 600.0, "masks@0": 300.0}
    assert stage_times(second) == {"masks@0": 399.0, "metrics": 30.0}
    # export with both logs: each stage's time from the last log in which it ran
    import json

    from core.results import STAGE_TIMES, export
    ci = Path(__file__).resolve().parents[1] / "results" / "ci"
    out = export(ci / "params.yaml", ci / "metrics", ci / "raven", tmp_path / "r",
                 timing=[first, second], check_commit=False)
    assert json.loads((out / STAGE_TIMES).read_text()) == \
        {"data": 99.0, "train": 600.0, "masks@0": 399.0, "metrics": 30.0}
