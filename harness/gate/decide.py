"""The decision: per metric, a paired one-sided McNemar test with tolerance and floors (`decide`), and
the gate report with its rich, Markdown, JUnit and GitHub renderers."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from harness.atomic import append_text, write_text
from harness.errors import UsageError
from harness.gate.baseline import (
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCE,
    Baseline,
    check_floor_keys,
    check_samples,
    check_suite,
    validate_thresholds,
)
from harness.gate.run import Outcome
from harness.labels import key_label
from harness.stats import holm, mcnemar_one_sided

# ---- decisions ------------------------------------------------------------------------------------


@dataclass
class MetricDecision:
    """The gate's decision on one metric: paired counts, the McNemar p-value, the floor."""

    key: str
    kind: str
    n: int
    current: float
    baseline: float | None = None
    lost: int = 0  # baseline right, current wrong
    gained: int = 0  # baseline wrong, current right
    p_value: float | None = None
    floor: float | None = None
    drop_exceeds: bool = False
    significant: bool = False
    improved: bool = False  # significantly better than the baseline by more than the tolerance

    @property
    def regression(self) -> bool:
        return self.drop_exceeds and self.significant

    @property
    def below_floor(self) -> bool:
        return self.floor is not None and self.current < self.floor - 1e-12

    @property
    def failed(self) -> bool:
        return self.regression or self.below_floor

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None else self.current - self.baseline

    @property
    def verdict(self) -> str:
        parts = []
        if self.regression:
            parts.append("REGRESSION")
        if self.below_floor:
            parts.append("BELOW FLOOR")
        if parts:
            return " + ".join(parts)
        if self.improved:
            return "ok (improved)"
        if self.drop_exceeds:
            return "ok (not significant)"
        if self.significant:
            return "ok (within tolerance)"
        return "ok"

    def reason(self, tolerance: float, alpha: float) -> str:
        out = []
        if self.regression:
            out.append(
                f"{self.key}: {100 * self.baseline:.1f}% -> {100 * self.current:.1f}% "  # type: ignore[operator]
                f"(drop {100 * -self.delta:.1f} pp > {100 * tolerance:.1f} pp; "  # type: ignore[operator]
                f"{self.lost} samples lost, {self.gained} gained; McNemar p = {self.p_value:.2g} <= {alpha})"
            )
        if self.below_floor:
            out.append(f"{self.key}: {100 * self.current:.1f}% is below the floor {100 * self.floor:.1f}%")  # type: ignore[operator]
        return "; ".join(out)


# The former name of `MetricDecision` (public API: ``harness.gate.MetricCheck``).
MetricCheck = MetricDecision


