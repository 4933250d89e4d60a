"""report.md from one or many results: the clean-vs-robust table, per-threat details, findings.

Reads only `Result` objects (i.e. result.json files), so reports can be rebuilt without models.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.results import Result


def _label(r: Result) -> str:
    m = r.model
    obj = m.get("objective")
    cond = m.get("condition") or {}
    bits = [str(m.get("name") or r.name)]
    if obj and obj not in bits[0]:
        bits.append(f"({obj})")
    if cond:
        bits.append("[" + ", ".join(f"{k}={v}" for k, v in cond.items()) + "]")
    return " ".join(bits)


def _escape(s: str) -> str:
    return s.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_markdown(results: Sequence[Result], title: str = "Robustness report") -> str:
    lines = [f"# {title}", ""]
    keys: list[str] = []
    for r in results:
        for g in r.threat_models:
            if g.key not in keys:
                keys.append(g.key)
    corr_keys = sorted({g.key for r in results for g in r.corruptions})
    lines += [
        "## Clean vs robust accuracy (%)",
        "",
        "Robust accuracy is the per-sample worst case over all attacks of a threat model; "
        "brackets give 95 % Wilson intervals.",
        "",
    ]
    head = ["model", "clean"] + keys + (["mean corruption"] if corr_keys else [])
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in results:
        have = {g.key: g for g in r.threat_models}
        row = [_escape(_label(r)), r.clean.pct_ci()]
        row += [have[k].accuracy.pct_ci() if k in have else "–" for k in keys]
        if corr_keys:
            cs = r.corruptions
            row.append(f"{100 * sum(g.accuracy.accuracy for g in cs) / len(cs):.1f}" if cs else "–")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    flagged = [(r, f) for r in results for f in r.findings if f.severity in ("warning", "error")]
    if flagged:
        lines += ["## Sanity findings", ""]
        for r, f in flagged:
            where = f" (casts doubt on {f.related})" if f.related else ""
            lines.append(
                f"- **{f.severity.upper()}** `{_escape(f.check)}` — {_escape(_label(r))}: {_escape(f.message)}{where}"
            )
        lines.append("")
    lines += _corruption_section(results)
    for r in results:
        lines += [f"## {_escape(_label(r))}", ""]
        lines.append(
            f"- dataset: {r.dataset['name']} ({r.dataset['split']}, n={r.dataset['n']}, "
            f"sha256 {r.dataset['sha256'][:12]})"
        )
        lines.append(f"- suite: {r.suite['name']}; seed {r.config['seed']}; device {r.config['device']}")
        lines.append(f"- clean accuracy: {r.clean.pct_ci()} %")
        lines += ["", "| threat model | attack (in order) | robust after it (%) | seconds |", "|---|---|---|---|"]
        for g in r.groups:
            for e in g.entries:
                cum = e["cumulative"]
                lines.append(f"| {g.key} | {_escape(e['key'])} | {100 * cum['accuracy']:.1f} | {e['seconds']:.2f} |")
        lines.append("")
        v = r.environment.get("versions", {})
        lines.append(
            "Environment: " + ", ".join(f"{k} {val}" for k, val in v.items()) + f"; {r.environment.get('platform', '')}"
        )
        lines.append("")
    return "\n".join(lines)


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _corruption_section(results: Sequence[Result]) -> list[str]:
    """Mean corruption accuracy, mCE / relative mCE (reference named) and accuracy per corruption x severity."""
    from harness.corruption_metrics import accuracy_table, corruption_summary

    with_c = [r for r in results if r.corruptions]
    if not with_c:
        return []
    lines = ["## Common corruptions", ""]
    refs = {r.extra.get("corruptions", {}).get("reference") for r in with_c} - {None}
    if refs:
        lines += [f"Corruption errors are normalised by the reference model {', '.join(sorted(map(str, refs)))}.", ""]
    lines += ["| model | mean corruption accuracy (%) | mCE | relative mCE |", "|---|---|---|---|"]
    for r in with_c:
        s = r.extra.get("corruptions") or corruption_summary(r)
        lines.append(
            f"| {_escape(_label(r))} | {_fmt(s.get('mean_accuracy'), True)} | {_fmt(s.get('mce'))} "
            f"| {_fmt(s.get('relative_mce'))} |"
        )
    lines.append("")
    for r in with_c:
        table = accuracy_table(r)
        sevs = sorted({s for sev in table.values() for s in sev})
        lines += [f"Accuracy (%) per corruption and severity — {_escape(_label(r))}:", ""]
        lines += ["| corruption | " + " | ".join(str(s) for s in sevs) + " |", "|---|" + "---|" * len(sevs)]
        for c, sev in table.items():
            lines.append(f"| {c} | " + " | ".join(_fmt(sev.get(s), True) for s in sevs) + " |")
        lines.append("")
    return lines
