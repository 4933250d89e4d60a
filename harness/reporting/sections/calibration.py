"""The calibration sections: ECE against corruption severity over all models, then per model the
metrics table (95 % bootstrap intervals; temperature-scaled columns when fitted) and the reliability
diagram. Reads ``result.extra["calibration"]`` (`harness.analyses.calibration`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.labels import key_label
from harness.reporting.plots import new_figure, palette, to_png
from harness.reporting.sections.base import Figure, Section, Table, register_section
from harness.results import Result

CAL_COLS = ("ece", "ece_adaptive", "nll", "brier", "conf_errors")
CAL_HEAD = ("ECE", "adaptive ECE", "NLL", "Brier", "conf. of errors")


def calibration_of(r: Result) -> dict[str, Any] | None:
    """``result.extra["calibration"]`` when it holds groups, else None."""
    c = r.extra.get("calibration")
    return c if isinstance(c, dict) and c.get("groups") else None


def _num(v: Any, ci: Any = None) -> str:
    if v is None:
        return "–"
    s = f"{v:.4f}"
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        s += f" [{ci[0]:.4f}, {ci[1]:.4f}]"
    return s


def calibration_table(cal: dict[str, Any]) -> Table:
    """Rows: group, metrics with CIs, and the temperature-scaled ECE and NLL when a temperature was fitted."""
    scaled = bool(cal.get("temperature"))
    head = ("group", *CAL_HEAD) + (("ECE (T-scaled)", "NLL (T-scaled)") if scaled else ())
    rows = []
    for g, d in cal["groups"].items():
        row = [key_label(g)] + [_num(d.get(k), d.get("ci95", {}).get(k)) for k in CAL_COLS]
        if scaled:
            sc = d.get("scaled", {})
            row += [_num(sc.get("ece"), sc.get("ci95", {}).get("ece")), _num(sc.get("nll"))]
        rows.append(tuple(row))
    return Table(head, tuple(rows), css="calibration")


def _intro(cal: dict[str, Any]) -> str:
    t = cal.get("temperature")
    text = (
        f"{cal.get('bins')} equal-width bins (adaptive: equal-mass); brackets: 95 % bootstrap intervals over "
        f"samples ({cal.get('bootstrap')} resamples)."
    )
    if t:
        text += f' Temperature T = {t["value"]:.3f} fitted on the held-out "{t["split"]}" split (n={t["n"]}).'
    return text


def reliability_plot(r: Result) -> bytes | None:
    """Reliability diagram of the clean predictions (and of the temperature-scaled ones)."""
    cal = calibration_of(r)
    if not cal or "clean" not in cal["groups"]:
        return None
    fig = new_figure(3.6, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    d = cal["groups"]["clean"]
    panels = [("raw", d)] + ([("T-scaled", d["scaled"])] if "scaled" in d else [])
    for (name, g), col in zip(panels, palette(2)):
        rel = g["reliability"]
        edges = np.asarray(rel["edges"])
        acc = np.array([np.nan if a is None else a for a in rel["accuracy"]])
        width = np.diff(edges)
        ax.bar(
            edges[:-1],
            np.nan_to_num(acc),
            width=width,
            align="edge",
            alpha=0.45,
            color=col,
            edgecolor="k",
            lw=0.4,
            label=f"{name} (ECE {g['ece']:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max softmax)")
    ax.set_ylabel("accuracy")
    ax.set_title("Reliability diagram (clean, 15 bins)")
    ax.legend(loc="upper left")
    return to_png(fig)


def _ece_series(results: Sequence[Result], labels: Sequence[str]) -> list[tuple[str, list[int], list[float]]]:
    """Per model with corruption groups: severities (0 = clean) and the ECE averaged over corruptions."""
    series = []
    for lab, r in zip(labels, results):
        cal = calibration_of(r)
        if not cal:
            continue
        by: dict[int, list[float]] = {}
        for d in cal["groups"].values():
            if d.get("kind") == "corruption" and d.get("ece") is not None:
                by.setdefault(int(d["severity"]), []).append(d["ece"])
        if by:
            xs = [0, *sorted(by)]
            ys = [cal["groups"]["clean"]["ece"]] + [float(np.mean(by[s])) for s in sorted(by)]
            series.append((lab, xs, ys))
    return series


def ece_severity_plot(results: Sequence[Result], labels: Sequence[str]) -> bytes | None:
    """ECE against corruption severity (mean over corruptions, severity 0 = clean), one line per model."""
    series = _ece_series(results, labels)
    if not series:
        return None
    fig = new_figure(4.2, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    for (lab, xs, ys), col in zip(series, palette(len(series))):
        ax.plot(xs, ys, "o-", color=col, label=lab[:40])
    ax.set_xlabel("corruption severity (0 = clean)")
    ax.set_ylabel("ECE (mean over corruptions)")
    ax.set_title("Calibration under shift")
    ax.legend()
    return to_png(fig)


@register_section("calibration", order=20)
def calibration_sections(results: Sequence[Result], labels: Sequence[str]) -> list[Section]:
    """Calibration under shift (with corruption groups), then one section per model with calibration."""
    out = []
    if _ece_series(results, labels):
        fig = Figure("ece_severity", "ECE against corruption severity", lambda: ece_severity_plot(results, labels))
        out.append(Section("Calibration under shift", "calibration-shift", figures=(fig,)))
    for i, (lab, r) in enumerate(zip(labels, results)):
        cal = calibration_of(r)
        if not cal:
            continue
        rel = Figure(f"reliability-{i}", "reliability diagram", lambda r=r: reliability_plot(r))
        out.append(Section(f"Calibration — {lab}", f"calibration-{i}", _intro(cal), (calibration_table(cal),), (rel,)))
    return out
