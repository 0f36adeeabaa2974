"""``python -m core.sweep``: the command line (:mod:`core.sweep.cli`)."""

from core.sweep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
