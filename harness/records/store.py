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
import math
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from harness.atomic import sha256_bytes, write_bytes, write_json
from harness.errors import DataError
from harness.paths import safe_join
from harness.records.schema import RECORD_SCHEMA, check_schema

# What `harness evaluate --overwrite` moves aside (into REPLACED) before it writes a new evaluation,
# and deletes once the new one has finished: the engine's own outputs, nothing else in the folder.
RUN_OUTPUTS = ("result.json", "report.md", "records")
REPLACED = ".replaced"
RERUN = "run the same `harness evaluate` command again to recompute it"


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

    def check_schema(self) -> None:
        """Refuse (one clear line) a record whose chunks were written under another schema version."""
        for cid in range(self.n_chunks):
            meta = self._meta(cid)
            if meta is not None and meta.get("schema") != RECORD_SCHEMA:
                check_schema(meta.get("schema"), str(self._paths(cid)[1]))

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
        """One chunk's columns, its bytes checked against the sha256 in its metadata first."""
        dp, _ = self._paths(cid)
        meta = self._meta(cid)
        try:
            data = dp.read_bytes()
        except OSError as e:
            raise DataError(f"record chunk {dp} is missing or unreadable ({e.strerror or e})", RERUN) from None
        if meta is None or meta.get("config_hash") != self.config_hash or sha256_bytes(data) != meta.get("sha256"):
            raise DataError(
                f"record chunk {dp} is truncated, corrupt or from another evaluation (its bytes do not match "
                f"{dp.with_suffix('.json').name})",
                RERUN,
            )
        return _load_npz(io.BytesIO(data), dp)

    def iter_chunks(self) -> Iterator[dict[str, np.ndarray]]:
        for cid in range(self.n_chunks):
            yield self.read(cid)

    def column(self, name: str) -> np.ndarray:
        """One column over all chunks (small: one value per sample)."""
        return np.concatenate([c[name] for c in self.iter_chunks()]) if self.n_chunks else np.zeros(0)


