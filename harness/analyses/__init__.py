"""Post-run analyses of a finished record, registered plug-ins run in order by the engine (`base`).

Importing the package registers the built-in ones: calibration, certified accuracy, the post-checks,
the compile note, the attack unit test and the corruption summary.
"""

from harness.analyses import (  # noqa: F401  (registration on import)
    binarization,
    calibration,
    certified,
    compile_fallback,
    corruptions,
    postcheck,
)
from harness.analyses.base import ANALYSES, Analysis, AnalysisOutput, RunView, register_analysis

__all__ = ["ANALYSES", "Analysis", "AnalysisOutput", "RunView", "register_analysis"]
