"""``python -m core.config``: compose or show the parameters (:func:`core.config.load.main`)."""

from core.config.load import main

raise SystemExit(main())
