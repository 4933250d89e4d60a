"""The ``[[radius]]`` suite entry: a per-sample radius interval [lower, upper] under one norm (issue 22 §2).

``upper`` comes from a minimum-norm attack (``minimal``: FMN, FAB/FAB-T/CW-L2 in min-norm mode),
``lower`` from a verifier's radius (bisection with IBP/CROWN/alpha-CROWN, or the MILP's minimal
radius); the engine re-checks the attack's points (harness.engine.runners.radius). This module parses
and validates the table and builds the pair; nothing here runs a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError
from harness.labels import parse_eps
from harness.params import Param
from harness.registry import ATTACKS, VERIFIERS
from harness.threat import ThreatModel, canonical_norm

# The fields of a [[radius]] table: name (the entry's name), label (its group key), and what it searches.
RADIUS_FIELDS = {
    "name": "string",
    "label": "string",
    "norm": "string",
    "max_eps": "eps",
    "attack": "strings",
    "attack_params": "table",
    "verifier": "name",
    "verifier_params": "table",
    "steps": "int",
}
DEFAULT_ATTACK, DEFAULT_VERIFIER, NO_VERIFIER = "fmn", "crown", "none"
STEPS = Param("bisection steps of the verifier's radius (resolution max_eps / 2^steps)", kind="int", ge=1, le=40)
DEFAULT_STEPS = 12


def freeze(table: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A parameter table as sorted (key, value) pairs: `Entry` stays hashable."""
    return tuple(sorted(table.items()))


@dataclass(frozen=True)
class RadiusSpec:
    """One [[radius]] table, checked: the attack(s) and the verifier with their parameters (as built).

    ``attack`` is one name (``attack_params`` its parameters) or a tuple of names (``attack_params`` then
    pairs (name, its parameters)): the upper end is the smallest confirmed distance over them.
    """

    norm: str
    max_eps: float
    attack: str | tuple[str, ...]
    attack_params: tuple[tuple[str, Any], ...]
    verifier: str
    verifier_params: tuple[tuple[str, Any], ...]
    steps: int

    def params(self) -> tuple[tuple[str, Any], ...]:
        """The `Entry.params` of this table (max_eps, attack, verifier, their parameters, steps)."""
        return freeze(
            {
                "max_eps": self.max_eps,
                "attack": self.attack,
                "attack_params": self.attack_params,
                "verifier": self.verifier,
                "verifier_params": self.verifier_params,
                "steps": self.steps,
            }
        )

    @classmethod
    def of(cls, norm: str, params: tuple[tuple[str, Any], ...]) -> RadiusSpec:
        p = dict(params)
        return cls(norm, p["max_eps"], p["attack"], p["attack_params"], p["verifier"], p["verifier_params"], p["steps"])

    def attack_pairs(self) -> list[tuple[str, dict[str, Any]]]:
        """(attack name, its parameters) for each attack of the entry, in order."""
        if isinstance(self.attack, str):
            return [(self.attack, dict(self.attack_params))]
        given = dict(self.attack_params)
        return [(name, dict(given.get(name, ()))) for name in self.attack]

    def build(self) -> RadiusSearch:
        attacks = tuple(ATTACKS.create(n, norm=self.norm, eps=self.max_eps, **p) for n, p in self.attack_pairs())
        verifier = None
        if self.verifier != NO_VERIFIER:
            verifier = VERIFIERS.create(self.verifier, norm=self.norm, eps=self.max_eps, **dict(self.verifier_params))
        return RadiusSearch(self, attacks, verifier)


@dataclass(frozen=True)
class RadiusSearch:
    """The built pair of a radius entry: the attacks' ``minimal`` give upper ends, ``verifier`` lower ends."""

    spec: RadiusSpec
    attacks: tuple[Any, ...]
    verifier: Any | None

    @property
    def norm(self) -> str:
        return self.spec.norm

    @property
    def max_eps(self) -> float:
        return self.spec.max_eps

    @property
    def steps(self) -> int:
        return self.spec.steps

    def validate_for(self, shape: tuple[int, ...]) -> None:
        """An L2 max_eps beyond the diameter of the image cube is meaningless (one line)."""
        diag = math.sqrt(math.prod(shape))
        if self.norm == "l2" and self.max_eps > diag:
            raise UsageError(
                f"radius entry: L2 max_eps {self.max_eps:g} exceeds the diameter {diag:.4g} of [0, 1]^{tuple(shape)}",
                "choose a max_eps below it, or max_eps = 'dataset'",
            )

    def cost(self, n: int, *, num_classes: int = 10) -> Any:
        """The minimum-norm searches' model passes on ``n`` images (`Attack.cost`; None when one is undeclared)."""
        costs = [getattr(a, "cost", None) for a in self.attacks]
        if any(c is None for c in costs):
            return None
        parts = [c(n, num_classes=num_classes) for c in costs]  # type: ignore[misc]
        return None if any(p is None for p in parts) else sum(parts[1:], parts[0])

    def config(self) -> dict[str, Any]:
        """What result.json records of the entry (`config`)."""
        s = self.spec
        return {
            "norm": s.norm,
            "max_eps": s.max_eps,
            "attack": s.attack if isinstance(s.attack, str) else list(s.attack),
            "attack_params": dict(s.attack_pairs()) if not isinstance(s.attack, str) else dict(s.attack_params),
            "verifier": s.verifier,
            "verifier_params": dict(s.verifier_params),
            "steps": s.steps,
        }