@dataclass
class GateReport:
    """The gate's decisions on every metric of one run, with renderers for the log, JUnit and Markdown."""

    metrics: list[MetricDecision]
    tolerance: float
    alpha: float
    n: int
    seed: int
    subject: str
    baseline_path: str = ""
    dataset: str = ""
    suite: str = ""
    correction: str = "none"
    seconds: float = 0.0
    # ECE gate: (group, baseline ECE, current ECE) for every group whose ECE rose more than allowed.
    ece_failures: list[tuple[str, float, float]] = field(default_factory=list)
    max_ece_rise: float | None = None

    @property
    def checks(self) -> list[MetricDecision]:
        """The former name of `metrics` (kept for API users)."""
        return self.metrics

    @property
    def passed(self) -> bool:
        return not any(c.failed for c in self.metrics) and not self.ece_failures

    def ece_reasons(self) -> list[str]:
        return [
            f"{k}: ECE rose from {b:.4f} to {c:.4f} (more than the allowed {self.max_ece_rise:g})"
            for k, b, c in self.ece_failures
        ]

    @property
    def failures(self) -> list[MetricDecision]:
        return [c for c in self.metrics if c.failed]

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def _has_floors(self) -> bool:
        return any(c.floor is not None for c in self.metrics)

    def _rows(self) -> list[list[str]]:
        rows = []
        floors = self._has_floors()
        for c in self.metrics:
            row = [
                # the key (what --min-robust names) and, beside it, eps as people write it: (L∞ 8/255)
                c.key if key_label(c.key) == c.key else f"{c.key} ({key_label(c.key)})",
                "–" if c.baseline is None else f"{100 * c.baseline:.1f}",
                f"{100 * c.current:.1f}",
                "–" if c.delta is None else f"{100 * c.delta:+.1f}",
                "–" if c.baseline is None else f"{c.lost}/{c.gained}",
                "–" if c.p_value is None else f"{c.p_value:.2g}",
            ]
            if floors:
                row.append("–" if c.floor is None else f"{100 * c.floor:.1f}")
            rows.append([*row, c.verdict])
        return rows

    def headers(self) -> list[str]:
        h = ["metric", "base %", "now %", "Δ pp", "lost/gain", "p"]
        return [*h, "floor %", "verdict"] if self._has_floors() else [*h, "verdict"]

    def headline(self) -> str:
        state = "PASS" if self.passed else f"FAIL ({len(self.failures)} of {len(self.metrics)} metrics)"
        return f"robustness gate: {state}"

    def rule(self) -> str:
        corr = "" if self.correction == "none" else f", {self.correction}-corrected"
        return (
            f"n = {self.n} samples{f' of {self.dataset}' if self.dataset else ''}"
            f"{f', suite {self.suite}' if self.suite else ''}, evaluation seed {self.seed}; "
            f"regression = drop > {100 * self.tolerance:.1f} pp AND one-sided exact McNemar p <= {self.alpha}{corr}"
        )

    def table(self) -> Any:
        """A rich Table (the one printed in the log)."""
        from rich import box
        from rich.table import Table

        t = Table(
            title=self.headline(), caption=self.rule(), title_justify="left", caption_justify="left", box=box.SIMPLE
        )
        for h in self.headers():
            t.add_column(h, justify="left" if h in ("metric", "verdict") else "right")
        for row, c in zip(self._rows(), self.metrics):
            style = "bold red" if c.failed else None
            t.add_row(*row, style=style)
        return t

    def text(self, width: int = 110) -> str:
        """The same table as plain text (AssertionError messages, JUnit system-out)."""
        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=width, color_system=None, force_terminal=False, highlight=False).print(self.table())
        return buf.getvalue().rstrip() + "\n"

    def markdown(self) -> str:
        mark = "✅" if self.passed else "❌"
        lines = [f"### {mark} {self.headline()}", "", f"`{self.subject}` vs baseline `{self.baseline_path or '–'}`", ""]
        hs = self.headers()
        lines.append("| " + " | ".join(hs) + " |")
        lines.append("|" + "|".join([":--"] + ["--:"] * (len(hs) - 2) + [":--"]) + "|")
        for row, c in zip(self._rows(), self.metrics):
            if c.failed:
                row = [*row[:-1], f"**{row[-1]}**"]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", self.rule() + "."]
        lines += [f"- ECE: {r}" for r in self.ece_reasons()]
        for c in self.failures:
            lines.append(f"- {c.reason(self.tolerance, self.alpha)}")
        if self.passed and any(c.improved for c in self.metrics):
            lines.append("- significantly better than the baseline: consider updating it (docs/ci.md)")
        return "\n".join(lines) + "\n"

    def junit_xml(self) -> str:
        """JUnit XML: one testcase per metric; a failure element for each regression or floor breach."""
        suite = ET.Element(
            "testsuite",
            name="harness.check",
            tests=str(len(self.metrics)),
            failures=str(len(self.failures)),
            errors="0",
            skipped="0",
            time=f"{self.seconds:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        for k, v in (
            ("subject", self.subject),
            ("baseline", self.baseline_path),
            ("dataset", self.dataset),
            ("suite", self.suite),
            ("n", str(self.n)),
            ("seed", str(self.seed)),
            ("tolerance", str(self.tolerance)),
            ("alpha", str(self.alpha)),
        ):
            ET.SubElement(props, "property", name=k, value=v)
        for c in self.metrics:
            case = ET.SubElement(suite, "testcase", classname="harness.check", name=c.key, time="0")
            if c.failed:
                kind = "regression" if c.regression else "floor"
                f = ET.SubElement(case, "failure", message=c.reason(self.tolerance, self.alpha), type=kind)
                f.text = c.reason(self.tolerance, self.alpha)
        out = ET.SubElement(suite, "system-out")
        out.text = self.text()
        root = ET.Element(
            "testsuites", name="harness", tests=str(len(self.metrics)), failures=str(len(self.failures)), errors="0"
        )
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def write_junit(self, path: str | Path) -> None:
        write_text(path, self.junit_xml())

    def write_summary(self, path: str | Path | None, append: bool = False) -> None:
        if path is None:
            return
        p = Path(path)
        if append:
            append_text(p, self.markdown() + "\n")
        else:
            write_text(p, self.markdown())


