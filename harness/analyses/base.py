"""Post-run analyses as registered plug-ins: what one may read (`RunView`), what it returns, the registry.

An analysis runs once the record is complete and aggregated. It reads a `RunView` and returns an
`AnalysisOutput`: a section the engine stores as ``result.extra[analysis.name]`` (``None``: nothing
stored) and findings appended to ``result.findings``. The engine runs every registered analysis in
its declared ``order``, so a new metric is one module here plus its report section
(`harness.reporting.sections`); docs/architecture.md, "how to add a report metric".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from harness.data.base import ImageDataset
from harness.ordered_registry import OrderedRegistry
from harness.records import RecordStore
from harness.results import Finding, Result
from harness.suites import Entry, Suite


@dataclass(frozen=True)
class RunView:
    """What a post-run analysis may read of a finished evaluation (explicit fields; never the engine)."""

    store: RecordStore  # the complete per-sample record
    entries: tuple[Entry, ...]  # suite entries, automatic ones included, in record column order
    attackers: tuple[Any, ...]  # the built attacker / certifier of each entry (same order)
    result: Result  # aggregated so far; earlier analyses' sections and findings are already in it
    seed: int  # the evaluation seed (bootstrap and unit-test draws are keyed by it)
    checks: str  # "basic" or "full"
    calibration: Mapping[str, Any]  # the suite's [calibration] table
    temperature: float | None  # the fitted softmax temperature, None when not scaled
    temperature_split: Mapping[str, Any] | None  # {"split", "n"} the temperature was fitted on
    model: nn.Module  # what the attack unit test attacks: the model, or its guard when it gives no gradient
    dataset: ImageDataset  # the evaluated data (after --max-samples)
    suite: Suite
    device: torch.device
    eot_samples: int  # forward passes per gradient / verdict on a stochastic model (1: deterministic)
    compile_fallback: str | None = None  # why torch.compile failed when --compile was asked for


@dataclass(frozen=True)
class AnalysisOutput:
    """One analysis's contribution: ``result.extra[name]`` (``None``: none) and findings."""

    section: dict[str, Any] | None = None
    findings: tuple[Finding, ...] = ()


class Analysis(ABC):
    """A post-run analysis: ``name`` (the ``result.extra`` key it fills), ``order`` (lower runs first)."""

    name: ClassVar[str]
    order: ClassVar[int]

    @abstractmethod
    def run(self, view: RunView) -> AnalysisOutput:
        """The section and findings of this analysis for one finished evaluation."""


ANALYSES: OrderedRegistry[Analysis] = OrderedRegistry("analysis")

A = TypeVar("A", bound=type[Analysis])


def register_analysis(cls: A) -> A:
    """Class decorator: register one instance of ``cls`` under ``cls.name`` at ``cls.order``."""
    ANALYSES.add(cls.name, cls(), order=cls.order)
    return cls
