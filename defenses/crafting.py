"""Adversarial points for training: eval-mode crafting with the shared PGD core.

TRADES, MART and GAIRAT craft x' with the model in eval mode and switch back to train mode (their
official code does so; BatchNorm statistics are not touched by the attack). The attack's settings
are explicit arguments, never constants. The search is `harness.pgd_core.pgd_search`, the same
code the registered ``pgd`` attack runs (defenses/ never imports attacks/).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import Tensor, nn

from harness.errors import UsageError
from harness.losses import LOSSES
from harness.pgd_core import INITS, PGDSettings, pgd_search
from harness.precision import frozen
from harness.threat import ThreatModel


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with frozen parameters for crafting training attacks; the train flag is restored after."""
    was = model.training
    model.eval()
    try:
        with frozen(model):
            yield model
    finally:
        model.train(was)


def craft(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    index: Tensor,
    seed: int,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    init: str = "uniform",
    loss: str | Callable[[Tensor, Tensor], Tensor] = "ce",
    count_correct: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """The last PGD iterate (as in Madry/TRADES training) and, optionally, per-sample steps still correct."""
    threat = ThreatModel(norm, eps)  # canonical norm; eps checked as for the evaluation's attacks
    if init not in INITS:
        raise UsageError(f"unknown crafting init {init!r}", f"use one of {', '.join(INITS)}")
    if not callable(loss) and loss not in LOSSES:
        raise UsageError(f"unknown crafting loss {loss!r}", f"use one of {', '.join(LOSSES)}")
    if steps < 1 or not step_size > 0:
        raise UsageError(
            f"crafting needs steps >= 1 and step_size > 0, not steps={steps}, step_size={step_size}",
            "set the objective's steps and step size (eps / 4 is a common step size)",
        )
    settings = PGDSettings(
        threat.norm, threat.eps, int(steps), float(step_size), restarts=1, loss=loss,
        random_start=init != "zero", init=init if init != "zero" else "uniform", keep="last", early_stop=False,
    )  # fmt: skip
    with eval_mode(model):
        res = pgd_search(model, x, y, settings, index=index, seed=seed, count_correct=count_correct)
    return res.x_adv.detach(), res.steps_correct
