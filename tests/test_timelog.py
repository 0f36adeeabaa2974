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
