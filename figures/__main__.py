"""``python -m figures [NAME ...] [--metrics DIR] [--raven DIR] [--out DIR] [--list]``.

Rebuilds the figures of the study from the metric netCDF files (and, for the example problems,
the generated problem files) alone: a PNG (README) and a PDF (paper) per figure, byte-stable.
"""

from __future__ import annotations

import argparse
import sys
import time

from core.config import ConfigError, load
from figures import FAMILIES, build
from figures.style import FigureError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m figures", description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help="figure families to build (default: all; see --list)")
    ap.add_argument("--list", action="store_true", help="name the figure families and exit")
    ap.add_argument("--metrics", "--data", dest="metrics", default="data/metrics",
                    help="folder of the metric files (core.metrics: *.nc, summary.json)")
    ap.add_argument("--raven", default="data/raven", help="generated problems (core.raven)")
    ap.add_argument("--out", default="data/figures", help="output folder")
    ap.add_argument("--params", default="params.yaml",
                    help="parameters the metrics were made with (their config hash)")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args(argv)
    if args.list:
        for name, mod in FAMILIES.items():
            print(f"{name:18s} {', '.join(mod.OUTPUTS)}  <- {', '.join(mod.NEEDS)}")
        return 0
    unknown = [n for n in args.names if n not in FAMILIES]
    if unknown:
        print(f"error: unknown figure {unknown[0]!r} (expected one of {', '.join(FAMILIES)})",
              file=sys.stderr)
        return 2
    try:
        cfg = load(args.params, args.profile)
        t0 = time.perf_counter()
        paths = build(args.names or list(FAMILIES), args.metrics, args.raven, args.out, cfg)
    except (FigureError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(paths)} files ({len(paths) // 2} figures) in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
