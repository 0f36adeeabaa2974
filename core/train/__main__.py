"""``python -m core.train``: the command line of :mod:`core.train.entry`."""

from core.train.entry import main

if __name__ == "__main__":
    raise SystemExit(main())