def radius_spec(spec: dict[str, Any], where: str, eps_grid: dict[str, tuple[float, ...]]) -> RadiusSpec:
    """One [[radius]] table checked field by field (each mistake one line naming ``where`` and the field)."""
    try:
        norm = canonical_norm(str(spec.get("norm", "linf")))
    except UsageError as e:
        raise UsageError(f"{where}: {e.what}", e.hint) from None
    max_eps = _max_eps(spec.get("max_eps", "dataset"), norm, where, eps_grid)
    steps = spec.get("steps", DEFAULT_STEPS)
    STEPS.check(steps, "steps", where)
    attack = spec.get("attack", DEFAULT_ATTACK)
    attack_params = _table(spec, "attack_params", where)
    if isinstance(attack, str):
        attack_params = _attack_params(attack, attack_params, norm, max_eps, where)
        frozen_params = freeze(attack_params)
    else:
        if not attack or len(set(attack)) != len(attack):
            raise UsageError(f"{where}: field 'attack' lists no attack or one twice: {attack!r}", 'e.g. ["fmn", "fab"]')
        extra = sorted(set(attack_params) - set(attack))
        if extra or not all(isinstance(v, dict) for v in attack_params.values()):
            raise UsageError(
                f"{where}: with several attacks, attack_params is a table per attack named in 'attack'"
                + (f" (not {extra[0]!r})" if extra else ""),
                "e.g. attack_params = { fmn = { restarts = 3 }, fab = { } }",
            )
        frozen_params = freeze(
            {n: freeze(_attack_params(n, dict(attack_params.get(n, {})), norm, max_eps, where)) for n in attack}
        )
        attack = tuple(attack)
    verifier = spec.get("verifier", DEFAULT_VERIFIER)
    verifier_params = _table(spec, "verifier_params", where)
    if verifier == NO_VERIFIER:
        if verifier_params:
            raise UsageError(f"{where}: verifier_params given with verifier = 'none'", "drop verifier_params")
    else:
        vreg = _get(VERIFIERS, verifier, where)
        if not callable(getattr(vreg.factory, "radius", None)):
            raise UsageError(f"{where}: verifier {verifier!r} proves no radius", "use crown, ibp, alpha-crown or milp")
        if callable(getattr(vreg.factory, "minimal_radius", None)) and norm != "linf":
            raise UsageError(
                f"{where}: verifier {verifier!r} computes L-inf radii only (the L2 ball is not polyhedral)",
                "use verifier = 'crown' for L2",
            )
        _validate(VERIFIERS, verifier, where, {"norm": norm, "eps": max_eps, **verifier_params})
    return RadiusSpec(norm, max_eps, attack, frozen_params, verifier, freeze(verifier_params), int(steps))


def _attack_params(attack: str, params: dict[str, Any], norm: str, max_eps: float, where: str) -> dict[str, Any]:
    """One attack of the entry checked: it has a minimum-norm search, its mode is min-norm, its parameters exist."""
    reg = _get(ATTACKS, attack, where)
    if not callable(getattr(reg.factory, "minimal", None)):
        have = [n for n in ATTACKS.names() if callable(getattr(ATTACKS.get(n).factory, "minimal", None))]
        raise UsageError(
            f"{where}: attack {attack!r} has no minimum-norm search (minimal)", f"use one of {', '.join(have)}"
        )
    _reject_entry_fields(params, "attack_params", where)
    if "mode" in reg.params:  # FAB, FAB-T, CW-L2: the min-norm mode is the one that gives the smallest point
        if params.get("mode", "min-norm") != "min-norm":
            raise UsageError(
                f"{where}: attack {attack!r} in mode {params['mode']!r}; a radius needs mode 'min-norm'",
                "drop mode from attack_params",
            )
        params["mode"] = "min-norm"
    _validate(ATTACKS, attack, where, {"norm": norm, "eps": max_eps, **params})
    return params


def _max_eps(value: Any, norm: str, where: str, eps_grid: dict[str, tuple[float, ...]]) -> float:
    """``"dataset"``: the largest eps of the dataset's grid for the norm; else a positive number or fraction."""
    if value == "dataset":
        grid = eps_grid.get(norm)
        if not grid:
            raise UsageError(
                f"{where}: max_eps = 'dataset' but the dataset defines no {norm} eps grid", "give max_eps explicitly"
            )
        return float(max(grid))
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{where}: field 'max_eps' must be a positive number, a fraction or 'dataset', not {value!r}")
    eps = float(value) if not isinstance(value, str) else parse_eps(value, what=f"{where}: max_eps")
    try:
        ThreatModel(norm, eps)
    except UsageError as e:
        raise UsageError(f"{where}: max_eps: {e.what}", e.hint) from None
    return eps


def _table(spec: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise UsageError(f"{where}: field {key!r} must be a table, e.g. {{ steps = 100 }}, not {value!r}")
    _reject_entry_fields(value, key, where)
    return dict(value)


def _reject_entry_fields(params: dict[str, Any], key: str, where: str) -> None:
    """norm and eps belong to the entry (norm, max_eps), never to a parameter table: one line."""
    clash = [k for k in ("norm", "eps") if k in params]
    if clash:
        raise UsageError(
            f"{where}: {key} sets {clash[0]!r}, which the entry decides",
            "write norm = ... beside the entry's fields (and max_eps for eps)",
        )


def _get(registry: Any, name: str, where: str) -> Any:
    """The registered entry; an unknown name is one line naming the table, with suggestions."""
    try:
        return registry.get(name)
    except UsageError as e:
        raise UsageError(f"{where}: {e.what}", e.hint) from None


def _validate(registry: Any, name: str, where: str, params: dict[str, Any]) -> None:
    try:
        registry.validate(name, **params)
    except UsageError as e:
        raise UsageError(f"{where}: {e.what}", e.hint) from None
