"""``python -m paper [build|table|readme] ...``: see :mod:`paper.build`."""

from paper.build import main

if __name__ == "__main__":
    raise SystemExit(main())
