"""The robustness band in the report: per radius entry, [verified, attacked] against eps (issue 22 §2).

Reads ``result.extra["radius"]`` (`harness.analyses.radius`): the band curve, the table at the
dataset's grid, the counts and the agreement with the run's fixed-eps attacks. The report section is
`harness.reporting.sections.radius`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.reporting.plots import new_figure, palette, to_png
from harness.results import Result
from harness.threat import NORMS

HEAD = ("eps", "verified (%)", "attacked (%)", "fixed-eps robust (%)", "disagreements")
AGREE_NOTE = (
    "attacked(eps) is the share whose smallest confirmed adversarial point lies beyond eps (a point at "
    "distance exactly eps breaks the sample); verified(eps) the share proven at a radius >= eps. "
    "Disagreements: samples the run's fixed-eps attacks broke at eps that the minimum-norm attack did not "
    "break within eps."
)


def radius_of(r: Result) -> dict[str, Any]:
    """``result.extra["radius"]`` ({radius group: summary}), empty when absent."""
    d = r.extra.get("radius")
    return d if isinstance(d, dict) else {}


def _pct(a: dict[str, Any]) -> str:
    return f"{100 * a['accuracy']:.1f}"


def table_rows(d: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows at the dataset grid: eps, verified, attacked, the fixed-eps robust accuracy and disagreements."""
    agree = {round(a["eps"], 12): a for a in d.get("agreement", [])}
    out = []
    for t in d["table"]:
        a = agree.get(round(t["eps"], 12))
        fixed = f"{_pct(a['fixed'])} ({a['group']})" if a else "–"
        dis = str(a["disagreements"]) if a else "–"
        out.append((f"{t['eps']:g}", _pct(t["verified"]), _pct(t["attacked"]), fixed, dis))
    return out


def caption(key: str, d: dict[str, Any]) -> str:
    """The entry's attack, verifier and counts in one line."""
    c, n = d["config"], d["counts"]
    names = [c["attack"]] if isinstance(c["attack"], str) else c["attack"]
    given = c.get("attack_params", {})
    per = {names[0]: given} if isinstance(c["attack"], str) else given
    attacks = " + ".join(
        f"{n}(" + ", ".join(f"{k}={v}" for k, v in sorted(per.get(n, {}).items())) + ")" for n in names
    )
    verifier = "no verifier (upper ends only)" if c["verifier"] == "none" else f"{c['verifier']} ({c['steps']} steps)"
    return (
        f"{key}: {c['norm']} up to {c['max_eps']:g}; upper: {attacks}; lower: {verifier}; "
        f"n={n['n']}, clean-correct {n['clean_correct']}, unconfirmed {n['unconfirmed']}, "
        f"verifier time-outs {n['timeouts']}, violations {n['violations']}"
    )


def band_plot(r: Result) -> bytes | None:
    """Per radius entry: the band shaded between verified(eps) and attacked(eps), fixed-eps points on it."""
    rad = radius_of(r)
    if not rad:
        return None
    have = {d["config"]["norm"] for d in rad.values()}
    norms = [n for n in NORMS if n in have]
    fig = new_figure(4.2 * len(norms), 3.4)
    for i, norm in enumerate(norms):
        ax = fig.add_subplot(1, len(norms), i + 1)
        items = [(k, d) for k, d in rad.items() if d["config"]["norm"] == norm]
        for (key, d), colour in zip(items, palette(len(items))):
            b = np.asarray(d["band"], dtype=float)
            ax.fill_between(b[:, 0], b[:, 1], b[:, 2], color=colour, alpha=0.25, step="post", label=f"{key} band")
            ax.step(b[:, 0], b[:, 2], where="post", color=colour, label="attacked (upper)")
            ax.step(b[:, 0], b[:, 1], where="post", color=colour, linestyle="--", label="verified (lower)")
            fixed = d.get("agreement", [])
            if fixed:
                ax.plot(
                    [a["eps"] for a in fixed],
                    [a["fixed"]["accuracy"] for a in fixed],
                    "ko",
                    markersize=4,
                    label="fixed-eps attacks",
                )
        ax.set_xlabel(f"{norm} eps")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"Robustness band ({norm})")
        ax.legend(fontsize=7)
    return to_png(fig)
