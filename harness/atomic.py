"""Crash-safe file writes: temporary file, flush + fsync, rename.

A reader never sees a half-written file; a crash leaves either the old version or the new one.
A failed write (no space, permissions) raises `StorageError` and leaves earlier files intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from harness.errors import RunLockedError, StorageError
from harness.faults import kill_point


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(fileobj)`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        kill_point(f"write:{path.name}")
        os.replace(tmp, path)
    except OSError as e:
        _cleanup(tmp)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM):
            raise StorageError(
                f"could not write {path}: {e.strerror}",
                "free space or fix permissions, then run the same command again; earlier results are intact",
            ) from e
        raise
    except BaseException:
        _cleanup(tmp)
        raise
    _fsync_dir(path.parent)


def _cleanup(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


@contextlib.contextmanager
def lock_file(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed); a second holder gets `RunLockedError`.

    The kernel drops the lock when the process dies, so a killed run never leaves a stale lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(what, "wait for the other process to finish, or choose another --name/--out") from None
        yield
    finally:
        os.close(fd)


def remove_stale_temps(directory: str | Path, names: list[str] | None = None) -> None:
    """Delete temporary files a killed `atomic_write` left in ``directory`` (call while holding its lock).

    With ``names``, only the temporaries of those target file names (other writers may share the folder).
    """
    d = Path(directory)
    if d.is_dir():
        for pattern in [f".{n}.*.tmp" for n in names] if names is not None else [".*.tmp"]:
            for p in d.glob(pattern):
                _cleanup(str(p))