def decide(
    outcome: Outcome,
    baseline: Baseline | None = None,
    *,
    tolerance: float | None = None,
    alpha: float | None = None,
    min_robust: dict[str, float] | None = None,
    correction: str = "none",
    max_ece_rise: float | None = None,
) -> GateReport:
    """Decide every metric of ``outcome`` against ``baseline`` (paired) and the floors.

    With ``max_ece_rise`` the calibration error (ECE, 15 bins) of every group the baseline recorded
    must not exceed the baseline's by more than that absolute amount.

    Without a baseline only floors apply. Thresholds default to the baseline's (then to 2 pp and
    0.05); ``min_robust`` is merged over the baseline's floors. ``correction="holm"`` adjusts the
    McNemar p-values for the number of metrics (Holm-Bonferroni).
    """
    tol = tolerance if tolerance is not None else (baseline.tolerance if baseline else DEFAULT_TOLERANCE)
    a = alpha if alpha is not None else (baseline.alpha if baseline else DEFAULT_ALPHA)
    floors = {**(baseline.min_robust if baseline else {}), **(min_robust or {})}
    validate_thresholds(tol, a, floors)
    if correction not in ("none", "holm"):
        raise UsageError(f"unknown correction {correction!r}", "use 'none' or 'holm'")
    keys = [m["key"] for m in outcome.metrics]
    check_floor_keys(floors, keys)
    if baseline is not None:
        check_samples(baseline, outcome.ids, outcome.dataset.get("sha256"), outcome.source or "the evaluation")
        check_suite(baseline, outcome.entries, outcome.source or "the evaluation")
        # A baseline written before verified floors existed has none: those metrics are shown, not gated.
        lacking = [
            m["key"] for m in outcome.metrics if m["key"] not in baseline.metric_keys() and m["kind"] != "verified"
        ]
        if lacking:
            raise UsageError(
                f"the baseline {baseline.path} has no bits for metric(s) {lacking} of the same suite",
                "it was edited by hand; re-create it (docs/ci.md: updating a baseline)",
            )
    decisions = []
    for m in outcome.metrics:
        cur = outcome.bits[m["key"]]
        n = len(cur)
        c = MetricDecision(m["key"], m["kind"], n, float(cur.mean()) if n else 0.0, floor=floors.get(m["key"]))
        if baseline is not None and m["key"] in baseline.metric_keys():
            ref = baseline.bits(m["key"])
            c.baseline = float(ref.mean()) if n else 0.0
            c.lost = int((ref & ~cur).sum())
            c.gained = int((~ref & cur).sum())
            # mcnemar_one_sided(b, c): b = A wrong & B right, c = A right & B wrong; A = baseline.
            c.p_value = mcnemar_one_sided(c.gained, c.lost)
            # Integer comparison of the paired drop (lost - gained) with tolerance * n avoids float ties.
            c.drop_exceeds = (c.lost - c.gained) > tol * n + 1e-9
            # The mirror test flags a stale baseline (never a failure): update it to keep the gate tight.
            c.improved = (c.gained - c.lost) > tol * n + 1e-9 and mcnemar_one_sided(c.lost, c.gained) <= a
        decisions.append(c)
    if correction == "holm":
        for c, p in zip(decisions, holm([c.p_value for c in decisions])):
            c.p_value = p
    for c in decisions:
        c.significant = c.p_value is not None and c.p_value <= a
    ece_failures = []
    if max_ece_rise is not None:
        if not (max_ece_rise >= 0):
            raise UsageError(f"max ECE rise {max_ece_rise} must be >= 0", "e.g. --max-ece-rise 0.02")
        if baseline is None or not baseline.calibration:
            raise UsageError("--max-ece-rise needs a baseline with calibration numbers", "re-create the baseline")
        for k, b in baseline.calibration.items():
            cur = outcome.calibration.get(k)
            if cur is not None and cur - b > max_ece_rise + 1e-12:
                ece_failures.append((k, b, cur))
    return GateReport(
        metrics=decisions,
        tolerance=tol,
        alpha=a,
        n=len(outcome.ids),
        seed=outcome.seed,
        subject=str(outcome.model.get("source") or outcome.model.get("name") or outcome.source),
        baseline_path=baseline.path if baseline else "",
        dataset=(baseline.dataset.get("spec") if baseline else "") or str(outcome.dataset.get("name", "")),
        suite=str((baseline.suite if baseline else outcome.suite).get("name", "")),
        correction=correction,
        ece_failures=ece_failures,
        max_ece_rise=max_ece_rise,
    )
