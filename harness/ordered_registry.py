"""Named plug-ins kept in a declared order (post-run analyses, report sections), with scoped registration.

Unlike `harness.registry` (factories with declared parameters, created by name from a spec), these
plug-ins are ready objects that all run, in order. `scoped()` lets a test register one and drops it
on exit, so no registration leaks from one test into the next.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from harness.errors import UsageError

T = TypeVar("T")


class OrderedRegistry(Generic[T]):
    """name -> plug-in, iterated by (order, registration order)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[int, int, T]] = {}
        self._seq = itertools.count()

    def add(self, name: str, item: T, *, order: int) -> T:
        """Register ``item`` under ``name``; a second plug-in of the same name is refused."""
        if not name or not isinstance(name, str):
            raise UsageError(f"a {self.kind} needs a non-empty name, got {name!r}", "set its `name`")
        if name in self._items:
            raise UsageError(f"{self.kind} {name!r} is registered twice", "give each one its own name")
        self._items[name] = (int(order), next(self._seq), item)
        return item

    def ordered(self) -> list[T]:
        """The plug-ins, lowest order first; equal orders keep their registration order."""
        return [item for _, _, item in sorted(self._items.values(), key=lambda t: (t[0], t[1]))]

    def names(self) -> list[str]:
        """The names, in the order `ordered` runs them."""
        return [n for n, _ in sorted(self._items.items(), key=lambda kv: (kv[1][0], kv[1][1]))]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    @contextmanager
    def scoped(self) -> Iterator[OrderedRegistry[T]]:
        """Registrations made inside the block are dropped on exit (and nothing registered before is lost)."""
        saved = dict(self._items)
        try:
            yield self
        finally:
            self._items = saved
