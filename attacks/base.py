"""The attack contract: ``perturb(model, x, y, index=, seed=) -> x_adv`` inside a declared threat model.

An attack only searches. The engine re-verifies every returned point (ball, box, finiteness) and
judges success with its own fp32 forward pass, so an attack can never report its own score.
Randomness comes from `harness.rng`, keyed by each sample's global ``index`` and the ``seed``, so a
sample's result is independent of the batch it was in.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.cost import Cost
from harness.params import Param, Reference
from harness.precision import frozen
from harness.threat import NORMS, ThreatModel, norm_alias

# Shared declarations (`harness.params`): the threat model every attack takes.
NORM = Param("threat-model norm ('linf' or 'l2'; 'Linf', 'inf', 'L2' are accepted)", choices=NORMS, convert=norm_alias)
EPS = Param("radius of the threat model in [0, 1] pixel units (L-inf at most 1)", gt=0)
STEPS = Param("iterations (gradient steps) per restart", ge=1)
RESTARTS = Param("independent runs from fresh starting points; the per-sample best is kept", ge=1)
COMPACT_EVERY = Param("steps between compactions that drop already-broken samples (speed only)", ge=1)
EOT_SAMPLES = Param("forward passes averaged per step (EOT, for randomised models)", ge=1)
# Minimum-norm attacks (fab, fab-t, cw-l2): what the search is for. `minimal` (FMN's interface) gives the
# smallest perturbation found and its norm in either mode; ``mode`` says what `perturb` spends its budget on.
MODES = ("fixed", "min-norm")
MODE = Param(
    "'fixed': stop refining a sample once a point within eps is found; 'min-norm': search every sample for "
    "its smallest perturbation to the full budget (perturb returns the smallest found when within eps)",
    choices=MODES,
)


class Attack:
    """Base class of registered attacks; subclasses implement `perturb`.

    Capabilities as data: ``PARAMS`` declares each constructor parameter (kind, range, choices; see
    `harness.params`), checked by `harness.registry.Registry.create`; ``REFERENCE`` is the budget of
    the reference implementation, below which the engine adds a ``weaker-than-reference`` finding.
    The checks, the engine and the export read the class attributes below, never attack names.
    """

    PARAMS: ClassVar[dict[str, Param]] = {"norm": NORM, "eps": EPS}
    REFERENCE: ClassVar[Reference | None] = None
    # Searches with forward passes only (no gradients): it runs on the model even with a surrogate,
    # and breaking what the white-box attacks left is the "black-box beats white-box" finding.
    black_box: ClassVar[bool] = False
    # Sees through a saturated softmax (margin/DLR losses, minimum-norm search): the masking check
    # compares such attacks with CE-PGD.
    strong: ClassVar[bool] = False
    # The constructor parameter holding the EOT draws averaged per step; None: no EOT support.
    eot_param: ClassVar[str | None] = None
    # The constructor parameter naming the loss the attack ascends (a key of `harness.losses`); the
    # masking check reads whether that loss goes through the softmax. None: no loss choice.
    loss_param: ClassVar[str | None] = None
    # The constructor parameter multiplying the logits before the loss (logit-scaled PGD); None: none.
    logit_scale_param: ClassVar[str | None] = None
    # Plain fixed-step gradient ascent (PGD, FGSM): on a softmax loss at logit scale 1 it is the
    # masking check's baseline (CE-PGD), the attack a saturated softmax masks.
    fixed_step_ascent: ClassVar[bool] = False
    # An ensemble the reports name a threat model after (AutoAttack declares "autoattack"): running this
    # attack, or every attack of one of ``ensemble_cores``, counts as running it (`harness.capabilities`).
    ensemble: ClassVar[str | None] = None
    ensemble_cores: ClassVar[tuple[frozenset[str], ...]] = ()

    def __init__(self, norm: str = "linf", eps: float = 8 / 255) -> None:
        self.threat = ThreatModel(norm, eps)

    @property
    def norm(self) -> str:
        return self.threat.norm

    @property
    def min_classes(self) -> int:
        """Fewest classes the attack's loss is defined for (the DLR loss needs a third-largest logit)."""
        return 2

    @property
    def eps(self) -> float:
        return self.threat.eps

    def set_eot(self, draws: int) -> list[str]:
        """Average each step's gradient over ``draws`` forward passes (for a randomised model).

        Returns what runs on single draws regardless: empty with EOT support, else the attack's name.
        """
        if self.eot_param is None:
            return [str(getattr(type(self), "registry_name", type(self).__name__))]
        setattr(self, self.eot_param, int(draws))
        return []

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        if index is None:
            index = torch.arange(len(x), device=x.device)
        with frozen(model):
            return self.perturb(model, x, y, index=index.to(x.device), seed=seed)

    def cost(self, n: int, *, num_classes: int = 10) -> Cost | None:
        """Model passes one call with its full budget takes on a batch of ``n`` images (`harness.cost`);
        None: not declared."""
        return None

    def reference_shortfalls(self) -> list[dict[str, Any]]:
        """Budget parameters set below ``REFERENCE``: [{param, value, reference, source}] (empty if none)."""
        ref = type(self).REFERENCE
        if ref is None:
            return []
        out = []
        for key, minimum in ref.budget.items():
            value = getattr(self, key, None)
            if isinstance(value, (int, float)) and value < minimum:
                out.append({"param": key, "value": value, "reference": minimum, "source": ref.source})
        return out

    def config(self) -> dict[str, Any]:
        """Parameters as recorded in result.json."""
        out = {k: v for k, v in vars(self).items() if not k.startswith("_") and k != "threat"}
        return {"attack": getattr(type(self), "registry_name", type(self).__name__), **self.threat.__dict__, **out}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "attack")
        return f"{type(self).__name__}({args})"


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss) -> tuple[Tensor, Tensor]:
    """Logits at x and the gradient of sum(loss) w.r.t. x only (no weight gradients)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        (g,) = torch.autograd.grad(loss(logits, y).sum(), x)
    return logits.detach(), g
