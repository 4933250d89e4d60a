"""`harness evaluate --plan-only`: what an evaluation will cost, in model passes, before it runs.

Built from the suite's declared budgets (each attack's ``cost``, `harness.cost`) and the data size,
without loading the model: per suite entry, the forward and backward passes of single images the
attack's full budget takes plus the engine's own verdict pass on every attacked image, summed over
the batches the engine will run. Every number is an upper bound: early stopping (samples already
broken are not attacked again, and attacks drop the ones they break) and nested eps (a sample broken
at a smaller eps of the norm is not attacked at the larger ones, `harness.engine.nested`) only lower
the real count; the plan keeps the bound, since how much they save depends on the model's robustness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.cost import Cost
from harness.labels import threat_label
from harness.loading import load_dataset
from harness.suites import Entry, Suite, load_suite


@dataclass(frozen=True)
class PlanRow:
    """One suite entry's share: passes over the whole data (None: the attack declares no cost)."""

    key: str
    text: str  # what a person reads: ``pgd  L∞ 8/255``
    kind: str
    cost: Cost | None
    note: str = ""


@dataclass
class Plan:
    """The expected cost of one evaluation, per suite entry, with the clean pass and the total."""

    dataset: str
    n: int
    num_classes: int
    suite: str
    batch_size: int | None  # None: chosen at run time (auto); the plan assumes the worst, 1
    eot: int
    clean: Cost
    rows: list[PlanRow] = field(default_factory=list)

    @property
    def total(self) -> Cost:
        """Clean pass plus every entry that declares its cost."""
        out = self.clean
        for r in self.rows:
            out = out + r.cost if r.cost is not None else out
        return out

    @property
    def undeclared(self) -> list[str]:
        return [r.key for r in self.rows if r.cost is None]

    def to_dict(self) -> dict[str, Any]:
        def c(v: Cost | None) -> dict[str, int] | None:
            return None if v is None else {"forward": v.forward, "backward": v.backward, "passes": v.passes}

        return {
            "dataset": self.dataset,
            "n": self.n,
            "num_classes": self.num_classes,
            "suite": self.suite,
            "batch_size": self.batch_size,
            "eot_samples": self.eot,
            "clean": c(self.clean),
            "entries": [
                {"key": r.key, "label": r.text, "kind": r.kind, "cost": c(r.cost), "note": r.note} for r in self.rows
            ],
            "total": c(self.total),
            "undeclared": self.undeclared,
        }

    def table(self) -> Any:
        """A rich Table: one row per entry, the clean pass first and the total last."""
        from rich.table import Table

        t = Table(
            title=f"plan: suite {self.suite} on {self.dataset} (n={self.n}, {self.num_classes} classes)",
            caption=self.caption(),
            caption_justify="left",
        )
        notes = any(r.note for r in self.rows)
        t.add_column("entry", no_wrap=True)
        for col in ("forward", "backward", "passes", "per image"):
            t.add_column(col, justify="right", no_wrap=True)
        if notes:
            t.add_column("note")
        tail = lambda note: [note] if notes else []
        t.add_row("clean verdict", *_cells(self.clean, self.n), *tail(""))
        for r in self.rows:
            cells = ["?"] * 4 if r.cost is None else _cells(r.cost, self.n)
            t.add_row(r.text, *cells, *tail(r.note))
        bound = "total (upper bound)" if not self.undeclared else "total of the declared entries"
        t.add_row(f"[bold]{bound}[/]", *_cells(self.total, self.n), *tail(""))
        return t

    def caption(self) -> str:
        bits = [
            "passes = forward + backward passes of single images through the model, each entry's full budget "
            "plus the engine's verdict on every attacked image; early stopping only lowers them"
        ]
        if self.batch_size is None:
            bits.append("batch size chosen at run time: per-batch passes counted per image")
        if self.eot > 1:
            bits.append(f"EOT: {self.eot} draws per verdict and gradient")
        else:
            bits.append("a randomised model gets EOT (10 draws unless --eot-samples) and costs about that much more")
        bits.append("not counted: the sanity checks on the first 64 images, and the Square attack the engine adds "
                    "per threat model if the gradients prove obfuscated")  # fmt: skip
        if self.undeclared:
            bits.append(f"cost not declared (left out of the total): {', '.join(self.undeclared)}")
        return "; ".join(bits) + "."


