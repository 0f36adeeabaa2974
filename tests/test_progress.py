"""Progress bars (core.progress and its users): one readable line per refresh in a log, the
environment's tqdm settings obeyed, totals that are the real bounds."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from core import progress

ROOT = Path(__file__).resolve().parents[1]


def test_a_log_gets_one_whole_line_per_refresh_whatever_the_position():
    buf = io.StringIO()
    out = progress.LogLines(buf)
    from tqdm import tqdm

    with tqdm(total=4, desc="train scl net1", position=1, file=out, mininterval=0,
              miniters=1) as bar:
        for _ in range(4):
            bar.update(1)
    text = buf.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("train scl net1:") for line in lines)
    assert "4/4" in lines[-1]


def obeyed(env: dict[str, str], code: str) -> str:
    """``code``'s output in a fresh interpreter with ``env`` (tqdm reads TQDM_* at import)."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    return subprocess.run([sys.executable, "-c", "from core import progress\n" + code],
                          env={**clean, **env}, cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_environment_settings_are_obeyed():
    # tqdm reads TQDM_* itself, but only for arguments the code does not pass
    show = "b = progress.bar(total=1); print(b.mininterval, abs(b.pos), b.disable); b.close()"
    assert obeyed({"TQDM_MININTERVAL": "7.5", "TQDM_POSITION": "3"}, show) == "7.5 3 False"
    assert obeyed({}, show) == f"{progress.LOG_MININTERVAL} 0 False"  # a log: every 10 s
    assert obeyed({"TQDM_DISABLE": "1"}, "print(progress.bar(total=1).disable)") == "True"


def test_no_bar_argument_tqdm_reads_from_the_environment_is_hard_coded():
    for path in (ROOT / "core").rglob("*.py"):
        for arg in ("mininterval", "maxinterval", "miniters", "ncols", "file=sys.stderr"):
            hits = [n for n, line in enumerate(path.read_text().splitlines(), 1)
                    if re.search(rf"\b{re.escape(arg)}\s*=", line) and "tqdm(" in line]
            assert not hits, f"{path}:{hits}: {arg} hard-coded in a tqdm call"
    assert "mininterval=2.0" not in (ROOT / "core" / "train" / "loop.py").read_text()


def test_training_bar_counts_to_the_bound_says_so_and_never_runs_backwards(tmp_path, monkeypatch):
    # the total is the real bound (train.epochs), the ETA labelled as a bound; the replay of a
    # milestone jump moves the bar back without a negative rate (the ETA does not jump)
    import warnings

    from test_train import cfg_of, fake_splits, jump

    from core import train as T
    from core.train import loop

    buf = io.StringIO()
    monkeypatch.setattr(progress, "stream", lambda: progress.LogLines(buf))
    cfg = cfg_of(epochs=20, milestones=[50, 70], val_min_every=10, val_every=10)
    splits = fake_splits((16, 16, 16))
    run = T.setup_run(cfg, 0, splits, T.Process(__import__("torch").device("cpu"), "fp32"))
    st = T.start(run, tmp_path, tmp_path / "state")
    seen = []
    real = loop.progress_bar

    def spy(**kw):
        bar = real(**kw, mininterval=0, miniters=1)  # every refresh shown
        seen.append(bar)
        return bar

    monkeypatch.setattr(loop, "progress_bar", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T.train_loop(run, st, splits.train, jump, tmp_path / "state", progress=True)
    assert seen[0].total == run.total == 40  # 20 epochs x 2 steps: the bound, not step 17
    lines = buf.getvalue().splitlines()
    assert all("(the train.epochs bound)" in line for line in lines if "/40" in line)
    assert "milestones 2/2" in lines[-1] and "17/40" in lines[-1]
    assert "milestones 0/2, next 50%" in lines[0]
    rates = [float(m.group(1)) for line in lines
             if (m := re.search(r"([-\d.]+)(?:s/step|step/s)", line))]
    assert rates and min(rates) >= 0, "a negative rate (the bar ran backwards)"


def test_train_all_gives_each_running_network_its_own_line(tmp_path, monkeypatch):
    from test_train import cfg_of

    from core import train as T
    from core.train import entry

    envs = {}

    class Done:
        returncode = 0

        def __init__(self, cmd, env):
            envs[cmd[cmd.index("--net") + 1]] = env["TQDM_POSITION"]

        def poll(self):
            return 0

    monkeypatch.setattr(entry.subprocess, "Popen", Done)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    cfg = cfg_of(networks=[0, 1, 2], jobs=2)
    assert T.train_all("p.yaml", None, cfg, "d", tmp_path / "o", tmp_path / "s") == 0
    assert envs == {"0": "0", "1": "1", "2": "0"}


@pytest.mark.parametrize("done_first", [False, True])
def test_mask_sweep_bars_count_masks_and_evaluation_parts(tmp_path, monkeypatch, done_first):
    from test_sweep import make_inputs, small_params

    from core import sweep
    from core.config import load
    from core.sweep import schedule

    train, data = make_inputs(tmp_path)
    cfg = load(small_params(tmp_path))
    out = tmp_path / "masks"
    if done_first:  # a finished sweep: nothing to train, every evals.nc up to date
        sweep.Sweep(cfg, 0, train, data, out, log=lambda m: None).run()
    bars = []
    real = schedule.progress_bar
    monkeypatch.setattr(schedule, "progress_bar", lambda **kw: bars.append(real(**kw)) or bars[-1])
    monkeypatch.setattr(progress, "stream", lambda: progress.LogLines(io.StringIO()))
    logs = []
    summary = sweep.Sweep(cfg, 0, train, data, out, log=logs.append).run(progress=True)
    masks, evals = bars
    n_parts = len({(r.checkpoint, r.family, r.seed) for r in sweep.plan(cfg)})
    assert masks.total == masks.n == summary["trained"] == (0 if done_first else 5)
    assert evals.total == evals.n == (0 if done_first else n_parts)
    assert not any(".pt:" in m for m in logs)  # the bar, not a line per mask
