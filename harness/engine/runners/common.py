"""Record columns every kind of entry writes: status, margin, prediction, tie (harness.records.schema)."""

from __future__ import annotations

import numpy as np

from harness.records import schema as col


def verdict_columns(k: int, n: int) -> dict[str, np.ndarray]:
    """Entry k's status (-1: not run), margin (NaN), prediction (-1) and tie flag (0) for ``n`` samples."""
    return {
        col.status(k): np.full(n, -1, np.int8),
        col.margin(k): np.full(n, np.nan, np.float32),
        col.pred(k): np.full(n, -1, np.int16),
        col.tie(k): np.zeros(n, np.int8),  # 1: the verdict rests on a float-level tie (harness/ties.py)
    }


def calibration_column(k: int, n: int, width: int) -> dict[str, np.ndarray]:
    """Entry k's calibration statistics at its inputs (NaN where it did not run)."""
    return {col.calib(k): np.full((n, width), np.nan, np.float32)}
