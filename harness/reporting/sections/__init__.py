"""Report sections of the post-run analyses, one module per ``result.extra`` key (`base`: the types
and the registry). Importing the package registers the built-in ones."""

from harness.reporting.sections import calibration, certified, corruptions, unit_test  # noqa: F401
from harness.reporting.sections.base import (
    SECTIONS,
    Figure,
    Section,
    Table,
    register_section,
    report_sections,
    section_figures,
)

__all__ = ["SECTIONS", "Figure", "Section", "Table", "register_section", "report_sections", "section_figures"]
