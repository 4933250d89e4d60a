"""Sound verifiers: IBP, CROWN, alpha-CROWN and an exact MILP, registered in `harness.registry.VERIFIERS`.

They prove robustness (a lower bound on robust accuracy) where attacks can only refute it. The
package sits beside `harness.models`: it reads a model into a graph of operations
(`read_network`), bounds it (`harness.verify.bounds`) and returns per-sample verdicts
(`Verdict`); it knows nothing of attacks, defenses or the engine.
"""

from harness.registry import import_submodules

from .bounds import Domain
from .network import SUPPORTED, Network, read_network
from .verdict import FALSIFIED, OPEN, STATUS_NAMES, VERIFIED, MarginBounds, Verdict
from .verifiers import AlphaCROWNVerifier, BoundVerifier, CROWNVerifier, IBPVerifier

import_submodules(__name__)

__all__ = [
    "FALSIFIED",
    "OPEN",
    "STATUS_NAMES",
    "SUPPORTED",
    "VERIFIED",
    "AlphaCROWNVerifier",
    "BoundVerifier",
    "CROWNVerifier",
    "Domain",
    "IBPVerifier",
    "MarginBounds",
    "Network",
    "Verdict",
    "read_network",
]
