"""Projected gradient descent (Madry et al. 2018) and FGSM (Goodfellow et al. 2015), L-inf and L2.

The search itself is `harness.pgd_core.pgd_search` (shared with training crafting, which must not
import attacks/); this module declares the attacks: parameters, reference budget, cost and the
capabilities the checks read. Hot-path rules, NaN handling and best-point keeping: see pgd_core.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from harness.cost import Cost, steps
from harness.losses import LOSSES, MIN_CLASSES, LossFn
from harness.params import Param, Reference
from harness.pgd_core import INITS, KEEP, PGDSettings, pgd_search
from harness.registry import ATTACKS

from .base import COMPACT_EVERY, EOT_SAMPLES, RESTARTS, STEPS, Attack


@ATTACKS.register("pgd")
class PGD(Attack):
    """PGD with random start, restarts, CE/margin/DLR loss and per-sample best over restarts."""

    PARAMS: ClassVar[dict[str, Param]] = {
        "steps": STEPS,
        "step_size": Param("step length per iteration (None: 2.5 * eps / steps, Madry et al.)", gt=0),
        "restarts": RESTARTS,
        "loss": Param("loss the steps ascend (or a function of (logits, y) from Python)", choices=tuple(LOSSES)),
        "random_start": Param("start from a keyed random point in the ball (else from x)"),
        "init": Param("random start: uniform in the ball, 0.001 * N(0, 1), or none", choices=INITS),
        "keep": Param("per sample: the best (lowest-margin) point over all steps, or the last iterate",
                      choices=KEEP),
        "early_stop": Param("stop attacking samples already misclassified (keep='best' only)"),
        "compact_every": COMPACT_EVERY,
        "logit_scale": Param("multiply the logits before the loss (x1000 defeats saturated softmax)", gt=0),
        "eot_samples": EOT_SAMPLES,
    }  # fmt: skip
    eot_param: ClassVar[str | None] = "eot_samples"
    loss_param: ClassVar[str | None] = "loss"
    logit_scale_param: ClassVar[str | None] = "logit_scale"
    fixed_step_ascent: ClassVar[bool] = True
    # PGD-20 with one restart: the evaluation budget of Madry et al. 2018's CIFAR-10 table and of the
    # TRADES/MART papers. `reference_shortfalls` also flags a step size too small to cross the ball.
    REFERENCE: ClassVar[Reference | None] = Reference(
        {"steps": 20, "restarts": 1}, "PGD-20, 1 restart (Madry et al. 2018 CIFAR-10 evaluation; TRADES, MART)"
    )

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        steps: int = 20,
        step_size: float | None = None,
        restarts: int = 1,
        loss: str | LossFn = "ce",
        random_start: bool = True,
        init: str = "uniform",
        keep: str = "best",
        early_stop: bool = True,
        compact_every: int = 5,
        logit_scale: float = 1.0,
        eot_samples: int = 1,
    ) -> None:
        super().__init__(norm, eps)
        self.steps = int(steps)
        # Madry et al. use 2.5 * eps / steps so that the iterate can cross the ball and back.
        self.step_size = float(step_size) if step_size is not None else 2.5 * eps / max(1, steps)
        self.restarts = int(restarts)
        self.loss = loss
        self.random_start = bool(random_start)
        self.init = init
        self.keep = keep
        self.early_stop = bool(early_stop) and keep == "best"
        self.compact_every = int(compact_every)
        self.logit_scale = float(logit_scale)
        # EOT (Athalye et al. 2018): average input gradients and logits over draws of a randomised model.
        self.eot_samples = int(eot_samples)

    def reference_shortfalls(self) -> list[dict[str, Any]]:
        out = super().reference_shortfalls()
        if type(self).REFERENCE is not None and self.steps * self.step_size < self.eps:
            # Every step moves at most step_size (per pixel for L-inf): the iterate cannot reach the
            # ball's boundary from its centre.
            out.append(
                {
                    "param": "step_size",
                    "value": self.step_size,
                    "reference": self.eps / self.steps,
                    "source": "steps * step_size >= eps, so the iterate can reach the ball's boundary",
                }
            )
        return out

    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """Per restart: ``steps`` gradient steps plus (keep='best') one forward at the last iterate, each
        averaged over ``eot_samples`` draws."""
        run = steps(self.steps) + Cost(0 if self.keep == "last" else 1)
        return run * (self.eot_samples * self.restarts * n)

    @property
    def min_classes(self) -> int:
        return MIN_CLASSES.get(self.loss, 2) if isinstance(self.loss, str) else 2

    def settings(self) -> PGDSettings:
        """This attack's search, as the shared PGD core runs it."""
        fields = ("steps", "step_size", "restarts", "loss", "logit_scale", "random_start", "init", "keep",
                  "early_stop", "compact_every", "eot_samples")  # fmt: skip
        return PGDSettings(self.norm, self.eps, **{f: getattr(self, f) for f in fields})

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        assert index is not None
        return pgd_search(model, x, y, self.settings(), index=index, seed=seed).x_adv


@ATTACKS.register("fgsm")
class FGSM(PGD):
    """Fast gradient sign method: one step of size eps (sign for L-inf, normalised gradient for L2)."""

    REFERENCE: ClassVar[Reference | None] = None  # one step by definition
    logit_scale_param: ClassVar[str | None] = None  # FGSM takes no logit scale

    def __init__(self, norm: str = "linf", eps: float = 8 / 255, loss: str = "ce") -> None:
        super().__init__(norm, eps, steps=1, step_size=eps, restarts=1, loss=loss, random_start=False)

    def config(self) -> dict:
        return {"attack": "fgsm", "norm": self.norm, "eps": self.eps, "loss": self.loss}
