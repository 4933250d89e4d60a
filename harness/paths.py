"""Paths built from values that are not literals, and the kinds of file the harness will open.

`safe_join` confines a path built from data (a dataset name, a run name, a path recorded in a
file) under a root: no absolute parts, no ``..``, no NUL, no separators inside a part, and no
symlink that leads out of the root. `regular_file` checks what a path is with ``stat`` before
anything opens it, so a named pipe, a device or a directory is refused instead of blocking a read
forever or failing deep inside a parser.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness.errors import DataError, UsageError


def safe_join(root: str | Path, *parts: str, what: str = "path") -> Path:
    """``root / part / ...``, refusing any part that could leave ``root``.

    Each part must be one non-empty path component: not absolute, not ``.`` or ``..``, without
    ``/``, ``\\`` or NUL. The joined path, with the symlinks that exist resolved, must stay inside
    the resolved root. Raises `UsageError` naming the offending value.
    """
    base = Path(root)
    for part in parts:
        text = str(part)
        bad = (
            not text
            or text in (".", "..")
            or "\0" in text
            or "/" in text
            or "\\" in text
            or os.path.isabs(text)
            or Path(text).drive
        )
        if bad:
            raise UsageError(
                f"{what} {text!r} is not a single folder or file name",
                f"names written under {base} must not be empty, '.', '..', absolute, or hold '/', '\\' or NUL",
            )
    joined = base.joinpath(*map(str, parts))
    try:
        inside = joined.resolve().is_relative_to(base.resolve())
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable component
        raise UsageError(f"cannot resolve {joined} ({e})", f"check the links under {base}") from None
    if not inside:
        raise UsageError(
            f"{what} {joined} leads outside {base} through a symbolic link",
            f"remove the link, or choose an output folder without links leading out of {base}",
        )
    return joined


def regular_file(path: str | Path, what: str = "file", hint: str | None = None) -> Path:
    """``path`` if it is (a link to) a regular file, checked without opening it; else a `DataError`.

    Missing files, dangling links, directories, named pipes, sockets and devices are refused with
    a line saying which of these it is.
    """
    p = Path(path)
    try:
        st = os.stat(p)  # follows links; never opens the file, so a pipe cannot block here
    except FileNotFoundError:
        if os.path.islink(p):
            raise DataError(f"{what} {p} is a dangling symbolic link", hint or "fix or remove the link") from None
        raise DataError(f"no such {what} {p}", hint) from None
    except OSError as e:
        raise DataError(f"cannot read {what} {p} ({e.strerror or e})", hint) from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file", hint or "pass a regular file")
    return p


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
