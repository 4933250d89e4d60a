"""report.md rendering (kept at this path for the engine); the report builder lives in `harness.reporting`."""

from harness.reporting.markdown import render_markdown

__all__ = ["render_markdown"]
