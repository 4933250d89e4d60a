"""AutoAttack (Croce & Hein, ICML 2020): a fixed ensemble of parameter-free attacks, run in sequence.

Each component attacks only the samples every earlier component failed on; the result per sample
is the first misclassified point found (else the lowest-margin point seen). Versions and budgets
are those of the reference implementation:

- ``standard``: apgd-ce (1 restart), apgd-t (9 targets), fab-t (9 targets), square (5000 queries);
- ``plus``: apgd-ce and apgd-dlr (5 restarts each), fab (5 restarts), square, apgd-t, fab-t;
- ``rand`` (randomised defences): apgd-ce and apgd-dlr with 20 EOT iterations, 1 restart;
- ``custom``: the registered attacks named in ``components`` (params via ``component_params``).

Backends: ``native`` (the harness's attacks, looked up by registry name), ``pyautoattack`` (the
reference implementation RobustBench uses) and ``torchattacks`` (its APGD, APGD-T and FAB default
to 10 steps; here they are set to the reference 100 unless ``torchattacks_steps`` says otherwise).
The two external backends draw from torch's global RNG (forked and restored around the call), so
unlike ``native`` their results depend on the batch composition.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from harness.cost import Cost
from harness.errors import UsageError
from harness.logits import margin
from harness.params import Param
from harness.registry import ATTACKS
from harness.rng import stream_seed
from harness.threat import per_sample

from .base import Attack

VERSIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "standard": [
        ("apgd-ce", {"restarts": 1}),
        ("apgd-t", {"n_target_classes": 9, "restarts": 1}),
        ("fab-t", {"n_target_classes": 9, "restarts": 1}),
        ("square", {"n_queries": 5000}),
    ],
    "plus": [
        ("apgd-ce", {"restarts": 5}),
        ("apgd-dlr", {"restarts": 5}),
        ("fab", {"restarts": 5}),
        ("square", {"n_queries": 5000}),
        ("apgd-t", {"n_target_classes": 9, "restarts": 1}),
        ("fab-t", {"n_target_classes": 9, "restarts": 1}),
    ],
    "rand": [("apgd-ce", {"restarts": 1, "eot_iter": 20}), ("apgd-dlr", {"restarts": 1, "eot_iter": 20})],
}
BACKENDS = ("native", "pyautoattack", "torchattacks")
# Spellings other implementations use for the same budget parameter.
_ALIASES = {"restarts": ("restarts", "n_restarts"), "n_queries": ("n_queries", "queries"), "steps": ("steps", "n_iter")}
TORCHATTACKS_DEFAULT_STEPS = 10


def _fit(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Map budget parameters onto the spelling the registered component accepts."""
    accepted = ATTACKS.get(name).parameters()
    out: dict[str, Any] = {}
    for key, value in params.items():
        spelled = next((a for a in _ALIASES.get(key, (key,)) if a in accepted), None)
        if spelled is None:
            if key == "restarts" and value == 1:
                continue  # a component without restarts runs once, which is the budget asked for
            raise UsageError(
                f"autoattack component {name!r} has no parameter {key!r} (wanted {key}={value!r})",
                f"its parameters are: {', '.join(accepted) or 'none'}",
            )
        out[spelled] = value
    return out


