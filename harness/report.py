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
    for r in results:
        lines += [f"## {_escape(_label(r))}", ""]
        lines.append(
            f"- dataset: {r.dataset['name']} ({r.dataset['split']}, n={r.dataset['n']}, "
            f"sha256 {r.dataset['sha256'][:12]})"
        )
        lines.append(f"- suite: {r.suite['name']}; seed {r.config['seed']}; device {r.config['device']}")
        lines.append(f"- clean accuracy: {r.clean.pct_ci()} %")
        eot = int(r.config.get("eot_samples_used", 1) or 1)
        if eot > 1:
            lines.append(
                f"- results use EOT: gradients averaged over {eot} forward passes, verdicts by majority over {eot}"
            )
        ut = r.extra.get("unit_test")
        if ut:
            for t in ut["threats"]:
                verdict = "too weak" if t["too_weak"] else "passed"
                lines.append(
                    f"- attack unit test {t['key']}: found {t['found']}/{t['valid']} planted adversarials "
                    f"({100 * t['fraction']:.1f}%): {verdict}"
                )
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
