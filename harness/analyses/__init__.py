"""Analyses of a finished record (calibration, ...): pure functions of the record and the suite."""
