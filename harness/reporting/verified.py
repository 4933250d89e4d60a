"""Robust accuracy as an interval in the report: [verified, attacked] per threat model (issue 22).

Reads `GroupResult.verified` (the share some [[verify]] entry proved robust) and the verify entries'
counts in result.json; draws one stacked bar per threat model (verified / open / broken / wrong when
clean, as shares of all samples). The report section is `harness.reporting.sections.verified`.
"""

from __future__ import annotations

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
