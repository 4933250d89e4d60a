"""Robust accuracy as an interval in the report: [verified, attacked] per threat model (issue 22).

Reads `GroupResult.verified` (the share some [[verify]] entry proved robust) and the verify entries'
counts in result.json; draws one stacked bar per threat model (verified / open / broken / wrong when
clean, as shares of all samples) and renders its table for markdown and HTML. Every string that
reaches markdown or HTML goes through the caller's escaper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from harness.reporting import summary as S
from harness.reporting.plots import new_figure, to_png
from harness.results import GroupResult, Result

# Segment colours of the stacked bar: verified, open, broken, wrong when clean.
COLOURS = ("#2e7d32", "#f9a825", "#c62828", "#9e9e9e")
HEAD = ("threat model", "verified (%)", "open (%)", "broken (%)", "robust accuracy (%)", "verifiers")


def verified_groups(r: Result) -> list[GroupResult]:
    """The threat models of ``r`` with a verified share."""
    return [g for g in r.threat_models if g.verified is not None]


def cell_suffix(g: GroupResult | None) -> str:
    """Beside a robust accuracy in the summary table: `` (verified 82.5)``, or `` (exact)`` when equal."""
    if g is None or g.verified is None:
        return ""
    if g.verified.correct == g.accuracy.correct:
        return " (exact)"
    return f" (verified {g.verified.pct()})"


def interval_text(g: GroupResult) -> str:
    """``[82.5, 86.0]``, or ``86.0 (exact)`` when the verified and attacked shares are equal."""
    assert g.verified is not None
    if g.verified.correct == g.accuracy.correct:
        return f"{g.accuracy.pct()} (exact)"
    return f"[{g.verified.pct()}, {g.accuracy.pct()}]"


def shares(r: Result, g: GroupResult) -> tuple[float, float, float, float]:
    """(verified, open, broken, wrong when clean) as fractions of all samples; they sum to 1."""
    assert g.verified is not None
    n = max(1, g.accuracy.n)
    v, robust, clean = g.verified.correct, g.accuracy.correct, r.clean.correct
    return v / n, (robust - v) / n, (clean - robust) / n, (g.accuracy.n - clean) / n


def verifier_text(g: GroupResult) -> str:
    """``crown: 33 verified, 1 open; milp: 1 verified (2 time-outs)`` for the group's verify entries."""
    parts = []
    for e in g.entries:
        if e.get("kind") != "verify":
            continue
        s = f"{S.entry_text(e, g)}: {e.get('verified', 0)} verified, {e.get('open', 0)} open"
        extra = [f"{e[k]} {name}" for k, name in (("timeouts", "time-outs"), ("broken", "broken"),
                 ("unconfirmed", "unconfirmed")) if e.get(k)]  # fmt: skip
        parts.append(s + (f" ({', '.join(extra)})" if extra else "") + f", {float(e.get('seconds', 0)):.2f} s")
    return "; ".join(parts)


def rows(r: Result) -> list[list[str]]:
    out = []
    for g in verified_groups(r):
        sv, so, sb, _ = shares(r, g)
        out.append(
            [
                S.group_text(g),
                f"{100 * sv:.1f}",
                f"{100 * so:.1f}",
                f"{100 * sb:.1f}",
                interval_text(g),
                verifier_text(g),
            ]
        )
    return out


def stacked_bar(r: Result) -> bytes | None:
    """One horizontal stacked bar per threat model with verifiers: verified / open / broken / clean-wrong."""
    gs = verified_groups(r)
    if not gs:
        return None
    fig = new_figure(5.6, 0.9 + 0.42 * len(gs))
    ax = fig.add_subplot(1, 1, 1)
    names = ("verified", "open", "broken", "wrong when clean")
    left = [0.0] * len(gs)
    ys = list(range(len(gs)))
    for j, (name, colour) in enumerate(zip(names, COLOURS)):
        widths = [100 * shares(r, g)[j] for g in gs]
        ax.barh(ys, widths, left=left, color=colour, edgecolor="white", lw=0.5, label=name)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(ys, [S.group_text(g) for g in gs])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of samples (%)")
    ax.set_title("Robust accuracy as an interval: verified ≤ robust ≤ attacked")
    fig.legend(loc="outside lower center", ncol=4, frameon=False)
    return to_png(fig)


def figures(results: Sequence[Result]) -> dict[str, bytes | None]:
    return {f"verified-{i}": stacked_bar(r) for i, r in enumerate(results)}


CAPTION = (
    "Per sample and threat model: **verified** (a sound verifier proved no input of the ball changes the "
    "prediction), **broken** (an attack, or a verifier's counterexample confirmed by the engine's fp32 verdict, "
    "changed it) or **open**. The true robust accuracy lies in [verified, attacked]; exact where they meet."
)


def markdown(results: Sequence[Result], labels: Sequence[str], images: Mapping[str, str], esc: Callable) -> list[str]:
    lines: list[str] = []
    for i, (lab, r) in enumerate(zip(labels, results)):
        rs = rows(r)
        if not rs:
            continue
        if not lines:
            lines += ["## Robust accuracy as an interval (verified, attacked)", "", CAPTION, ""]
        lines += [f"### {esc(lab)}", "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rs]
        lines.append("")
        if f"verified-{i}" in images:
            lines += [f"![verified / open / broken per threat model]({images[f'verified-{i}']})", ""]
    return lines


def html(
    results: Sequence[Result], labels: Sequence[str], figs: Mapping[str, bytes], h: Callable, img: Callable
) -> str:
    parts: list[str] = []
    for i, (lab, r) in enumerate(zip(labels, results)):
        rs = rows(r)
        if not rs:
            continue
        if not parts:
            caption = h(CAPTION).replace("**", "")
            parts += ['<h2 id="verified">Robust accuracy as an interval (verified, attacked)</h2>', f"<p>{caption}</p>"]
        head = "".join(f"<th>{h(c)}</th>" for c in HEAD)
        body = "".join("<tr>" + "".join(f"<td>{h(c)}</td>" for c in row) + "</tr>" for row in rs)
        parts.append(f'<h3 id="verified-{i}">{h(lab)}</h3>')
        parts.append(f'<table class="verified"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        parts.append(img(figs.get(f"verified-{i}"), "verified / open / broken per threat model"))
    return "\n".join(p for p in parts if p)
