"""Compact encodings of a baseline's sample ids and per-sample bits (zlib + base64, bit-packed)."""

from __future__ import annotations

import base64
import zlib

import numpy as np

from harness.errors import DataError

IDS_ENCODING = "int64le-delta-zlib-base64"
BITS_ENCODING = "packbits-base64"
# ---- compact encodings ---------------------------------------------------------------------------


def pack_bits(bits: np.ndarray) -> str:
    """Booleans -> base64 of ``np.packbits`` (8 samples per byte, big-endian bit order)."""
    return base64.b64encode(np.packbits(np.asarray(bits, dtype=bool)).tobytes()).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """Inverse of `pack_bits` for ``n`` samples."""
    try:
        raw = np.frombuffer(base64.b64decode(text, validate=True), dtype=np.uint8)
    except (ValueError, TypeError) as e:
        raise DataError(f"baseline bits are not valid base64 ({e})", "re-create the baseline") from e
    if len(raw) != (n + 7) // 8:
        raise DataError(f"baseline bits hold {len(raw) * 8} samples, expected {n}", "re-create the baseline")
    return np.unpackbits(raw, count=n).astype(bool)


def encode_ids(ids: np.ndarray) -> str:
    """Sample ids -> base64(zlib(int64 little-endian first differences)); sorted ids compress well."""
    ids = np.asarray(ids, dtype=np.int64)
    deltas = np.diff(ids, prepend=np.int64(0)).astype("<i8")
    return base64.b64encode(zlib.compress(deltas.tobytes(), 9)).decode("ascii")


def decode_ids(text: str, n: int) -> np.ndarray:
    """Inverse of `encode_ids`."""
    stream = zlib.decompressobj()
    try:
        # At most the n ids promised (plus a byte to notice more): a small zlib bomb allocates nothing.
        raw = stream.decompress(base64.b64decode(text, validate=True), 8 * n + 1)
    except (ValueError, TypeError, zlib.error) as e:
        raise DataError(f"baseline sample ids are not valid ({e})", "re-create the baseline") from e
    if len(raw) != 8 * n or not stream.eof:
        what = "more" if len(raw) > 8 * n else f"{len(raw) // 8}" if stream.eof else "a truncated stream of"
        raise DataError(f"baseline holds {what} sample ids, expected {n}", "re-create the baseline")
    return np.cumsum(np.frombuffer(raw, dtype="<i8")).astype(np.int64)
