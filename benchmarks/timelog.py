"""Copy stdin to stdout, and to a log file with the seconds since start before each line.

``make repro`` pipes ``dvc repro`` through this so that ``benchmarks/pipeline.py`` can report
each stage's wall time (from one "Running stage" line to the next) without timing code in the
stages themselves, whose outputs must stay byte-identical.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: ... | python -m benchmarks.timelog LOGFILE", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    # newline="": a line also ends at a lone "\r", so the progress bars of the stages (tqdm
    # rewrites its line with "\r" when the output is not a terminal) reach the log as they
    # happen, one timestamped line per update, instead of at the next "\n"
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="")
    with path.open("w") as log:
        for line in stdin:
            sys.stdout.write(line)
            sys.stdout.flush()
            text = line.rstrip("\r\n")
            if text.strip():
                log.write(f"{time.monotonic() - t0:.2f}\t{text}\n")
                log.flush()
        log.write(f"{time.monotonic() - t0:.2f}\t# end\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
