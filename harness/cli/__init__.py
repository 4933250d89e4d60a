"""The `harness` command line: one small module per subcommand over the Python API.

The subcommands import the API (and so torch and matplotlib) inside their functions, on purpose:
`harness --help` and argument errors then answer without loading them.
"""

from .app import app, main

__all__ = ["app", "main"]
