"""The certified-robustness sections: per model, for each smoothing entry the certified and the
empirical (EOT-PGD) accuracy per L2 radius, and the certified-accuracy curve against radius.
Reads ``result.extra["certified"]`` (`harness.analyses.certified`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.reporting.plots import new_figure, palette, to_png
from harness.reporting.sections.base import Figure, Section, Table, register_section
from harness.results import Result

CERT_HEAD = ("L2 radius", "certified (%)", "empirical under EOT-PGD (%)", "violations")


def certified_of(r: Result) -> dict[str, Any]:
    """``result.extra["certified"]`` ({smoothing group: summary}), empty when absent."""
    c = r.extra.get("certified")
    return c if isinstance(c, dict) else {}


def _pct(a: dict[str, Any]) -> str:
    return f"{100 * a['accuracy']:.1f} [{100 * a['ci95'][0]:.1f}, {100 * a['ci95'][1]:.1f}]"


def cert_caption(d: dict[str, Any]) -> str:
    """The certifier's settings, its abstentions and the empirical attack, in one line."""
    c = d["config"]
    return (
        f"sigma={c['sigma']:g}, n0={c['n0']}, n={c['n']}, alpha={c['alpha']:g}; abstained {100 * d['abstain']:.1f} %; "
        f"attack: L2 PGD, {c['attack_steps']} steps, EOT over {c['eot_samples']} noise draws, verdict by the "
        f"majority of {c['n_verdict']} draws"
    )


def certified_table(key: str, d: dict[str, Any]) -> Table:
    """Rows (radius, certified %, empirical %, violations) of one smoothing entry."""
    rows = tuple(
        (f"{t['radius']:g}", _pct(t["certified"]), _pct(t["empirical"]), str(t["violations"])) for t in d["table"]
    )
    return Table(CERT_HEAD, rows, caption=f"{key}: {cert_caption(d)}.", css="certified")


def certified_plot(r: Result) -> bytes | None:
    """Certified accuracy against L2 radius, with the empirical EOT-PGD accuracy at the table radii."""
    cert = certified_of(r)
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


@register_section("certified", order=30)
def certified_sections(results: Sequence[Result], labels: Sequence[str]) -> list[Section]:
    """One section per model with smoothing entries: a table per entry, then the curve."""
    out = []
    for i, (lab, r) in enumerate(zip(labels, results)):
        cert = certified_of(r)
        if not cert:
            continue
        tables = tuple(certified_table(key, d) for key, d in cert.items())
        fig = Figure(f"certified-{i}", "certified accuracy vs L2 radius", lambda r=r: certified_plot(r))
        out.append(Section(f"Certified robustness — {lab}", f"certified-{i}", tables=tables, figures=(fig,)))
    return out
