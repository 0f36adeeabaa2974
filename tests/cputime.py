"""pytest plugin (not a test module): CPU seconds (self + waited-for children) per test and for
the whole session (interpreter start included) and the session's wall time, as JSON in
$CPU_TIMES_OUT. CPU time, unlike wall time, hardly depends on what else the machine runs; the
numbers behind ``results/test_times.json`` (``tests/record_times.py``):

    CPU_TIMES_OUT=build/times/test_X.json PYTHONPATH=tests python -m pytest -p cputime tests/test_X.py
"""
import json
import os
import resource
import time

import pytest

_times = {}
_start = time.monotonic()


def _cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t0 = _cpu()
    yield
    _times[item.nodeid] = round(_cpu() - t0, 2)


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("CPU_TIMES_OUT")
    if out:
        with open(out, "w") as f:
            json.dump({"rc": int(exitstatus), "cpu_s": round(_cpu(), 1),
                       "wall_s": round(time.monotonic() - _start, 1), "tests": _times}, f,
                      indent=0)
