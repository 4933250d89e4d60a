"""Adversarial points for training: eval-mode crafting with the harness's registered PGD.

TRADES, MART and GAIRAT craft x' with the model in eval mode and switch back to train mode (their
official code does so; BatchNorm statistics are not touched by the attack). The attack's settings
are explicit arguments, never constants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import Tensor, nn

from harness.precision import frozen
from harness.registry import ATTACKS


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
    attack = ATTACKS.create(
        "pgd",
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        restarts=1,
        loss=loss,
        random_start=init != "zero",
        init=init if init != "zero" else "uniform",
        keep="last",
        early_stop=False,
    )
    with eval_mode(model):
        res = attack.search(model, x, y, index=index, seed=seed, count_correct=count_correct)
    return res.x_adv.detach(), res.steps_correct
