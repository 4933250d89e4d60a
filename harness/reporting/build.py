"""`build_report`: report.md, report.html and the PNG figures for one or many runs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.atomic import write_bytes, write_text
from harness.errors import UsageError
from harness.paths import safe_join
from harness.reporting import gallery, plots
from harness.reporting import summary as S
from harness.reporting.html import render_html
from harness.reporting.leaderboard import render_leaderboard
from harness.reporting.markdown import render_markdown
from harness.reporting.runs import load_runs
from harness.reporting.sections import report_sections, section_figures
from harness.results import Result

LEADERBOARD = "leaderboard.html"


@dataclass
class Report:
    """Where a built report lies."""

    directory: Path
    markdown: Path
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    leaderboard: Path | None = None  # leaderboard.html, written for two or more runs


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("._")[:40] or "model"


def figures(results: Sequence[Result], threat: str | None = None) -> dict[str, bytes]:
    """All figures of a report as PNG bytes, keyed tradeoff, eps_curves, heatmap-i, per_class-i and those
    of the registered sections (e.g. reliability-i, certified-i, ece_severity)."""
    headline = S.headline_threat(results, threat)
    out: dict[str, bytes | None] = {
        "tradeoff": plots.tradeoff(results, headline),
        "eps_curves": plots.eps_curves(results),
    }
    for i, r in enumerate(results):
        out[f"heatmap-{i}"] = plots.corruption_heatmap(r)
        out[f"per_class-{i}"] = plots.per_class(r, headline)
    out.update(section_figures(report_sections(results, S.unique_labels(results))))
    return {k: v for k, v in out.items() if v}


def build_report(
    runs: Sequence[str | Path | Result],
    out: str | Path,
    *,
    title: str = "Robustness report",
    threat: str | None = None,
    clean: bool = False,
) -> Report:
    """Build the report of ``runs`` (run folders, folders of runs, or `Result` objects) in ``out``.

    Reads only result.json files (each checked by `Result.load`: a damaged one is a one-line error
    naming it); for two or more runs also writes leaderboard.html, the sortable, filterable table.
    ``threat`` picks the threat model of the trade-off plot (a key
    such as ``linf-0.1``; default: the adversarial-training eps, else the middle L-inf eps).
    ``clean`` first removes the PNG figures of an earlier build in ``out`` (for a folder the caller
    owns, e.g. a sweep's report), so figures of runs no longer reported do not linger.
    """
    results: list[Result] = []
    dirs: list[Path | None] = []  # each result's run folder (its gallery side file lies there)
    for r in runs:
        loaded = [(r, None)] if isinstance(r, Result) else [(run.result, run.path) for run in load_runs([r])]
        results += [res for res, _ in loaded]
        dirs += [d for _, d in loaded]
    if not results:
        raise UsageError("no results to report", "pass run folders that hold result.json")
    out = Path(out)
    figs = figures(results, threat)
    labels = S.unique_labels(results)
    names: dict[str, str] = {}
    for key in figs:
        if "-" in key:
            kind, i = key.split("-")
            names[key] = f"{kind}-{i}-{_slug(labels[int(i)])}.png"
        else:
            names[key] = f"{key}.png"
    galleries = gallery.load(results, dirs)
    gallery_figs = gallery.figures(galleries, labels)
    names |= gallery.file_names(list(gallery_figs), labels)
    figs |= gallery_figs
    paths_out = {}
    if clean and out.is_dir():
        for old in out.glob("*.png"):
            old.unlink()
    for key, png in figs.items():
        p = safe_join(out, names[key], what="figure name")
        write_bytes(p, png)
        paths_out[key] = p
    link = LEADERBOARD if len(results) > 1 else None
    md = out / "report.md"
    write_text(md, render_markdown(results, title, images=names, threat=threat, leaderboard=link, galleries=galleries))
    page = out / "report.html"
    write_text(page, render_html(results, figs, title, threat, leaderboard=link, galleries=galleries))
    board = None
    if link is not None:
        board = safe_join(out, link, what="leaderboard")
        write_text(board, render_leaderboard(results, title=f"{title}: leaderboard"))
    return Report(out, md, page, paths_out, results, board)
