"""Progress bars that read right on a terminal and in a log.

    from core.progress import bar
    with bar(total=120, desc="masks net0", unit="mask") as b: ...

:func:`bar` is ``tqdm`` with two choices made once for the whole project:

- On a terminal the bar is tqdm's own (one line, refreshed in place; several processes keep
  their own lines with ``TQDM_POSITION``, which tqdm reads from the environment). Anywhere
  else (``make repro``'s log, a papermill kernel, a pipe) every refresh is written as one whole
  line (:class:`LogLines`): no carriage returns or cursor moves, so two processes writing into
  one log give one readable line each per refresh instead of overwriting each other.
- tqdm's environment settings hold: nothing here passes an argument tqdm reads from a
  ``TQDM_*`` variable when that variable is set (``TQDM_MININTERVAL``, ``TQDM_POSITION``,
  ``TQDM_DISABLE``, ...). Unset, a log refreshes every :data:`LOG_MININTERVAL` seconds (a
  terminal: tqdm's default).

Bars go to the process's own stderr (``sys.__stderr__``): the terminal or the pipeline log,
not an executed notebook's output, so a stage's HTML report holds results, not refreshes.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, TextIO

from tqdm import tqdm  # tqdm.auto warns in papermill kernels (no ipywidgets)

LOG_MININTERVAL = 10.0  # seconds between lines in a log, unless TQDM_MININTERVAL says otherwise
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\r\n]")


class LogLines:
    """A text stream for tqdm that turns every refresh into one line of ``stream``."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        line = _CONTROL.sub("", text).rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def stream() -> TextIO | LogLines:
    """Where bars go: the process's stderr, wrapped in :class:`LogLines` unless a terminal."""
    err = sys.__stderr__ or sys.stderr
    return err if err.isatty() else LogLines(err)


def bar(**kwargs: Any) -> tqdm:
    """A tqdm bar on :func:`stream` (``kwargs``: tqdm's; see the module docstring)."""
    out = stream()
    if isinstance(out, LogLines) and "mininterval" not in kwargs \
            and "TQDM_MININTERVAL" not in os.environ:
        kwargs["mininterval"] = LOG_MININTERVAL
    return tqdm(file=out, **kwargs)
