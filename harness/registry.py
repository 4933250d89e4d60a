"""One registry mechanism for datasets, architectures, attacks, corruptions, objectives and suites.

Modelled on timm's `register_model`/`create_model`: an entry is registered where it is defined,
its one-line summary is the first line of its docstring, and unknown names fail with the closest
matches. Every entry's parameters are declared (`harness.params`): `create` checks each value
against its declared kind and range before the factory runs. Built-in entries live in plugin
packages that are imported on first lookup, so the core never imports a concrete attack or
objective by name; third-party packages can add entries via the ``harness.plugins`` entry-point
group.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Generic, TypeVar

from harness.errors import UnknownNameError, UsageError
from harness.params import Param, declared_params, resolve
from harness.spec import split_spec

T = TypeVar("T")

PLUGIN_GROUP = "harness.plugins"


@dataclass(frozen=True)
class Registered(Generic[T]):
    """A registered factory with its name, kind, one-line summary and declared parameters."""

    name: str
    kind: str
    factory: Callable[..., T]
    summary: str
    tags: tuple[str, ...] = ()
    # Every public keyword parameter, complete (kind, range, default): see `harness.params`.
    params: dict[str, Param] = field(default_factory=dict, hash=False, compare=False)
    takes_any: bool = False  # the factory also takes **kwargs (only declared parameters are checked)

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters the factory accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
        return {n: (inspect.Parameter.empty if p.required else p.default) for n, p in self.params.items()}

    @property
    def where(self) -> str:
        return f"{self.kind} {self.name!r}"

    def validate(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` checked against the declarations (unknown names, kind, range, choices, required ones).

        Returns the normalised values (ints for integer parameters, floats for numbers); raises one
        `UsageError` naming the entry, the parameter, the value and what is allowed.
        """
        out: dict[str, Any] = {}
        for k, v in kwargs.items():
            p = self.params.get(k)
            if p is None:
                if self.takes_any and not k.startswith("_"):
                    out[k] = v
                    continue
                raise UsageError(
                    f"{self.where} has no parameter {k!r}.{close_matches(k, list(self.params))}",
                    f"its parameters: {', '.join(self.params) or 'none'}",
                )
            out[k] = p.check(v, k, self.where)
        missing = [n for n, p in self.params.items() if p.required and n not in out]
        if missing:
            p = self.params[missing[0]]
            raise UsageError(
                f"{self.where} needs the parameter {missing[0]!r} ({p.allowed()})",
                f"{missing[0]}: {p.doc}" if p.doc else f"run `harness list {self.kind}s {self.name}`",
            )
        return out

    def parse(self, raw: dict[str, str]) -> dict[str, Any]:
        """Command-line text values (``-p key=value``, dataset specs) converted by their declared kinds."""
        out: dict[str, Any] = {}
        for k, text in raw.items():
            p = self.params.get(k)
            out[k] = p.parse(text) if p is not None else Param().parse(text)
        return out


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def close_matches(name: str, names: list[str]) -> str:
    """A ' Did you mean ...?' suffix, or '' when nothing is close."""
    m = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(x) for x in m)}?" if m else ""


class Registry(Generic[T]):
    """A name -> factory mapping for one kind of thing (e.g. "attack")."""

    def __init__(self, kind: str, plugins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._plugins = plugins
        self._entries: dict[str, Registered[T]] = {}
        self._loaded = False

    def register(
        self,
        name: str,
        *,
        summary: str | None = None,
        tags: tuple[str, ...] = (),
        params: Mapping[str, Param] | None = None,
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or function under ``name``; a duplicate name is an error.

        ``params`` declares parameters (range, choices, doc) in addition to a class's ``PARAMS``.
        """

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, summary=summary, tags=tags, params=params)
            return factory

        return deco

    def add(
        self,
        name: str,
        factory: Callable[..., T],
        *,
        summary: str | None = None,
        tags: tuple[str, ...] = (),
        params: Mapping[str, Param] | None = None,
    ) -> None:
        if name in self._entries and self._entries[name].factory is not factory:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        resolved, takes_any = resolve(factory, declared_params(factory, params))
        self._entries[name] = Registered(
            name, self.kind, factory, summary or _summary(factory), tags, resolved, takes_any
        )
        try:
            factory.registry_name = name  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._plugins:
            importlib.import_module(mod)
        for ep in metadata.entry_points(group=PLUGIN_GROUP):
            ep.load()

    def get(self, name: str) -> Registered[T]:
        self._load()
        if not isinstance(name, str):
            raise UsageError(f"a {self.kind} name must be a string, not {name!r}", f"run `harness list {self.kind}s`")
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{close_matches(name, list(self._entries))}",
                f"run `harness list {self.kind}s` to see them all",
            ) from None

    def validate(self, name: str, /, **kwargs: Any) -> dict[str, Any]:
        """The checked, normalised parameters `create` would pass to the factory (nothing is built)."""
        return self.get(name).validate(kwargs)

    def create(self, name: str, /, **kwargs: Any) -> T:
        """Build the entry after checking every parameter against its declaration (`Registered.validate`)."""
        entry = self.get(name)
        return entry.factory(**entry.validate(kwargs))

    def parse(self, name: str, raw: dict[str, str]) -> dict[str, Any]:
        """Text values from the command line converted by the entry's declared kinds (see `Param.parse`)."""
        return self.get(name).parse(raw)

    def from_spec(self, spec: str, /, **overrides: Any) -> T:
        """Build from a ``name:key=value,...`` spec; values are converted by the declared kinds."""
        name, raw = split_spec(spec)
        return self.create(name, **{**self.parse(name, raw), **overrides})

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> Iterator[Registered[T]]:
        for n in self.names(pattern):
            yield self._entries[n]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __len__(self) -> int:
        self._load()
        return len(self._entries)


DATASETS: Registry[Any] = Registry("dataset", plugins=("harness.data",))
MODELS: Registry[Any] = Registry("model", plugins=("harness.models",))
ATTACKS: Registry[Any] = Registry("attack", plugins=("attacks",))
CORRUPTIONS: Registry[Any] = Registry("corruption", plugins=("attacks",))
OBJECTIVES: Registry[Any] = Registry("objective", plugins=("defenses",))
CERTIFIERS: Registry[Any] = Registry("certifier", plugins=("attacks",))
VERIFIERS: Registry[Any] = Registry("verifier", plugins=("harness.verify",))
SUITES: Registry[Any] = Registry("suite", plugins=("harness.suites",))
RECIPES: Registry[Any] = Registry("recipe", plugins=("harness.recipes",))

REGISTRIES: dict[str, Registry[Any]] = {
    "datasets": DATASETS,
    "models": MODELS,
    "attacks": ATTACKS,
    "corruptions": CORRUPTIONS,
    "objectives": OBJECTIVES,
    "certifiers": CERTIFIERS,
    "verifiers": VERIFIERS,
    "suites": SUITES,
    "recipes": RECIPES,
}


def import_submodules(package: str) -> None:
    """Import every module of a package, so that registering an entry needs no edit elsewhere."""
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
