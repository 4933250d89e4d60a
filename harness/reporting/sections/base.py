"""Report sections as data: a `Section` (title, intro, tables, figures, notes) that report.md and
report.html render the same way, and the registry of section functions keyed by ``result.extra`` key.

A section function takes every result of the report (and their unique labels) and returns its
sections, none when no result holds its key. Strings are plain text: each renderer escapes them.
Figures are factories, drawn once by `build_report` (report.md names the PNG file, report.html
inlines it); a renderer given no figure under a key leaves the figure out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from harness.ordered_registry import OrderedRegistry
from harness.results import Result


@dataclass(frozen=True)
class Table:
    """A table as plain-text cells; ``caption`` is a line above it, ``css`` the HTML class."""

    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    css: str = ""


@dataclass(frozen=True)
class Figure:
    """A PNG figure under ``key`` (the report's figure name, e.g. ``reliability-0``), drawn on demand."""

    key: str
    alt: str
    render: Callable[[], bytes | None] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Section:
    """One titled part of a report, rendered in order: intro, tables, figures, notes."""

    title: str
    anchor: str
    intro: str = ""
    tables: tuple[Table, ...] = ()
    figures: tuple[Figure, ...] = ()
    notes: tuple[str, ...] = ()


SectionFn = Callable[[Sequence[Result], Sequence[str]], list[Section]]


@dataclass(frozen=True)
class SectionSpec:
    """A registered section function and the ``result.extra`` key it renders."""

    key: str
    fn: SectionFn


SECTIONS: OrderedRegistry[SectionSpec] = OrderedRegistry("report section")

F = TypeVar("F", bound=SectionFn)


def register_section(key: str, *, order: int) -> Callable[[F], F]:
    """Decorator: ``fn(results, labels) -> [Section]`` renders ``result.extra[key]``; lower order comes first."""

    def deco(fn: F) -> F:
        SECTIONS.add(key, SectionSpec(key, fn), order=order)
        return fn

    return deco


def report_sections(results: Sequence[Result], labels: Sequence[str]) -> list[Section]:
    """Every registered section of these results, in order."""
    return [s for spec in SECTIONS.ordered() for s in spec.fn(results, labels)]


def section_figures(sections: Sequence[Section]) -> dict[str, bytes | None]:
    """The figures of ``sections`` drawn: {key: PNG bytes, or None when there is nothing to draw}."""
    return {f.key: f.render() for s in sections for f in s.figures}
