"""The `harness` command line: one small module per subcommand over the Python API."""

from .app import app, main

__all__ = ["app", "main"]
