"""Side-by-side comparison of runs, with exact McNemar tests on the per-sample records.

Two runs are paired when they evaluated the same data (dataset sha256) on the same sample ids and
both kept their per-sample record. Then each accuracy difference gets a two-sided exact McNemar
test on the discordant samples, and the p-values of one comparison are Holm-adjusted together, so a
"significant" label survives the number of differences looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError
from harness.labels import key_label
from harness.records import open_record, read_index
from harness.records.outcome import beyond, disagreements, read_bits, read_radius, verified_key
from harness.reporting import summary as S
from harness.reporting.runs import Run, load_runs
from harness.results import Accuracy, Result
from harness.stats import holm, mcnemar_exact


@dataclass
class SampleBits:
    """Per-sample correctness of one run: clean and per group (robust = clean right and no entry broke it)."""

    ids: np.ndarray
    clean: np.ndarray
    groups: dict[str, np.ndarray]


def sample_bits(records_dir: str | Path) -> SampleBits:
    """Read a finished per-sample record into one bool array per group (`records.outcome.read_bits`),
    and per threat model with verifiers its verified bits (key `verified_key`)."""
    rb = read_bits(records_dir, complete=False)
    return SampleBits(rb.ids, rb.clean, {**rb.groups, **{verified_key(g): b for g, b in rb.verified.items()}})


@dataclass
class PairTest:
    """One difference (run vs baseline on one metric) and its paired test, when one was possible."""

    metric: str
    baseline: str
    other: str
    baseline_acc: float
    other_acc: float
    diff: float
    only_baseline_right: int | None = None
    only_other_right: int | None = None
    p_value: float | None = None
    p_holm: float | None = None
    significant: bool | None = None
    note: str = ""


@dataclass
class Comparison:
    """The comparison: accuracies per metric and run, and each run's differences from the baseline."""

    runs: list[str]
    paths: list[str | None]
    metrics: list[str]
    table: dict[str, list[dict[str, Any] | None]]
    tests: list[PairTest] = field(default_factory=list)
    alpha: float = 0.05
    notes: list[str] = field(default_factory=list)
    # Per run: {"ece": {group: ECE}, "certified": {smoothing group: {radius: certified accuracy}}}.
    beyond: list[dict[str, Any]] = field(default_factory=list)
    # Radius runs against fixed-eps runs (`radius_agreement`): per (radius run, radius group, fixed run, eps).
    agreement: list[dict[str, Any]] = field(default_factory=list)
    # Metric key -> what a person reads (``L∞ 8/255`` for linf-0.0313725); keys stay the identifiers.
    metric_labels: dict[str, str] = field(default_factory=dict)

    def label(self, metric: str) -> str:
        """The display text of a metric key (the key itself when it has no label)."""
        return self.metric_labels.get(metric, metric)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.runs[0],
            "runs": self.runs,
            "paths": self.paths,
            "metrics": self.metrics,
            "metric_labels": self.metric_labels,
            "accuracy": self.table,
            "alpha": self.alpha,
            "correction": "holm",
            "tests": [asdict(t) for t in self.tests],
            "notes": self.notes,
            "beyond": self.beyond,
            "agreement": self.agreement,
        }

    def test(self, metric: str, other: str) -> PairTest | None:
        return next((t for t in self.tests if t.metric == metric and t.other == other), None)

    def to_markdown(self) -> str:
        esc = lambda s: str(s).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        lines = [
            "# Comparison",
            "",
            f"Baseline: **{esc(self.runs[0])}**. Accuracies in % with 95 % Wilson intervals.",
            "",
        ]
        lines.append("| metric | " + " | ".join(esc(r) for r in self.runs) + " |")
        lines.append("|---|" + "---|" * len(self.runs))
        for m in self.metrics:
            cells = []
            for j, a in enumerate(self.table[m]):
                if a is None:
                    cells.append("–")
                    continue
                acc = Accuracy(**{**a, "ci95": tuple(a["ci95"])})
                cell = acc.pct_ci()
                t = self.test(m, self.runs[j]) if j else None
                if t is not None:
                    cell += f" (Δ {100 * t.diff:+.1f}" + (f", p={t.p_value:.3g}" if t.p_value is not None else "") + ")"
                    if t.significant:
                        cell += " **\\***"
                cells.append(cell)
            lines.append(f"| {esc(self.label(m))} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"\\* significant at α = {self.alpha:g} after Holm correction over the "
            f"{sum(t.p_value is not None for t in self.tests)} paired tests "
            "(two-sided exact McNemar on per-sample records).",
            "",
            "## Differences",
            "",
        ]
        lines += [f"- {esc(s)}" for s in self.sentences()]
        lines += self._beyond_markdown(esc)
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {esc(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def _beyond_markdown(self, esc: Any) -> list[str]:
        """ECE per group and certified accuracy per radius, one column per run (unpaired point values)."""
        lines: list[str] = []
        groups = list(dict.fromkeys(g for b in self.beyond for g in b.get("ece", {})))
        if groups:
            ece = [(esc(key_label(g)), [b.get("ece", {}).get(g) for b in self.beyond]) for g in groups]
            lines += self._per_run_table(esc, "Calibration (ECE, 15 bins)", "group", ece, lambda v: f"{v:.4f}")
        cert = list(dict.fromkeys((g, r) for b in self.beyond for g, t in b.get("certified", {}).items() for r in t))
        if cert:
            acc = [
                (f"{esc(g)} @ {r}", [b.get("certified", {}).get(g, {}).get(r) for b in self.beyond]) for g, r in cert
            ]
            lines += self._per_run_table(
                esc, "Certified accuracy (%)", "smoothing @ L2 radius", acc, lambda v: f"{100 * v:.1f}"
            )
        lines += self._band_markdown(esc)
        return lines

    def _per_run_table(
        self, esc: Any, title: str, head: str, rows: list[tuple[str, list[Any]]], cell: Any
    ) -> list[str]:
        """A section with one column per run: per row its (escaped) label and per-run values, '–' where absent."""
        lines = ["", f"## {title}", "", f"| {head} | " + " | ".join(esc(r) for r in self.runs) + " |"]
        lines.append("|---|" + "---|" * len(self.runs))
        for label, vals in rows:
            lines.append(f"| {label} | " + " | ".join("–" if v is None else cell(v) for v in vals) + " |")
        return lines

    def band_lines(self) -> list[str]:
        """The band and agreement tables as plain text lines (the CLI prints them; empty without radius runs)."""
        return self._band_markdown(str)

    def _band_markdown(self, esc: Any) -> list[str]:
        """The band [verified, attacked] per radius group and eps, one column per run; then the agreement rows."""
        rows = list(dict.fromkeys((g, e) for b in self.beyond for g, t in b.get("radius", {}).items() for e in t))
        lines: list[str] = []
        if rows:
            bands = [(f"{esc(g)} @ {e}", [b.get("radius", {}).get(g, {}).get(e) for b in self.beyond]) for g, e in rows]
            lines += self._per_run_table(
                esc,
                "Robustness band (%): [verified, attacked]",
                "radius @ eps",
                bands,
                lambda v: f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]",
            )
        if self.agreement:
            lines += [
                "",
                "## Band against the fixed-eps attacks",
                "",
                "Disagreements: samples the fixed-eps run broke at eps whose minimum-norm upper end in the radius "
                "run is above eps (same sample ids).",
                "",
                "| radius run | fixed-eps run | threat model | attacked (%) | fixed-eps robust (%) | disagreements |",
                "|---|---|---|---|---|---|",
            ]
            for a in self.agreement:
                lines.append(
                    f"| {esc(a['radius_run'])} ({esc(a['radius'])}) | {esc(a['fixed_run'])} | {esc(a['group'])} | "
                    f"{100 * a['attacked']:.1f} | {100 * a['fixed']:.1f} | {a['disagreements']} |"
                )
        return lines

    def sentences(self) -> list[str]:
        out = []
        for t in self.tests:
            s = (
                f"{t.other} vs {t.baseline}, {self.label(t.metric)}: "
                f"{100 * t.baseline_acc:.1f} → {100 * t.other_acc:.1f} % "
                f"({100 * t.diff:+.1f} points)"
            )
            if t.p_value is None:
                s += f"; no paired test ({t.note})"
            else:
                verdict = "significant" if t.significant else "not significant"
                s += (
                    f"; {t.only_baseline_right} samples right only for {t.baseline}, {t.only_other_right} only for "
                    f"{t.other}; McNemar p = {t.p_value:.3g} (Holm {t.p_holm:.3g}): {verdict} at α = {self.alpha:g}"
                )
            out.append(s)
        return out


def _metric_acc(r: Result, metric: str) -> Accuracy | None:
    if metric == S.CLEAN:
        return r.clean
    for g in r.groups:
        if g.key == metric:
            return g.accuracy
        if g.verified is not None and verified_key(g.key) == metric:
            return g.verified  # the lower end of the interval (issue 22)
    return None


def _verified_metrics(results: Sequence[Result]) -> list[str]:
    """``verified@<threat model>`` of every threat model some run verified, by norm then eps."""
    keys = S.threat_keys(results)
    have = {g.key for r in results for g in r.threat_models if g.verified is not None}
    return [verified_key(k) for k in keys if k in have]


def _bits(run: Run, notes: list[str], label: str) -> SampleBits | None:
    rec = run.records
    if rec is None:
        notes.append(f"{label}: no per-sample record, so its differences are not tested")
        return None
    try:
        bits = sample_bits(rec)
    except (OSError, KeyError, ValueError) as e:
        notes.append(f"{label}: per-sample record unreadable ({e}); differences not tested")
        return None
    r = run.result
    checks = [(S.CLEAN, r.clean.correct, bits.clean)] + [
        (g.key, g.accuracy.correct, bits.groups.get(g.key)) for g in r.groups
    ]
    checks += [
        (verified_key(g.key), g.verified.correct, bits.groups.get(verified_key(g.key)))
        for g in r.groups
        if g.verified is not None
    ]
    for key, want, arr in checks:
        if arr is None or int(arr.sum()) != want or len(arr) != r.clean.n:
            notes.append(f"{label}: per-sample record does not reproduce result.json ({key}); differences not tested")
            return None
    return bits


def compare_runs(runs: Sequence[str | Path | Run], *, alpha: float = 0.05) -> Comparison:
    """Compare runs (folders, folders of runs, or loaded `Run`s); the first is the baseline."""
    loaded: list[Run] = []
    for r in runs:
        loaded += [r] if isinstance(r, Run) else load_runs([r])
    if len(loaded) < 2:
        raise UsageError(f"compare needs at least two runs, got {len(loaded)}", "pass two or more run folders")
    results = [r.result for r in loaded]
    labels = S.unique_labels(results, lambda r: r.name if r.name != "evaluation" else S.model_name(r))
    metrics = [S.CLEAN, *S.threat_keys(results), *_verified_metrics(results)]
    for r in results:
        metrics += [g.key for g in r.corruptions if g.key not in metrics]
    for r in results:  # smoothed accuracy (certified at radius 0): paired like any other metric
        metrics += [g.key for g in r.groups if g.kind == "smoothing" and g.key not in metrics]
    table = {m: [_acc_dict(_metric_acc(r, m)) for r in results] for m in metrics}
    notes: list[str] = []
    bits = [_bits(run, notes, lab) for run, lab in zip(loaded, labels)]
    base, base_bits = results[0], bits[0]
    tests: list[PairTest] = []
    for j in range(1, len(results)):
        other = results[j]
        why = ""
        if base.dataset.get("sha256") != other.dataset.get("sha256"):
            why = "different evaluation data (dataset sha256 differs)"
        elif base_bits is None or bits[j] is None:
            why = "per-sample record missing or inconsistent"
        perm = None
        if not why:
            perm = _align(base_bits.ids, bits[j].ids)  # type: ignore[union-attr]
            if perm is None:
                why = "different sample ids"
        for m in metrics:
            a, b = _metric_acc(base, m), _metric_acc(other, m)
            if a is None or b is None:
                continue
            t = PairTest(m, labels[0], labels[j], a.accuracy, b.accuracy, b.accuracy - a.accuracy, note=why)
            if not why:
                xa = base_bits.clean if m == S.CLEAN else base_bits.groups[m]  # type: ignore[union-attr]
                xb = bits[j].clean if m == S.CLEAN else bits[j].groups[m]  # type: ignore[union-attr]
                xb = xb[perm]
                t.only_baseline_right = int((xa & ~xb).sum())
                t.only_other_right = int((~xa & xb).sum())
                t.p_value = mcnemar_exact(t.only_baseline_right, t.only_other_right)
            tests.append(t)
    _holm(tests, alpha)
    beyond = [_beyond(r) for r in results]
    paths = [str(r.path) if r.path else None for r in loaded]
    metric_labels = {m: S.key_text(results, m) for m in metrics}
    for g in S.threat_keys(results):  # verified@linf-0.1 reads "verified L∞ 0.1"
        if verified_key(g) in metric_labels:
            metric_labels[verified_key(g)] = f"verified {S.key_text(results, g)}"
    agreement = radius_agreement(loaded, labels, bits)
    return Comparison(
        labels, paths, metrics, table, tests, alpha, notes, beyond, agreement=agreement, metric_labels=metric_labels
    )


def radius_uppers(records_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{radius group: (ids, upper ends)}`` of a finished record's radius entries."""
    rec = Path(records_dir)
    entries = list(read_index(rec).get("entries", []))
    ks = [(k, e["group"]) for k, e in enumerate(entries) if e.get("kind") == "radius"]
    if not ks:
        return {}
    store = open_record(rec)
    return {g: (d["id"], d["upper"]) for k, g in ks for d in [read_radius(store, k)]}


def radius_agreement(runs: Sequence[Run], labels: Sequence[str], bits: Sequence[SampleBits | None]) -> list[dict]:
    """Per radius run and fixed-eps run of the same data: attacked(eps) beside the fixed-eps robust accuracy,
    and the samples the fixed-eps attacks broke that the minimum-norm upper end leaves beyond eps."""
    out: list[dict[str, Any]] = []
    for i, run in enumerate(runs):
        rad = run.result.extra.get("radius") or {}
        if not rad or run.records is None:
            continue
        try:
            uppers = radius_uppers(run.records)
        except (OSError, KeyError, ValueError):
            continue
        for j, other in enumerate(runs):
            bj = bits[j]
            if j == i or bj is None or run.result.dataset.get("sha256") != other.result.dataset.get("sha256"):
                continue
            for g, d in rad.items():
                if g not in uppers:
                    continue
                ids, upper = uppers[g]
                perm = _align(ids, bj.ids)
                if perm is None:
                    continue
                norm, max_eps = d["config"]["norm"], d["config"]["max_eps"]
                for grp in other.result.threat_models:
                    if grp.norm != norm or grp.eps is None or grp.eps > max_eps or grp.key not in bj.groups:
                        continue
                    robust = bj.groups[grp.key][perm]
                    n = max(1, len(upper))
                    out.append(
                        {
                            "radius_run": labels[i],
                            "radius": g,
                            "fixed_run": labels[j],
                            "group": grp.key,
                            "eps": grp.eps,
                            "attacked": float(beyond(upper, grp.eps).sum() / n),
                            "fixed": float(robust.sum() / n),
                            "disagreements": int(disagreements(robust, upper, grp.eps).sum()),
                        }
                    )
    return out


def _beyond(r: Result) -> dict[str, Any]:
    cal = (r.extra.get("calibration") or {}).get("groups", {})
    cert = r.extra.get("certified") or {}
    rad = r.extra.get("radius") or {}
    return {
        "radius": {
            g: {f"{t['eps']:g}": [t["verified"]["accuracy"], t["attacked"]["accuracy"]] for t in d.get("table", [])}
            for g, d in rad.items()
        },
        "ece": {g: d["ece"] for g, d in cal.items() if isinstance(d, dict) and d.get("ece") is not None},
        "certified": {
            g: {f"{t['radius']:g}": t["certified"]["accuracy"] for t in d.get("table", [])} for g, d in cert.items()
        },
    }


def _acc_dict(a: Accuracy | None) -> dict[str, Any] | None:
    return None if a is None else {"correct": a.correct, "n": a.n, "accuracy": a.accuracy, "ci95": list(a.ci95)}


def _align(ids_a: np.ndarray, ids_b: np.ndarray) -> np.ndarray | None:
    """Index into b giving a's sample order, or None when the two runs did not see the same samples."""
    if len(ids_a) != len(ids_b):
        return None
    if np.array_equal(ids_a, ids_b):
        return np.arange(len(ids_b))
    oa, ob = np.argsort(ids_a, kind="stable"), np.argsort(ids_b, kind="stable")
    if not np.array_equal(ids_a[oa], ids_b[ob]) or len(np.unique(ids_a)) != len(ids_a):
        return None
    perm = np.empty(len(ids_a), np.int64)
    perm[oa] = ob
    return perm


def _holm(tests: list[PairTest], alpha: float) -> None:
    """Holm step-down adjustment (`stats.holm`) over the tests that have a p-value."""
    for t, p in zip(tests, holm([t.p_value for t in tests])):
        if t.p_value is not None and p is not None:
            t.p_holm = p
            t.significant = p < alpha
