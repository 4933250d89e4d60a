"""The typer application and the exit codes every subcommand shares (`harness.errors.ExitCode`).

A user mistake (`HarnessError`, or a bad option) is one line and exit 2; a file system that refuses
(an `OSError` no layer below turned into a `StorageError`) is one line and exit 2 as well; anything
else is a failure of the tool: one line, exit 3, and the traceback in a log file (the run folder's
when there is one) or, with ``harness --debug``, on stderr. Ctrl-C is exit 130.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from harness import __version__
from harness.errors import ExitCode, HarnessError, work_folder
from harness.registry import import_submodules

app = typer.Typer(
    name="harness",
    help="Adversarial and natural robustness evaluation of image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEBUG_FLAG = "--debug"
INTERRUPTED = "interrupted: finished work is saved; run the same command again to resume"


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, DEBUG_FLAG, help="on an internal error print the traceback here (default: into a log file)"
    ),
) -> None:
    """Adversarial and natural robustness evaluation of image classifiers.

    Exit codes: 0 success (check: pass), 1 regression (check only), 2 usage, input or storage
    error, 3 internal error (a bug; the traceback is logged), 130 interrupted.
    """
    from harness.environment import check_variables

    check_variables()  # a malformed HARNESS_* variable is one line before any work


def error_line(e: HarnessError) -> str:
    """The one-line form of a user-facing error (rich markup): ``error: what — hint: what to do``."""
    return f"[bold red]error:[/] {escape(e.what)}" + (f" [dim]— hint:[/] {escape(e.hint)}" if e.hint else "")


def print_error(e: HarnessError) -> None:
    err_console.print(error_line(e), highlight=False, soft_wrap=True)


def _first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def default_log_dir() -> Path:
    """``$HARNESS_LOG_DIR``, else ``$XDG_STATE_HOME/harness/logs`` (``~/.local/state/harness/logs``)."""
    from harness.environment import env

    configured = env("HARNESS_LOG_DIR")
    if configured is not None:
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "harness" / "logs"


def write_error_log(e: BaseException, argv: list[str]) -> Path | None:
    """The traceback of ``e`` in a new log file: in the run folder the error carries, else the log folder.

    Returns the file, or None when no folder could take it (the caller then prints the traceback).
    """

    name = f"harness-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (
        f"harness {__version__}, python {sys.version.split()[0]}\n"
        f"command: harness {' '.join(argv)}\n"
        f"cwd: {Path.cwd()}\n\n" + "".join(traceback.format_exception(e))
    )
    run_folder = work_folder(e)  # gone when it was a temporary one, removed while the error propagated
    folders = [run_folder] if run_folder is not None and run_folder.is_dir() else []
    try:
        folders.append(default_log_dir())
    except HarnessError:
        pass  # a malformed HARNESS_LOG_DIR: the run folder or stderr
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    return None


def _debug_requested(argv: list[str]) -> bool:
    """``--debug`` among the global options (before the subcommand)."""
    for a in argv:
        if a == DEBUG_FLAG:
            return True
        if not a.startswith("-"):
            return False
    return False


def _unexpected(e: Exception, argv: list[str], debug: bool) -> int:
    """Report an exception no layer turned into a `HarnessError`; returns the exit code."""
    tb = "".join(traceback.format_exception(e))
    log = None if debug else write_error_log(e, argv)
    if debug or log is None:
        sys.stderr.write(tb)
    where = f"the traceback is in {log}" if log is not None else "the traceback is above"
    if isinstance(e, OSError):  # the environment refused (a file, the disk): not the harness's bug
        target = f": {e.filename}" if e.filename else ""
        what = f"{e.strerror or _first_line(str(e)) or type(e).__name__}{target}"
        err_console.print(
            f"[bold red]error:[/] {escape(what)} [dim]— hint:[/] check the path, its permissions and the free space; "
            f"{escape(where)}",
            highlight=False,
            soft_wrap=True,
        )
        return int(ExitCode.USAGE)
    message = _first_line(str(e))
    what = f"{type(e).__name__}: {message}" if message else type(e).__name__
    rerun = " (run `harness --debug ...` to print it)" if log is not None else ""
    err_console.print(
        f"[bold red]internal error:[/] {escape(what)} [dim]— hint:[/] this is a bug in harness, not in your input; "
        f"{escape(where)}{escape(rerun)}; please report it",
        highlight=False,
        soft_wrap=True,
    )
    return int(ExitCode.INTERNAL)


def _click_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(usage-error classes, no-args-is-help classes) of click and of the click typer vendors."""
    import click

    usage: tuple[type[Exception], ...] = (click.ClickException,)
    help_: tuple[type[Exception], ...] = tuple(
        c for c in [getattr(click.exceptions, "NoArgsIsHelpError", None)] if isinstance(c, type)
    )
    try:  # typer >= 0.2x vendors its own click: its usage errors are not click's classes
        from typer._click import exceptions as vendored

        usage += (vendored.ClickException,)
        help_ += (vendored.NoArgsIsHelpError,)
    except ImportError:
        pass
    return usage, help_


def _usage_line(e: Exception) -> str:
    """A click usage error (unknown option, bad value) in the one-line form."""
    ctx = getattr(e, "ctx", None)
    message = e.format_message() if hasattr(e, "format_message") else str(e)  # type: ignore[attr-defined]
    hint = f"run '{ctx.command_path} --help' to see the options" if ctx is not None else "run 'harness --help'"
    return f"[bold red]error:[/] {escape(_first_line(message))} [dim]— hint:[/] {escape(hint)}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs one subcommand and exits with an `ExitCode`."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    debug = _debug_requested(args)
    usage_errors, help_errors = _click_errors()
    try:
        # Importing the command modules registers them on `app`.

        import_submodules("harness.cli")
        rv = app(args=args, standalone_mode=False)
    except HarnessError as e:
        if debug:
            sys.stderr.write("".join(traceback.format_exception(e)))
        print_error(e)  # one line (never wrapped): what was wrong, then what to do
        sys.exit(e.exit_code)
    except help_errors as e:
        e.show()  # type: ignore[attr-defined]  # `harness` alone: the help text
        sys.exit(int(ExitCode.USAGE))
    except usage_errors as e:
        err_console.print(_usage_line(e), highlight=False, soft_wrap=True)
        sys.exit(int(ExitCode.USAGE))
    except (KeyboardInterrupt, typer.Abort):
        err_console.print(INTERRUPTED)
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as e:
        sys.exit(_unexpected(e, args, debug))
    if rv == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into Exit(130) and returns the code
        err_console.print(INTERRUPTED)
    sys.exit(rv if isinstance(rv, int) else 0)