def _load_npz(source: Path | io.BytesIO, where: Path | None = None) -> dict[str, np.ndarray]:
    try:
        with np.load(source, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DataError(f"record chunk {where or source} is not a readable .npz ({e})", RERUN) from None


def chunk_files(directory: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Every chunk file in a record folder, by file name, columns as arrays (for comparing two records)."""
    return {p.name: _load_npz(p) for p in sorted(Path(directory).glob("chunk-*.npz"))}


def read_index(directory: str | Path) -> dict[str, Any]:
    """A record's ``index.json``, its fields checked (types and ranges); `DataError` when it is not valid."""
    p = Path(directory) / "index.json"
    try:
        idx = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p} does not exist: the evaluation that writes this record did not finish", RERUN) from None
    except (OSError, ValueError, RecursionError) as e:
        raise DataError(f"{p} is not a readable record index ({type(e).__name__}: {e})", RERUN) from None
    problems = []
    if not isinstance(idx, dict):
        problems.append(f"it holds {type(idx).__name__}, not an object")
    else:
        if not isinstance(idx.get("config_hash"), str):
            problems.append("config_hash is not a string")
        for key, low in (("chunk_size", 1), ("n_total", 0)):
            v = idx.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                problems.append(f"{key} is {v!r}, not an integer >= {low}")
        entries = idx.get("entries", [])
        if not isinstance(entries, list) or not all(_valid_entry(e) for e in entries):
            problems.append(
                "entries is not a list of objects with a group and a kind (an attack's with a norm and an eps)"
            )
    if problems:
        raise DataError(f"{p} is not a valid record index: {'; '.join(problems)}", RERUN)
    return idx


def _valid_entry(e: Any) -> bool:
    """One entry of an index as `Entry.describe` writes it: what the readers of a record rely on."""
    if not isinstance(e, dict) or not isinstance(e.get("group"), str):
        return False
    if e.get("kind") in ("attack", "verify"):
        eps = e.get("eps")
        number = isinstance(eps, int | float) and not isinstance(eps, bool)
        return isinstance(e.get("norm"), str) and number and math.isfinite(eps) and eps >= 0
    if e.get("kind") == "radius":
        return isinstance(e.get("norm"), str)
    return e.get("kind") in ("corruption", "smoothing")


def open_record(directory: str | Path) -> RecordStore:
    """Open a finished record from its ``index.json`` (written when an evaluation completes)."""
    d = Path(directory)
    idx = read_index(d)
    return RecordStore(d, idx["config_hash"], idx["chunk_size"], idx["n_total"])


def result_config_hash(result_dict: dict[str, Any]) -> str | None:
    """The config hash a result.json says it was computed for (its record section, else its config)."""
    record, config = result_dict.get("record"), result_dict.get("config")
    h = (record.get("config_hash") if isinstance(record, dict) else None) or (
        config.get("config_hash") if isinstance(config, dict) else None
    )
    return h if isinstance(h, str) else None


def check_result_matches_record(run_dir: str | Path, record: dict[str, Any], config_hash: str | None) -> None:
    """A run's result.json must be the result of the record beside it; a `DataError` when it is not.

    Such a mismatch is what an interrupted ``--overwrite`` (or a hand-copied file) leaves: a
    result.json of one evaluation beside the record of another. Checked: the record's index names
    the same config hash and chunk count as result.json, and every chunk's metadata names that
    hash. A folder without a record (a result.json copied for reporting) is taken as it is.
    """

    d = Path(run_dir)
    rec = safe_join(d, str(record.get("path") or "records"), what="record folder in result.json")
    metas = sorted(rec.glob("chunk-*.json")) if rec.is_dir() else []
    if not metas and not (rec / "index.json").exists():
        return
    stale = f"{d / 'result.json'} is not the result of the record in {rec}"
    idx = read_index(rec)
    if config_hash is None or idx["config_hash"] != config_hash:
        raise DataError(
            f"{stale}: they were computed for different evaluations (config {config_hash} vs {idx['config_hash']})",
            "an evaluation into this folder was interrupted or the files were mixed; " + RERUN,
        )
    n_chunks = RecordStore(rec, idx["config_hash"], idx["chunk_size"], idx["n_total"]).n_chunks
    if record.get("chunks") is not None and record.get("chunks") != n_chunks:
        raise DataError(f"{stale}: it counts {record.get('chunks')} chunks, the record {n_chunks}", RERUN)
    for mp in metas:
        try:
            meta = json.loads(mp.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"record chunk metadata {mp} is unreadable ({type(e).__name__})", RERUN) from None
        if not isinstance(meta, dict) or meta.get("config_hash") != config_hash:
            raise DataError(f"{stale}: chunk {mp.name} belongs to another evaluation", RERUN)


def set_aside_outputs(run_dir: str | Path) -> None:
    """Move the engine's outputs of an earlier evaluation into ``run_dir/.replaced`` (one rename each).

    Called by ``--overwrite`` under the run lock, before anything new is written: until the new
    evaluation finishes (`drop_set_aside`), the old one is intact on disk and nothing reads it as
    current. A ``.replaced`` left by an earlier interrupted overwrite holds an even older,
    already superseded evaluation and is deleted first.
    """
    d = Path(run_dir)
    aside = d / REPLACED
    if aside.exists():
        shutil.rmtree(aside)
    aside.mkdir()
    for name in RUN_OUTPUTS:
        if (d / name).exists() or (d / name).is_symlink():
            os.replace(d / name, aside / name)
    _fsync(d)


def restore_set_aside(run_dir: str | Path) -> bool:
    """Move the set-aside evaluation back when the new one failed before writing anything.

    Returns whether it did: only when no new result.json and no new record chunk exist, so that
    an overwrite that fails at once (a model or data error) leaves the folder as it was, while
    one that got going keeps its chunks for the same command to resume.
    """
    d, aside = Path(run_dir), Path(run_dir) / REPLACED
    if not aside.is_dir() or (d / "result.json").exists() or any((d / "records").glob("chunk-*")):
        return False
    for name in RUN_OUTPUTS:
        if (aside / name).exists() or (aside / name).is_symlink():
            if (d / name).is_dir() and not (d / name).is_symlink():
                shutil.rmtree(d / name)  # an empty new record folder (temporary files at most)
            os.replace(aside / name, d / name)
    aside.rmdir()
    _fsync(d)
    return True


def drop_set_aside(run_dir: str | Path) -> None:
    """Delete what `set_aside_outputs` kept, once the new evaluation's result is written."""
    aside = Path(run_dir) / REPLACED
    if aside.exists():
        shutil.rmtree(aside, ignore_errors=True)


def _fsync(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