def _cells(c: Cost, n: int) -> list[str]:
    per = c.passes / n if n else 0.0
    return [f"{c.forward:,}", f"{c.backward:,}", f"{c.passes:,}", f"{per:,.1f}"]


def _batches(n: int, batch_size: int | None, chunk_size: int) -> list[int]:
    """The batch sizes the engine runs n images in: chunks of ``chunk_size``, each cut into batches."""
    b = max(1, min(batch_size or 1, chunk_size))
    out: list[int] = []
    for start in range(0, n, chunk_size):
        rows = min(chunk_size, n - start)
        out += [b] * (rows // b) + ([rows % b] if rows % b else [])
    return out


def entry_label(e: Entry) -> str:
    """A suite entry as people read it: ``pgd  L∞ 8/255`` for an attack or a verifier, its key otherwise."""
    if e.kind in ("attack", "verify"):
        return f"{e.label or e.name}  {threat_label(e.norm, e.eps)}"
    if e.kind == "radius":
        p = dict(e.params)
        attack = p["attack"] if isinstance(p["attack"], str) else "+".join(p["attack"])
        return f"{e.key}  {attack} / {p['verifier']}  {threat_label(e.norm, p['max_eps'])}"
    return e.key


def plan_entries(
    entries: list[Entry],
    attackers: list[Any],
    *,
    n: int,
    num_classes: int,
    batch_size: int | None = 256,
    chunk_size: int = 512,
    eot: int = 1,
) -> tuple[Cost, list[PlanRow]]:
    """(clean pass, one `PlanRow` per entry) for ``n`` images run in the engine's batches."""
    batches = _batches(n, batch_size, chunk_size)
    rows = []
    for e, a in zip(entries, attackers):
        note = f"runs only on finding {' or '.join(e.when)}" if e.when else ""
        if e.kind == "corruption":
            cost: Cost | None = Cost(n * eot)
        elif e.kind == "verify":  # bound propagation or a solver, not model passes (the MILP: time_limit per point)
            cost, note = None, "a verifier: its cost is not counted in model passes"
        else:
            declared = [a.cost(b, num_classes=num_classes) for b in batches] if hasattr(a, "cost") else [None]
            if any(d is None for d in declared):
                cost, note = None, (note + "; " if note else "") + "cost not declared by the attack"
            else:
                cost = sum(declared, Cost())  # type: ignore[arg-type]
                if e.kind in ("attack", "radius"):
                    cost = cost + Cost(n * eot)  # the engine's fp32 verdict on every attacked image
                if e.kind == "radius" and getattr(a, "verifier", None) is not None:
                    note = (note + "; " if note else "") + "the attack only: the verifier's radius is not model passes"
        rows.append(PlanRow(e.key, entry_label(e), e.kind, cost, note))
    return Cost(n * eot), rows


def plan_evaluation(
    dataset: Any,
    suite: str | Suite = "quick",
    *,
    max_samples: int | None = None,
    eps: dict[str, tuple[float, ...]] | None = None,
    batch_size: int | str = 256,
    chunk_size: int = 512,
    eot_samples: int | None = None,
) -> Plan:
    """The `Plan` of evaluating any model on ``dataset`` (a spec or an `ImageDataset`) with ``suite``.

    Loads the dataset's description (size, classes, eps grid) and the suite, never a model.
    """
    ds = load_dataset(dataset)
    s = load_suite(suite)
    n = len(ds) if max_samples is None else min(len(ds), int(max_samples))
    entries = s.resolve({**ds.eps_grid, **(eps or {})})
    attackers = [e.build() for e in entries]
    eot = int(eot_samples or 1)
    if eot > 1:  # as the engine does: attacks that declare EOT support (`Attack.set_eot`) average over the draws
        for a in attackers:
            set_eot = getattr(a, "set_eot", None)
            if set_eot is not None:
                set_eot(eot)
    bs = batch_size if isinstance(batch_size, int) else None
    clean, rows = plan_entries(
        entries, attackers, n=n, num_classes=ds.num_classes, batch_size=bs, chunk_size=chunk_size, eot=eot
    )
    return Plan(ds.name, n, ds.num_classes, s.name, bs, eot, clean, rows)
