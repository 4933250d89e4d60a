"""The contract between the chunk loop and one kind of suite entry: its record columns, its batch work.

The chunk loop (`harness.engine.evaluation`) knows no kind: per chunk it asks each entry's runner for
the columns it writes, then per batch and threat-model group calls `EntryRunner.run`, which writes
those columns for the batch's rows and clears ``alive`` where the entry broke a sample. What a runner
needs from the evaluation (the fp32 verdict, the attack model, the seed) comes through `Engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from torch import Tensor, nn

from harness.engine.nested import NestedPlan, Witnesses
from harness.engine.verdicts import Scored
from harness.suites import Entry


class GalleryHooks(Protocol):
    """Where runners hand the points they scored to the report's gallery (`harness.engine.gallery`)."""

    def attack(self, k: int, batch: Batch, act: Tensor, points: Tensor) -> None: ...

    def corruption(self, k: int, batch: Batch, points: Tensor) -> None: ...

    def smoothing(self, engine: Engine, k: int, batch: Batch) -> None: ...


class Engine(Protocol):
    """What runners use of the evaluation (implemented by `harness.engine.evaluation.Evaluation`)."""

    entries: list[Entry]
    attackers: list[Any]
    skipped: dict[int, str]
    num_classes: int
    cal_width: int
    model: nn.Module  # the model itself, in eval mode (verifiers read its graph)
    verdict: nn.Module  # the guarded fp32 model the verdicts use
    guarded: nn.Module  # the guarded model at the search precision
    nesting: NestedPlan  # which attack entries give and take nested-eps witnesses (harness.engine.nested)
    gallery: GalleryHooks

    def score(self, x_adv: Tensor, y: Tensor, logits: Tensor | None = None) -> Scored: ...

    def attack_model(self, k: int, eager: bool = False) -> nn.Module: ...

    def entry_seed(self, k: int) -> int: ...

    def gradient_source(self, k: int) -> str | None: ...

    @property
    def reduced_precision(self) -> bool: ...


@dataclass
class Batch:
    """One batch of a chunk: the inputs on the device, its rows ``sl`` in the chunk's columns, and ``alive``
    (per sample: not yet broken in the current group — runners clear it where they break a sample), and
    the batch's nested-eps ``witnesses`` (shared by its groups; None: nested eps off)."""

    x: Tensor
    y: Tensor
    ids: Tensor
    sl: slice
    alive: Tensor
    cols: dict[str, np.ndarray]
    witnesses: Witnesses | None = None

    def __len__(self) -> int:
        return len(self.x)


class EntryRunner:
    """Runs the entries of one kind (``kind``): declares their record columns and fills them per batch."""

    kind: ClassVar[str]

    def columns(self, engine: Engine, k: int, n: int) -> dict[str, np.ndarray]:
        """Entry k's columns for a chunk of ``n`` samples, at their 'not run' values."""
        raise NotImplementedError

    def prepare(self, engine: Engine, k: int, x: Tensor) -> None:
        """Check, before any batch runs, that entry k can run on this model (``x``: the first clean batch)."""

    def run(self, engine: Engine, k: int, batch: Batch) -> None:
        """Run entry k on one batch; write its columns, clear ``batch.alive`` where it broke a sample."""
        raise NotImplementedError

    def group_fields(self, engine: Engine, first: Entry) -> dict[str, Any]:
        """Fields of the `GroupResult` of a group whose first entry is ``first`` (beyond key/kind/norm/eps)."""
        return {}

    def entry_fields(self, engine: Engine, k: int) -> dict[str, Any]:
        """Kind-specific fields of entry k's row in result.json."""
        return {}
