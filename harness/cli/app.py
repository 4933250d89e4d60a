"""The typer application and its error handling: user mistakes exit 2 with one readable line."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

app = typer.Typer(
    name="harness",
    help="Adversarial and natural robustness evaluation of image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps `HarnessError` to exit code 2 and a one-line message."""
    import click
    from rich.markup import escape

    from harness.errors import HarnessError

    # Importing the command modules registers them on `app`.
    from harness.registry import import_submodules

    import_submodules("harness.cli")
    # typer >= 0.2x vendors its own click: its usage errors are not click's classes.
    click_errors: tuple[type[Exception], ...] = (click.ClickException,)
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        click_errors += (TyperClickException,)
    except ImportError:
        pass
    try:
        rv = app(args=argv, standalone_mode=False)
    except HarnessError as e:
        # One line (never wrapped): what was wrong, then what to do.
        line = f"[bold red]error:[/] {escape(e.what)}" + (f" [dim]— hint:[/] {escape(e.hint)}" if e.hint else "")
        err_console.print(line, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click_errors as e:
        e.show()  # type: ignore[attr-defined]
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished chunks are saved; run the same command again to resume")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)
