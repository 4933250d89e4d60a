"""Reports built from result.json files only: markdown, self-contained HTML, plots, comparisons, exports.

Nothing here loads a model or a dataset, so every report can be rebuilt from the run folders alone.
"""

from harness.reporting.build import build_report
from harness.reporting.compare import Comparison, compare_runs
from harness.reporting.export import export_robustbench
from harness.reporting.leaderboard import render_leaderboard
from harness.reporting.markdown import render_markdown
from harness.reporting.runs import Run, find_runs, load_runs
from harness.reporting.summary import pareto_front

__all__ = [
    "Comparison",
    "Run",
    "build_report",
    "compare_runs",
    "export_robustbench",
    "find_runs",
    "load_runs",
    "pareto_front",
    "render_leaderboard",
    "render_markdown",
]
