"""``python -m core.metrics``: the metrics stage's command line (:func:`core.metrics.stage.main`)."""

from core.metrics.stage import main

if __name__ == "__main__":
    raise SystemExit(main())
