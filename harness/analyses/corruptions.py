"""``result.extra["corruptions"]``: accuracy per corruption x severity and its mean (mCE needs a
reference model, so `harness run` adds it later with `corruption_metrics.attach(result, reference)`)."""

from __future__ import annotations

from harness.analyses.base import Analysis, AnalysisOutput, RunView, register_analysis
from harness.corruption_metrics import corruption_summary


@register_analysis
class Corruptions(Analysis):
    """`corruption_summary` of the result without a reference (only with corruption entries)."""

    name = "corruptions"
    order = 60

    def run(self, view: RunView) -> AnalysisOutput:
        if not view.result.corruptions:
            return AnalysisOutput()
        return AnalysisOutput(corruption_summary(view.result))
