"""The ``compile`` finding: --compile was asked for, torch.compile failed and the search ran eagerly.

A note on how the run went rather than on its numbers; it is an analysis so that the findings keep
their order (after the post-checks, before the attack unit test).
"""

from __future__ import annotations

from harness.analyses.base import Analysis, AnalysisOutput, RunView, register_analysis
from harness.results import Finding


@register_analysis
class CompileFallback(Analysis):
    """A warning naming torch.compile's error when the attack search fell back to eager mode."""

    name = "compile"
    order = 40

    def run(self, view: RunView) -> AnalysisOutput:
        if not view.compile_fallback:
            return AnalysisOutput()
        finding = Finding(
            "compile",
            "warning",
            f"--compile was asked for but torch.compile failed, so the attack search ran eagerly "
            f"(the numbers are unaffected, only the speed): {view.compile_fallback}",
            data={"error": view.compile_fallback},
        )
        return AnalysisOutput(None, (finding,))
