"""Post-run analyses of a finished record, registered plug-ins run in order by the engine (`base`).

Importing the package imports every module in it, so a module that registers an analysis needs no
edit elsewhere: calibration, certified accuracy, the post-checks, the compile note, the attack unit
test and the corruption summary are built in.
"""

from harness.analyses.base import ANALYSES, Analysis, AnalysisOutput, RunView, register_analysis
from harness.registry import import_submodules

import_submodules(__name__)

__all__ = ["ANALYSES", "Analysis", "AnalysisOutput", "RunView", "register_analysis"]
