"""Report sections of the post-run analyses, one module per ``result.extra`` key (`base`: the types
and the registry). Importing the package imports every module in it, which registers its sections."""

from harness.registry import import_submodules
from harness.reporting.sections.base import (
    SECTIONS,
    Figure,
    Section,
    Table,
    register_section,
    report_sections,
    section_figures,
)

import_submodules(__name__)

__all__ = ["SECTIONS", "Figure", "Section", "Table", "register_section", "report_sections", "section_figures"]
