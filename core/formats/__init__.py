"""Every on-disk format of the study, one module each: its file name, its writer and its
reader (with one clear error naming the file), so that a stage reads other stages' files
through here and never through their modules.

==========================  ==========================  ===========================================
file                        module                      written by / read by
==========================  ==========================  ===========================================
``training.nc``             :mod:`core.formats.training`  ``core.train`` / ``core.metrics``, plots
``<ckpt>/<mask>.pt``        :mod:`core.formats.masks`     ``core.sweep``, control / metrics, readouts
``<ckpt>/evals.nc``         :mod:`core.formats.evals`     ``core.sweep`` / ``core.metrics``
``control.json``            :mod:`core.formats.control`   ``core.control`` / paper, plots, validate
metric files (``*.nc``)     :mod:`core.formats.metrics`   ``core.metrics`` / figures, paper, results
==========================  ==========================  ===========================================

Every netCDF file follows :data:`CONVENTIONS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.io import atomic_write_text

CONVENTIONS = "CF-1.10"


def write_json(path: str | Path, obj: dict[str, Any],
               default: Callable[[Any], Any] | None = None) -> None:
    """A JSON result file at ``path``, atomically: keys sorted, one space of indent."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=default) + "\n")


def read_json(path: str | Path, required: Sequence[str], error: type[Exception], what: str,
              how: str) -> dict[str, Any]:
    """A JSON result file holding the keys ``required``; one ``error`` naming the file and
    ``what`` it should be (a result of ``how``) otherwise."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
        for key in required:
            result[key]
    except FileNotFoundError:
        raise error(f"{path}: not found (run `{how}` first)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise error(f"{path}: not {what} ({err})") from None
    return result
