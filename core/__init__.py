"""modules-avr: functional modules of an abstract visual reasoning network (SCL).

Sub-modules: ``config`` (params.yaml profiles), ``io`` (atomic writes), ``raven`` (problem
generator), ``data`` (datasets), ``models`` (SCL and a baseline), ``train``, ``masking``
(generic differentiable weight masks), ``metrics`` (module metrics as netCDF).
"""

__version__ = "0.1.0"
