"""The sanity checks on the aggregated numbers (`harness.checks.postcheck`) as a post-run analysis.

Robust above clean, accuracy rising with eps, black-box beating white-box, masking signs, very large
eps, entries below their reference budget: docs/checks.md. Findings only, no section.
"""

from __future__ import annotations

from harness.analyses.base import Analysis, AnalysisOutput, RunView, register_analysis
from harness.checks import postcheck


@register_analysis
class PostCheck(Analysis):
    """Findings of `harness.checks.postcheck` on the aggregated result."""

    name = "postcheck"
    order = 30

    def run(self, view: RunView) -> AnalysisOutput:
        return AnalysisOutput(None, tuple(postcheck(view.result)))
