"""The per-sample record, streamed to disk in self-verifying chunks.

A chunk covers a fixed range of dataset positions (``chunk_id * chunk_size ...``) and is written as
``chunk-XXXXXX.npz`` plus ``chunk-XXXXXX.json`` (rows, sha256 of the npz, config hash), both
atomically, the json last. A chunk counts as done only if its json exists, names the current config
and the npz matches its hash, so a torn write is recomputed, never read. Chunks are independent, so
resumed and sharded runs just fill in the missing ones; aggregates are computed by streaming over
chunks, never holding the whole record in memory.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from harness.atomic import sha256_bytes, write_bytes, write_json

RECORD_SCHEMA = 2  # 2: calibration columns (clean_cal, c{k}) and smoothing columns


class RecordStore:
    """Chunked per-sample record in ``directory`` for one evaluation config."""

    def __init__(self, directory: str | Path, config_hash: str, chunk_size: int, n_total: int) -> None:
        self.dir = Path(directory)
        self.config_hash = config_hash
        self.chunk_size = int(chunk_size)
        self.n_total = int(n_total)

    @property
    def n_chunks(self) -> int:
        return (self.n_total + self.chunk_size - 1) // self.chunk_size

    def chunk_range(self, cid: int) -> tuple[int, int]:
        s = cid * self.chunk_size
        return s, min(self.n_total, s + self.chunk_size)

    def _paths(self, cid: int) -> tuple[Path, Path]:
        return self.dir / f"chunk-{cid:06d}.npz", self.dir / f"chunk-{cid:06d}.json"

    def _meta(self, cid: int) -> dict | None:
        _, mp = self._paths(cid)
        try:
            meta = json.loads(mp.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return meta if isinstance(meta, dict) else None

    def is_done(self, cid: int) -> bool:
        """True when the chunk exists, belongs to this config and its bytes match the recorded hash."""
        meta = self._meta(cid)
        if not meta or meta.get("config_hash") != self.config_hash or meta.get("schema") != RECORD_SCHEMA:
            return False
        s, e = self.chunk_range(cid)
        if meta.get("rows") != e - s:
            return False
        dp, _ = self._paths(cid)
        try:
            data = dp.read_bytes()
        except OSError:
            return False
        return sha256_bytes(data) == meta.get("sha256")

    def foreign_chunks(self) -> list[Path]:
        """Chunk metadata written for a different config (a different model, suite, data or seed)."""
        out = []
        for mp in sorted(self.dir.glob("chunk-*.json")):
            try:
                meta = json.loads(mp.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(meta, dict) and meta.get("config_hash") not in (None, self.config_hash):
                out.append(mp)
        return out

    def missing(self, cids: list[int] | None = None) -> list[int]:
        return [c for c in (range(self.n_chunks) if cids is None else cids) if not self.is_done(c)]

    def write(self, cid: int, arrays: dict[str, np.ndarray]) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        dp, mp = self._paths(cid)
        write_bytes(dp, data)
        s, e = self.chunk_range(cid)
        write_json(
            mp,
            {
                "schema": RECORD_SCHEMA,
                "config_hash": self.config_hash,
                "rows": e - s,
                "start": s,
                "sha256": sha256_bytes(data),
            },
        )

    def read(self, cid: int) -> dict[str, np.ndarray]:
        return _load_npz(self._paths(cid)[0])

    def iter_chunks(self) -> Iterator[dict[str, np.ndarray]]:
        for cid in range(self.n_chunks):
            yield self.read(cid)

    def column(self, name: str) -> np.ndarray:
        """One column over all chunks (small: one value per sample)."""
        return np.concatenate([c[name] for c in self.iter_chunks()]) if self.n_chunks else np.zeros(0)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def chunk_files(directory: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Every chunk file in a record folder, by file name, columns as arrays (for comparing two records)."""
    return {p.name: _load_npz(p) for p in sorted(Path(directory).glob("chunk-*.npz"))}


def open_record(directory: str | Path) -> RecordStore:
    """Open a finished record from its ``index.json`` (written when an evaluation completes)."""
    d = Path(directory)
    idx = json.loads((d / "index.json").read_text())
    return RecordStore(d, idx["config_hash"], idx["chunk_size"], idx["n_total"])
