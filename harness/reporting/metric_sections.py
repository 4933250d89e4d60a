"""Report parts beyond accuracy: calibration (tables, reliability diagram, ECE vs severity) and
certified robustness by randomized smoothing (certified vs empirical accuracy against L2 radius).

Reads only ``Result.extra["calibration"]`` and ``Result.extra["certified"]``; every string that
reaches markdown or HTML goes through the caller's escaper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from harness.labels import key_label
from harness.reporting.plots import new_figure, palette, to_png
from harness.results import Result

CAL_COLS = ("ece", "ece_adaptive", "nll", "brier", "conf_errors")
CAL_HEAD = ("ECE", "adaptive ECE", "NLL", "Brier", "conf. of errors")


def _cal(r: Result) -> dict[str, Any] | None:
    c = r.extra.get("calibration")
    return c if isinstance(c, dict) and c.get("groups") else None


def _cert(r: Result) -> dict[str, Any]:
    c = r.extra.get("certified")
    return c if isinstance(c, dict) else {}


def _num(v: Any, ci: Any = None) -> str:
    if v is None:
        return "–"
    s = f"{v:.4f}"
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        s += f" [{ci[0]:.4f}, {ci[1]:.4f}]"
    return s


def calibration_rows(r: Result) -> list[list[str]]:
    """Rows (group, metrics with CIs, temperature-scaled ECE when fitted) of one result."""
    cal = _cal(r)
    if not cal:
        return []
    rows = []
    for g, d in cal["groups"].items():
        row = [key_label(g)] + [_num(d.get(k), d.get("ci95", {}).get(k)) for k in CAL_COLS]
        if cal.get("temperature"):
            sc = d.get("scaled", {})
            row += [_num(sc.get("ece"), sc.get("ci95", {}).get("ece")), _num(sc.get("nll"))]
        rows.append(row)
    return rows


def calibration_head(r: Result) -> list[str]:
    head = ["group", *CAL_HEAD]
    return head + (["ECE (T-scaled)", "NLL (T-scaled)"] if (_cal(r) or {}).get("temperature") else [])


def certified_rows(r: Result) -> list[tuple[str, list[list[str]]]]:
    """Per smoothing entry: rows (radius, certified %, empirical %, violations)."""
    out = []
    for key, d in _cert(r).items():
        rows = []
        for t in d["table"]:
            c, e = t["certified"], t["empirical"]
            rows.append(
                [
                    f"{t['radius']:g}",
                    f"{100 * c['accuracy']:.1f} [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]",
                    f"{100 * e['accuracy']:.1f} [{100 * e['ci95'][0]:.1f}, {100 * e['ci95'][1]:.1f}]",
                    str(t["violations"]),
                ]
            )
        out.append((key, rows))
    return out


CERT_HEAD = ("L2 radius", "certified (%)", "empirical under EOT-PGD (%)", "violations")


def cert_caption(d: dict[str, Any]) -> str:
    c = d["config"]
    return (
        f"sigma={c['sigma']:g}, n0={c['n0']}, n={c['n']}, alpha={c['alpha']:g}; abstained {100 * d['abstain']:.1f} %; "
        f"attack: L2 PGD, {c['attack_steps']} steps, EOT over {c['eot_samples']} noise draws, verdict by the "
        f"majority of {c['n_verdict']} draws"
    )


# ---- figures --------------------------------------------------------------------------------------


def reliability_plot(r: Result) -> bytes | None:
    """Reliability diagram of the clean predictions (and of the temperature-scaled ones)."""
    cal = _cal(r)
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


def ece_severity_plot(results: Sequence[Result], labels: Sequence[str]) -> bytes | None:
    """ECE against corruption severity (mean over corruptions, severity 0 = clean), one line per model."""
    series = []
    for lab, r in zip(labels, results):
        cal = _cal(r)
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


def certified_plot(r: Result) -> bytes | None:
    """Certified accuracy against L2 radius, with the empirical EOT-PGD accuracy at the table radii."""
    cert = _cert(r)
    if not cert:
        return None
    fig = new_figure(4.2, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    for (key, d), col in zip(cert.items(), palette(len(cert))):
        c = np.asarray(d["curve"])
        ax.plot(c[:, 0], c[:, 1], "-", color=col, label=f"{key[:30]} certified")
        rad = [t["radius"] for t in d["table"]]
        emp = [t["empirical"]["accuracy"] for t in d["table"]]
        ax.plot(rad, emp, "s--", color=col, alpha=0.7, label=f"{key[:30]} empirical (EOT-PGD)")
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Randomized smoothing")
    ax.legend()
    return to_png(fig)


def figures(results: Sequence[Result], labels: Sequence[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {"ece_severity": ece_severity_plot(results, labels)}
    for i, r in enumerate(results):
        out[f"reliability-{i}"] = reliability_plot(r)
        out[f"certified-{i}"] = certified_plot(r)
    return out


# ---- markdown / HTML sections ---------------------------------------------------------------------


def markdown(results: Sequence[Result], labels: Sequence[str], images: Mapping[str, str], esc: Callable) -> list[str]:
    lines: list[str] = []
    if not any(_cal(r) or _cert(r) for r in results):
        return lines
    if "ece_severity" in images:
        lines += ["## Calibration under shift", "", f"![ECE against corruption severity]({images['ece_severity']})", ""]
    for i, (lab, r) in enumerate(zip(labels, results)):
        rows = calibration_rows(r)
        if rows:
            cal = _cal(r) or {}
            t = cal.get("temperature")
            lines += [f"### Calibration — {esc(lab)}", ""]
            lines.append(
                f"{cal.get('bins')} equal-width bins (adaptive: equal-mass); brackets: 95 % bootstrap intervals over "
                f"samples ({cal.get('bootstrap')} resamples)."
                + (
                    f" Temperature T = {t['value']:.3f} fitted on the held-out `{esc(t['split'])}` split (n={t['n']})."
                    if t
                    else ""
                )
            )
            lines.append("")
            head = calibration_head(r)
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
            lines.append("")
            if f"reliability-{i}" in images:
                lines += [f"![reliability diagram]({images[f'reliability-{i}']})", ""]
        for key, rows in certified_rows(r):
            d = _cert(r)[key]
            lines += [f"### Certified robustness — {esc(lab)}, `{esc(key)}`", "", esc(cert_caption(d)) + ".", ""]
            lines += ["| " + " | ".join(CERT_HEAD) + " |", "|" + "---|" * len(CERT_HEAD)]
            lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
            lines.append("")
        if f"certified-{i}" in images:
            lines += [f"![certified accuracy vs L2 radius]({images[f'certified-{i}']})", ""]
    return lines


def html(
    results: Sequence[Result], labels: Sequence[str], figs: Mapping[str, bytes], h: Callable, img: Callable
) -> str:
    if not any(_cal(r) or _cert(r) for r in results):
        return ""
    parts = ['<h2 id="beyond">Calibration and certified robustness</h2>']
    if figs.get("ece_severity"):
        parts.append(img(figs["ece_severity"], "ECE against corruption severity"))
    for i, (lab, r) in enumerate(zip(labels, results)):
        rows = calibration_rows(r)
        if rows:
            cal = _cal(r) or {}
            t = cal.get("temperature")
            parts.append(f'<h3 id="calibration-{i}">Calibration — {h(lab)}</h3>')
            parts.append(
                f"<p>{h(cal.get('bins'))} equal-width bins (adaptive: equal-mass); brackets: 95 % bootstrap "
                f"intervals ({h(cal.get('bootstrap'))} resamples)."
                + (
                    f" Temperature T = {t['value']:.3f} fitted on the held-out <code>{h(t['split'])}</code> split."
                    if t
                    else ""
                )
                + "</p>"
            )
            head = "".join(f"<th>{h(c)}</th>" for c in calibration_head(r))
            body = "".join("<tr>" + "".join(f"<td>{h(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f'<table class="calibration"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
            parts.append(img(figs.get(f"reliability-{i}"), "reliability diagram"))
        for key, rows in certified_rows(r):
            d = _cert(r)[key]
            parts.append(f'<h3 id="certified-{i}">Certified robustness — {h(lab)}, <code>{h(key)}</code></h3>')
            parts.append(f"<p>{h(cert_caption(d))}.</p>")
            head = "".join(f"<th>{h(c)}</th>" for c in CERT_HEAD)
            body = "".join("<tr>" + "".join(f"<td>{h(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f'<table class="certified"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        parts.append(img(figs.get(f"certified-{i}"), "certified accuracy vs L2 radius"))
    return "\n".join(p for p in parts if p)
