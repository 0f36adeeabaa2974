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

CONVENTIONS = "CF-1.10"