@ATTACKS.register("autoattack")
class AutoAttack(Attack):
    """AutoAttack: standard/plus/rand/custom component lists; native, pyautoattack or torchattacks backend."""

    strong: ClassVar[bool] = True
    # Reports (the RobustBench export) call a threat model's worst case AutoAttack when this attack ran,
    # or when its attacks include the standard version's APGD-CE and APGD-T.
    ensemble: ClassVar[str | None] = "autoattack"
    ensemble_cores: ClassVar[tuple[frozenset[str], ...]] = (frozenset(n for n, _ in VERSIONS["standard"][:2]),)

    PARAMS: ClassVar[dict[str, Param]] = {
        "version": Param("component list and budgets of the reference", choices=(*VERSIONS, "custom")),
        "components": Param("version='custom': registered attack names, run in this order",
                            item=Param("a registered attack name")),
        "component_params": Param("per component name, a table of its parameters (checked by that attack)"),
        "backend": Param("the harness's attacks, or the reference pyautoattack / torchattacks code", choices=BACKENDS),
        "torchattacks_steps": Param("backend='torchattacks': APGD/APGD-T/FAB iterations (reference 100)", ge=1),
    }  # fmt: skip

    def __init__(
        self,
        norm: str = "linf",
        eps: float = 8 / 255,
        version: str = "standard",
        components: list[str] | None = None,
        component_params: dict[str, dict[str, Any]] | None = None,
        backend: str = "native",
        torchattacks_steps: int = 100,
    ) -> None:
        super().__init__(norm, eps)
        if components is not None and version != "custom":
            raise UsageError(
                f"autoattack version {version!r} fixes its components; 'components' needs version = 'custom'"
            )
        if version == "custom" and not components:
            raise UsageError("autoattack version 'custom' needs a non-empty 'components' list")
        plan = [(c, {}) for c in components] if version == "custom" else [(n, dict(p)) for n, p in VERSIONS[version]]
        component_params = dict(component_params or {})
        unknown = sorted(set(component_params) - {n for n, _ in plan})
        if unknown:
            raise UsageError(f"component_params names components not in this autoattack: {unknown}")
        for n, p in plan:
            extra = component_params.get(n, {})
            if not isinstance(extra, dict):
                raise UsageError(f"autoattack component_params[{n!r}] must be a table, not {extra!r}")
            p.update(extra)
        self.version = version
        self.components = [n for n, _ in plan]
        self.component_params = {n: p for n, p in plan if p}
        self.backend = backend
        self.torchattacks_steps = int(torchattacks_steps)
        if backend == "torchattacks":
            self.note = (
                f"torchattacks defaults APGD/APGD-T/FAB to {TORCHATTACKS_DEFAULT_STEPS} steps; "
                f"run here with {self.torchattacks_steps} (reference: 100)"
            )
        if backend == "native":
            missing = [n for n in self.components if n not in ATTACKS]
            if missing:
                raise UsageError(
                    f"autoattack {version!r} needs attacks that are not registered: {', '.join(missing)}",
                    "install/merge the module that registers them, or use version='custom' with registered components",
                )
            self._attacks = [ATTACKS.create(n, norm=self.norm, eps=self.eps, **_fit(n, p)) for n, p in plan]
        self._plan = plan
        self._last_run: list[dict[str, Any]] = []

    def reference_shortfalls(self) -> list[dict[str, Any]]:
        """Budgets below each component's reference (prefixed with the component's name)."""
        if self.backend == "native":
            return [
                {**sf, "param": f"{name}.{sf['param']}"}
                for name, attack in zip(self.components, self._attacks)
                for sf in attack.reference_shortfalls()
            ]
        if self.backend == "pyautoattack" and self.version != "custom":
            return []  # the reference implementation with its own budgets
        out = []
        for name, params in self._plan:
            if name not in ATTACKS:
                continue
            entry = ATTACKS.get(name)
            ref = getattr(entry.factory, "REFERENCE", None)
            if ref is None:
                continue
            defaults = entry.parameters()
            for key, minimum in ref.budget.items():
                value = next((params[a] for a in _ALIASES.get(key, (key,)) if a in params), defaults.get(key))
                if self.backend == "torchattacks" and key == "steps" and name != "square":
                    value = self.torchattacks_steps
                if isinstance(value, (int, float)) and value < minimum:
                    out.append({"param": f"{name}.{key}", "value": value, "reference": minimum, "source": ref.source})
        return out

    @property
    def min_classes(self) -> int:
        if self.backend != "native":
            return 3 if any(n in ("apgd-dlr", "apgd-t", "fab-t") for n in self.components) else 2
        return max(a.min_classes for a in self._attacks)

    def set_eot(self, draws: int) -> list[str]:
        """EOT for every native component that supports it; returns the components (or backend) that do not."""
        if self.backend != "native":
            return [f"autoattack ({self.backend} backend)"]
        return [part for attack in self._attacks for part in attack.set_eot(draws)]

    @property
    def last_run(self) -> list[dict[str, Any]]:
        """Per component of the last native run: samples attacked and still robust after it."""
        return self._last_run

    def cost(self, n: int, *, num_classes: int = 10) -> Cost | None:
        """Native backend: one image to read the number of classes (per call), one forward for the starting
        margins, then each component's cost and one forward to score its points. The reference
        backends run their own loops: not declared (None)."""
        if self.backend != "native":
            return None
        total = Cost(1)
        for attack in self._attacks:
            part = attack.cost(1, num_classes=num_classes)
            if part is None:
                return None
            total += part + Cost(1)
        return total * n + Cost(1 if n else 0)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor | None = None, seed: int = 0) -> Tensor:
        assert index is not None
        if len(x):
            with torch.no_grad():
                k = model(x[:1]).shape[1]
            if k < self.min_classes:  # checked up front: a component may otherwise only fail on some batches
                raise UsageError(
                    f"autoattack {self.version!r} needs at least {self.min_classes} classes (DLR-based components), "
                    f"the model has {k}",
                    "use version='custom' with components = ['apgd-ce', 'square'] for a two-class model",
                )
        if self.backend == "pyautoattack":
            return self._pyautoattack(model, x, y, seed)
        if self.backend == "torchattacks":
            return self._torchattacks(model, x, y, seed)
        x = x.detach()
        with torch.no_grad():
            best_m = margin(model(x).float(), y)
        best_x = x.clone()
        self._last_run = []
        for name, attack in zip(self.components, self._attacks):
            todo = (best_m >= 0).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            xa = attack(model, x[todo], y[todo], index=index[todo], seed=stream_seed(seed, name))
            with torch.no_grad():
                m = margin(model(xa).float(), y[todo])
            better = m < best_m[todo]
            best_m[todo] = torch.where(better, m, best_m[todo])
            best_x[todo] = torch.where(per_sample(better, xa), xa, best_x[todo])
            self._last_run.append({"component": name, "attacked": len(todo), "robust_after": int((best_m >= 0).sum())})
        return best_x

    # ---- reference backends ---------------------------------------------------------------------
    def _fork(self, x: Tensor):
        return torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else [])

    def _pyautoattack(self, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
        from harness.compat import import_autoattack

        aa = import_autoattack()
        norm = {"linf": "Linf", "l2": "L2"}[self.norm]
        kw: dict[str, Any] = {"attacks": list(self.components)} if self.version == "custom" else {}
        with self._fork(x):
            adv = aa.AutoAttack(model, norm=norm, eps=self.eps, version=self.version, seed=seed, device=x.device, **kw)
            adv.logger.setLevel(logging.WARNING)
            self._configure_reference(adv)
            x_adv, _ = adv.run_standard_evaluation(x.detach(), y, batch_size=max(1, len(x)))
        return x_adv.to(x.dtype)

    def _configure_reference(self, adv: Any) -> None:
        """Apply custom budgets to the reference objects (only those the reference can change)."""
        if self.version != "custom":
            return  # the reference's own version settings are the budgets
        # Outside its versions the reference keeps its constructor budgets (5 APGD restarts); use the
        # same defaults as the native components instead, so 'custom' compares like with like.
        adv.apgd.n_restarts = 1
        adv.apgd_targeted.n_restarts = 1
        adv.apgd_targeted.n_target_classes = 9
        adv.fab.n_target_classes = 9
        owner = {"apgd-ce": adv.apgd, "apgd-dlr": adv.apgd, "apgd-t": adv.apgd_targeted, "fab": adv.fab}
        owner.update({"fab-t": adv.fab, "square": adv.square})
        names = {"restarts": "n_restarts", "n_target_classes": "n_target_classes", "n_queries": "n_queries"}
        names["eot_iter"] = "eot_iter"
        for comp, params in self.component_params.items():
            for k, v in params.items():
                if k not in names or not hasattr(owner[comp], names[k]):
                    raise UsageError(f"the pyautoattack backend cannot set {comp}.{k}", "use backend='native'")
                setattr(owner[comp], names[k], v)

    def _torchattacks(self, model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
        try:
            import torchattacks as ta
        except ImportError as e:
            raise UsageError(
                "the torchattacks package (backend='torchattacks') is not installed",
                "pip install torchattacks, or use backend='native'",
            ) from e

        norm = {"linf": "Linf", "l2": "L2"}[self.norm]
        with torch.no_grad():
            n_classes = model(x[:1]).shape[1]
        steps, eps = self.torchattacks_steps, self.eps
        built = []
        for name, p in self._plan:
            r = int(p.get("restarts", 1))
            n_t = min(int(p.get("n_target_classes", 9)), n_classes - 1)
            eot = int(p.get("eot_iter", 1))
            if name in ("apgd-ce", "apgd-dlr"):
                a = ta.APGD(
                    model, norm=norm, eps=eps, steps=steps, n_restarts=r, seed=seed, loss=name[5:], eot_iter=eot
                )
            elif name == "apgd-t":
                a = ta.APGDT(model, norm=norm, eps=eps, steps=steps, n_restarts=r, seed=seed, n_classes=n_classes)
                a.n_target_classes = n_t
            elif name in ("fab", "fab-t"):
                a = ta.FAB(
                    model, norm=norm, eps=eps, steps=steps, n_restarts=r, seed=seed,
                    multi_targeted=name == "fab-t", n_classes=n_classes,
                )  # fmt: skip
                a.n_target_classes = n_t
            elif name == "square":
                q = int(p.get("n_queries", 5000))
                a = ta.Square(
                    model, norm=norm, eps=eps, n_queries=q, n_restarts=r, p_init=0.8, seed=seed, resc_schedule=False
                )  # the reference AutoAttack runs Square without rescaling its schedule
            else:
                raise UsageError(f"the torchattacks backend has no component {name!r}", "use backend='native'")
            built.append(a)
        with self._fork(x):
            runner = built[0] if len(built) == 1 else ta.MultiAttack(built)  # MultiAttack needs >= 2
            return runner(x.detach(), y).to(x.dtype)


__all__ = ["BACKENDS", "VERSIONS", "AutoAttack"]
