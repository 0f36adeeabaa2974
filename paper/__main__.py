"""``python -m paper`` (from the repository root): the paper stage, same as
``python -m figures.paper`` (numbers.tex from the metric files, then latexmk)."""

from figures.paper import main

if __name__ == "__main__":
    raise SystemExit(main())
