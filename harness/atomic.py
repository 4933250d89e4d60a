"""Crash-safe file writes: temporary file, flush + fsync, rename; folders and temporary folders.

A reader never sees a half-written file; a crash leaves either the old version or the new one.
Every write the harness makes goes through here, so that a failing file system (no space, a
read-only mount, no permission, a file where a folder must be) is one `StorageError` naming the
path, raised before anything is replaced: earlier files are left intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from harness.errors import RunLockedError, StorageError, note_work_folder
from harness.faults import fail_point, kill_point

INTACT = "earlier results are intact"
_HINTS = {
    errno.ENOSPC: f"free space or fix permissions, then run the same command again; {INTACT}",
    errno.EDQUOT: f"free space (disk quota exceeded), then run the same command again; {INTACT}",
    errno.EROFS: f"the file system is mounted read-only: choose a writable output folder (--out); {INTACT}",
    errno.EACCES: f"fix the folder's permissions or choose another output folder (--out); {INTACT}",
    errno.EPERM: f"fix the folder's permissions or choose another output folder (--out); {INTACT}",
    errno.ENAMETOOLONG: "choose a shorter output folder or run name",
}


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists and is not a folder (it blocks a mkdir)."""
    for p in (path, *path.parents):
        if p.is_symlink() and not p.exists():
            return p  # a dangling link: nothing can be created through it
        if p.exists():
            return None if p.is_dir() else p
    return None


def storage_error(e: OSError, path: str | Path, action: str = "write", folder: bool = False) -> StorageError:
    """A failed file-system call on ``path`` (a ``folder`` to create, or a file) as one line: what, why, what to do."""
    path = Path(path)
    blocker = _file_in_the_way(path if folder else path.parent)
    if blocker is not None and e.errno in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT):
        return StorageError(
            f"could not {action} {path}: {blocker} is a file, not a folder",
            f"choose a path whose folders are folders or do not exist yet (--out, --name); {INTACT}",
        )
    if e.errno == errno.EISDIR:
        return StorageError(f"could not {action} {path}: it is a folder", f"choose a file name, not a folder; {INTACT}")
    reason = e.strerror or str(e)
    return StorageError(f"could not {action} {path}: {reason}", _HINTS.get(e.errno or 0, f"check the path; {INTACT}"))


def ensure_dir(path: str | Path) -> Path:
    """``mkdir -p path``; a failure (a file in the way, read-only, no space) is a `StorageError`."""
    path = Path(path)
    try:
        if not path.is_dir():
            fail_point(f"mkdir:{path.name}", path)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(e, path, "create the folder", folder=True) from e
    return path


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(fileobj)`` atomically."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fail_point(f"tmpfile:{path.name}", path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise storage_error(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        kill_point(f"write:{path.name}")
        os.replace(tmp, path)
    except OSError as e:
        _cleanup(tmp)
        raise storage_error(e, path) from e
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


def append_text(path: str | Path, text: str) -> None:
    """Append to a file another program owns (``$GITHUB_STEP_SUMMARY``): not atomic, but errors are one line."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise storage_error(e, path, "append to") from e


@contextlib.contextmanager
def temporary_directory(prefix: str) -> Iterator[Path]:
    """A fresh folder under the system's temporary folder (``$TMPDIR``), removed afterwards.

    Failing to create it (no space, read-only) is a `StorageError` that says where and how to move it.
    """
    base = tempfile.gettempdir()
    try:
        fail_point("tmpdir", base)
        tmp = tempfile.mkdtemp(prefix=prefix)
    except OSError as e:
        err = storage_error(e, Path(base) / f"{prefix}*", "create a temporary folder", folder=True)
        raise StorageError(err.what, "free space there, or point TMPDIR at a writable folder with space") from e
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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

    The kernel drops the lock when the process dies, so a killed run never leaves a stale lock. An
    unexpected exception raised while the lock is held is tagged with the lock's folder (the run
    folder), where the CLI then writes its traceback log.
    """
    path = Path(path)
    ensure_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise storage_error(e, path, "create the lock file") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(what, "wait for the other process to finish, or choose another --name/--out") from None
        try:
            yield
        except Exception as e:
            note_work_folder(e, path.parent)
            raise
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
