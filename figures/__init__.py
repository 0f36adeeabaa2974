"""Figures of the study, rebuilt from the metric netCDF files alone: ``python -m figures``."""
