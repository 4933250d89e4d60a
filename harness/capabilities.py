"""Attack capabilities as declared data, read through the registry (the checks and the export).

A result records each attack entry by its registered name and its config; what the attack *is*
(its loss, its logit scaling, a fixed-step ascent, an ensemble) comes from the class attributes
declared on the class registered under that name (`attacks.base.Attack`), never from the name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness.losses import LOSSES, SOFTMAX_LOSSES, TARGETED_LOSSES
from harness.registry import ATTACKS


def attack_class(name: object) -> Any | None:
    """The factory registered as attack ``name``; None for a name not (or no longer) registered."""
    if not isinstance(name, str) or name not in ATTACKS:
        return None
    return ATTACKS.get(name).factory


def declared(name: object, attribute: str, default: Any = None) -> Any:
    """The class attribute ``attribute`` the attack registered as ``name`` declares, else ``default``."""
    return getattr(attack_class(name), attribute, default)


def _param(name: str, config: Mapping[str, Any], attribute: str) -> Any:
    """The recorded value of the constructor parameter the attack names in ``attribute`` (else its default)."""
    param = declared(name, attribute)
    if not param:
        return None
    if param in config:
        return config[param]
    return ATTACKS.get(name).parameters().get(param)


def loss_of(name: str, config: Mapping[str, Any]) -> str | None:
    """The named loss (a key of `harness.losses`) the attack ascends with this config; None if none declared."""
    loss = _param(name, config, "loss_param")
    return loss if isinstance(loss, str) and (loss in LOSSES or loss in TARGETED_LOSSES) else None


def logit_scale_of(name: str, config: Mapping[str, Any]) -> float:
    """The factor the attack multiplies logits by before its loss (1 when it declares none)."""
    scale = _param(name, config, "logit_scale_param")
    return 1.0 if scale is None else float(scale)


def softmax_ascent(name: str, config: Mapping[str, Any]) -> bool:
    """A fixed-step ascent (`Attack.fixed_step_ascent`) on a softmax loss at logit scale 1: CE-PGD.

    Softmax saturation masks exactly these attacks; the masking check compares them with strong ones.
    """
    return (
        bool(declared(name, "fixed_step_ascent", False))
        and loss_of(name, config) in SOFTMAX_LOSSES
        and logit_scale_of(name, config) == 1.0
    )


def sees_through_saturation(name: str, config: Mapping[str, Any]) -> bool:
    """Declared `Attack.strong`, or configured with a loss outside the softmax, or with scaled logits."""
    loss = loss_of(name, config)
    return (
        bool(declared(name, "strong", False))
        or (loss is not None and loss not in SOFTMAX_LOSSES)
        or logit_scale_of(name, config) != 1.0
    )


def ensembles_run(names: Iterable[str]) -> set[str]:
    """Ensembles (`Attack.ensemble`) the attacks ``names`` amount to: one of them declares the ensemble,
    or they include every attack of one of its declared cores (`Attack.ensemble_cores`)."""
    ran = set(names)
    out = {e for e in (declared(n, "ensemble") for n in ran) if e}
    for entry in ATTACKS.entries():
        ensemble = getattr(entry.factory, "ensemble", None)
        if ensemble and any(core <= ran for core in getattr(entry.factory, "ensemble_cores", ())):
            out.add(ensemble)
    return out


__all__ = [
    "attack_class",
    "declared",
    "ensembles_run",
    "logit_scale_of",
    "loss_of",
    "sees_through_saturation",
    "softmax_ascent",
]
