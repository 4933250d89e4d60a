"""One registry mechanism for datasets, architectures, attacks, corruptions, objectives and suites.

Modelled on timm's `register_model`/`create_model`: an entry is registered where it is defined,
its one-line summary is the first line of its docstring, and unknown names fail with the closest
matches. Built-in entries live in plugin packages that are imported on first lookup, so the core
never imports a concrete attack or objective by name; third-party packages can add entries via the
``harness.plugins`` entry-point group.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from harness.errors import UnknownNameError, UsageError

T = TypeVar("T")

PLUGIN_GROUP = "harness.plugins"


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered factory with its name, kind and one-line summary."""

    name: str
    kind: str
    factory: Callable[..., T]
    summary: str
    tags: tuple[str, ...] = ()

    def parameters(self) -> dict[str, Any]:
        """Keyword parameters the factory accepts, with their defaults (``inspect.Parameter.empty`` if required)."""
        target = self.factory
        if dataclasses.is_dataclass(target):
            out = {}
            for f in dataclasses.fields(target):
                if not f.init:
                    continue
                if f.default is not dataclasses.MISSING:
                    out[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                    out[f.name] = f.default_factory()  # type: ignore[misc]
                else:
                    out[f.name] = inspect.Parameter.empty
            return out
        sig = inspect.signature(target)
        return {
            n: p.default
            for n, p in sig.parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and n != "self"
        }


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
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(
        self, name: str, *, summary: str | None = None, tags: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class or function under ``name``; a duplicate name is an error."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, summary=summary, tags=tags)
            return factory

        return deco

    def add(
        self, name: str, factory: Callable[..., T], *, summary: str | None = None, tags: tuple[str, ...] = ()
    ) -> None:
        if name in self._entries and self._entries[name].factory is not factory:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        self._entries[name] = Entry(name, self.kind, factory, summary or _summary(factory), tags)
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

    def get(self, name: str) -> Entry[T]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{close_matches(name, list(self._entries))}",
                f"run `harness list {self.kind}s` to see them all",
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the entry, rejecting parameters it does not take (with the closest names)."""
        entry = self.get(name)
        accepted = entry.parameters()
        takes_any = any(
            p.kind == p.VAR_KEYWORD
            for p in (
                inspect.signature(entry.factory).parameters.values()
                if not dataclasses.is_dataclass(entry.factory)
                else []
            )
        )
        if not takes_any:
            for k in kwargs:
                if k not in accepted:
                    raise UsageError(
                        f"{self.kind} {name!r} has no parameter {k!r}.{close_matches(k, list(accepted))}",
                        f"its parameters: {', '.join(accepted) or 'none'}",
                    )
        return entry.factory(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self, pattern: str = "*") -> Iterator[Entry[T]]:
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

REGISTRIES: dict[str, Registry[Any]] = {
    "datasets": DATASETS,
    "models": MODELS,
    "attacks": ATTACKS,
    "corruptions": CORRUPTIONS,
    "objectives": OBJECTIVES,
    "certifiers": CERTIFIERS,
    "verifiers": VERIFIERS,
    "suites": SUITES,
}


def import_submodules(package: str) -> None:
    """Import every module of a package, so that registering an entry needs no edit elsewhere."""
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
