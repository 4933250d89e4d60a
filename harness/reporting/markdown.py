"""report.md: findings first, then the clean-vs-robust table with 95 % CIs, then per-model details."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.labels import relabel
from harness.records.gallery import Gallery
from harness.reporting import gallery, verified
from harness.reporting import summary as S
from harness.reporting.sections import Section, Table, report_sections
from harness.results import Accuracy, Finding, Result


def _esc(s: object) -> str:
    """Markdown-safe text: table pipes escaped, HTML brackets neutralised (viewers render raw HTML)."""
    return str(s).replace("&", "&amp;").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


class _Notes:
    """Numbered findings, so a flagged number carries a marker pointing at its finding."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str, Finding]] = []

    def mark(self, who: str, fs: Sequence[Finding]) -> str:
        fs = S.serious(fs)
        if not fs:
            return ""
        nums = []
        for f in fs:
            self.items.append((len(self.items) + 1, who, f))
            nums.append(str(len(self.items)))
        return " ⚠" + ",".join(f"[{n}]" for n in nums)


def _cell(a: Accuracy | None, mark: str = "") -> str:
    return ("–" if a is None else a.pct_ci()) + mark


def render_markdown(
    results: Sequence[Result],
    title: str = "Robustness report",
    *,
    images: Mapping[str, str] | None = None,
    threat: str | None = None,
    leaderboard: str | None = None,
    galleries: Sequence[Gallery | None] = (),
) -> str:
    """The markdown report for one or many results; ``images`` maps figure names to file names,
    ``leaderboard`` names the sortable table written beside the report (linked under the summary line),
    ``galleries`` are the runs' image galleries (`harness.reporting.gallery`)."""
    images = images or {}
    labels = S.unique_labels(results)
    keys = S.threat_keys(results)
    has_corr = any(r.corruptions for r in results)
    notes = _Notes()
    rows = []
    for lab, r in zip(labels, results):
        fk = S.findings_by_key(r)
        have = {g.key: g for g in r.threat_models}
        row = [_esc(lab), _cell(r.clean, notes.mark(lab, fk.get(S.CLEAN, [])))]
        row += [
            _cell(
                have[k].accuracy, S.basis_mark(have[k]) + verified.cell_suffix(have[k]) + notes.mark(lab, fk.get(k, []))
            )
            if k in have
            else "–"
            for k in keys
        ]
        if has_corr:
            corr_f = [f for c in r.corruptions for f in fk.get(c.key, [])]
            row.append(_cell(S.mean_corruption(r), notes.mark(lab, corr_f)))
        rows.append(row)

    lines = [f"# {_esc(title)}", ""]
    datasets = sorted({f"{r.dataset.get('name')} ({r.dataset.get('split')}, n={r.dataset.get('n')})" for r in results})
    suites = sorted({str(r.suite.get("name")) for r in results})
    lines += [
        f"{len(results)} model(s) on {_esc(', '.join(datasets))}; suite(s): {_esc(', '.join(suites))}.",
        "",
        *([f"Sortable, filterable table of these runs: [{leaderboard}]({leaderboard}).", ""] if leaderboard else []),
    ]
    if notes.items:
        lines += [
            "## ⚠ Sanity findings",
            "",
            "These cast doubt on the numbers marked ⚠[n] below; read them before trusting those numbers.",
            "",
        ]
        for n, who, f in notes.items:
            on = S.key_text(results, f.related) or "the model as a whole (clean accuracy)"
            lines.append(
                f"{n}. **{f.severity.upper()}** `{_esc(f.check)}` — {_esc(who)}, on {_esc(on)}: "
                f"{_esc(relabel(f.message))}"
            )
        lines.append("")
    head = ["model", "clean"] + [_esc(S.key_text(results, k)) for k in keys] + (["mean corruption"] if has_corr else [])
    lines += [
        "## Clean vs robust accuracy (%)",
        "",
        "Robust accuracy is the per-sample worst case over all attacks of a threat model; brackets give "
        "95 % Wilson intervals (mean corruption: pooled over corruption × severity).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    legend = S.basis_legend(results)
    if legend:
        lines += [*legend, ""]
    headline = S.headline_threat(results, threat)
    if "tradeoff" in images or headline:
        lines += ["## Trade-off", ""]
        if headline:
            pts = []
            for r in results:
                g = next((g for g in r.threat_models if g.key == headline), None)
                pts.append((r.clean.accuracy, g.accuracy.accuracy if g else float("nan")))
            front = S.pareto_front(pts)
            on = _esc(S.key_text(results, headline))
            lines.append(f"Pareto front (clean vs {on}): " + ", ".join(_esc(labels[i]) for i in front) + ".")
            lines.append("")
        for name, alt in (("tradeoff", "clean vs robust trade-off"), ("eps_curves", "robust accuracy vs eps")):
            if name in images:
                lines += [f"![{alt}]({images[name]})", ""]

    for section in report_sections(results, labels):
        lines += section_markdown(section, images)
    lines += gallery.markdown(galleries, labels, images, _esc)
    for i, (lab, r) in enumerate(zip(labels, results)):
        lines += _model_section(lab, r, images, i, headline)
    return "\n".join(lines)


def _model_section(lab: str, r: Result, images: Mapping[str, str], i: int, headline: str | None) -> list[str]:
    d, c, m = r.dataset, r.config, r.model
    lines = [f"## {_esc(lab)}", ""]
    fk = S.findings_by_key(r)
    for f in r.findings:
        if f.severity in ("warning", "error"):
            lines.append(
                f"> ⚠ **{f.severity.upper()}** `{_esc(f.check)}` ({_esc(S.key_text([r], f.related) or 'model')}): "
                f"{_esc(relabel(f.message))}"
            )
    if any(f.severity in ("warning", "error") for f in r.findings):
        lines.append("")
    lines += [
        f"- dataset: {_esc(d.get('name'))} ({_esc(d.get('split'))}, n={d.get('n')}, "
        f"sha256 `{str(d.get('sha256', ''))[:16]}`)",
        f"- model: {_esc(m.get('architecture', '?'))}, objective {_esc(m.get('objective', '?'))}, "
        f"state sha256 `{str(m.get('sha256_state', ''))[:16]}`"
        + (f", weights sha256 `{str(m.get('weights_sha256'))[:16]}`" if m.get("weights_sha256") else ""),
        f"- suite: {_esc(r.suite.get('name'))}; eval seed {c.get('seed')}; training seed {m.get('seed', '–')}; "
        f"device {_esc(c.get('device'))}; precision {_esc(S.precision_text(c))}; "
        f"config hash `{_esc(c.get('config_hash', ''))}`",
        f"- clean accuracy: {r.clean.pct_ci()} % ({r.clean.correct}/{r.clean.n})",
    ]
    eot = int(r.config.get("eot_samples_used", 1) or 1)
    if eot > 1:
        lines.append(
            f"- results use EOT: gradients averaged over {eot} forward passes, verdicts by majority over {eot}"
        )
    for g, text in S.basis_notes(r):
        lines.append(f"- robust accuracy at {_esc(S.group_text(g))} comes {_esc(text)}")
    sur = r.config.get("surrogate")
    if sur:
        lines.append(f"- gradient attacks used the surrogate {_esc(sur.get('source'))} ({_esc(sur.get('mode'))})")
    lines.append("")
    if r.threat_models:
        lines += ["| threat model | attack (in order) | robust after it (%) | seconds |", "|---|---|---|---|"]
        for g in r.threat_models:
            for e in g.entries:
                cum = e["cumulative"]
                a = Accuracy(cum["correct"], cum["n"], cum["accuracy"], tuple(cum["ci95"]))  # type: ignore[arg-type]
                name = S.entry_text(e, g) + (f" (not run: {e['skipped']})" if e.get("skipped") else "")
                lines.append(f"| {_esc(S.group_text(g))} | {_esc(name)} | {a.pct_ci()} | {e.get('seconds', 0):.2f} |")
            flag = S.serious(fk.get(g.key, []))
            if flag:
                lines.append(
                    f"| {_esc(S.group_text(g))} | ⚠ " + "; ".join(_esc(relabel(f.message)) for f in flag) + " | | |"
                )
        lines.append("")
    if r.corruptions:
        names = S.corruption_names([r])
        sevs = sorted({g.severity for g in r.corruptions if g.severity is not None})
        lines += ["Accuracy (%) per corruption and severity:", ""]
        lines += ["| corruption | " + " | ".join(f"severity {s}" for s in sevs) + " |", "|---|" + "---|" * len(sevs)]
        for n in names:
            cells = []
            for s in sevs:
                g = next((g for g in r.corruptions if g.corruption == n and g.severity == s), None)
                cells.append(_cell(g.accuracy if g else None, " ⚠" if g and S.serious(fk.get(g.key, [])) else ""))
            lines.append(f"| {_esc(n)} | " + " | ".join(cells) + " |")
        lines.append("")
        if f"heatmap-{i}" in images:
            lines += [f"![corruption heatmap]({images[f'heatmap-{i}']})", ""]
    if r.per_class_clean:
        lines += _per_class_table(r, headline)
        if f"per_class-{i}" in images:
            lines += [f"![per-class accuracy]({images[f'per_class-{i}']})", ""]
    env = r.environment
    v = env.get("versions", {})
    lines.append(
        "Environment: "
        + ", ".join(f"{_esc(k)} {_esc(val)}" for k, val in v.items())
        + f"; {_esc(env.get('platform', ''))}; device {_esc(env.get('device', ''))}"
        + (f" ({_esc(env['gpu'])})" if env.get("gpu") else "")
    )
    lines.append("")
    return lines


def _per_class_table(r: Result, headline: str | None) -> list[str]:
    counts = S.class_counts(r)
    g = next((g for g in r.threat_models if g.key == headline), None)
    cs = [c for c in r.corruptions if c.per_class]
    head = (
        ["class", "n", "clean"]
        + ([f"robust {_esc(S.group_text(g))}"] if g and g.per_class else [])
        + (["mean corruption"] if cs else [])
    )
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, acc in enumerate(r.per_class_clean):
        n = counts[k] if counts and k < len(counts) else None
        cells = [str(k), str(n) if n is not None else "?", _pc(acc, n)]
        if g and g.per_class:
            cells.append(_pc(g.per_class[k], n))
        if cs:
            vals = [c.per_class[k] for c in cs]
            cells.append(_pc(sum(vals) / len(vals), n * len(cs) if n is not None else None))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def _pc(acc: float, n: int | None) -> str:
    if acc != acc:  # NaN: class absent
        return "–"
    if not n:
        return f"{100 * acc:.1f}"
    lo, hi = S.class_ci(acc, n)
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def table_markdown(t: Table) -> list[str]:
    """A section table: its caption line, then the pipe table (every cell escaped)."""
    lines = [_esc(t.caption), ""] if t.caption else []
    lines += ["| " + " | ".join(_esc(c) for c in t.head) + " |", "|" + "---|" * len(t.head)]
    lines += ["| " + " | ".join(_esc(c) for c in row) + " |" for row in t.rows]
    return [*lines, ""]


def section_markdown(section: Section, images: Mapping[str, str]) -> list[str]:
    """Any report section: title, intro, tables, the figures written beside the report, notes."""
    lines = [f"## {_esc(section.title)}", ""]
    if section.intro:
        lines += [_esc(section.intro), ""]
    for t in section.tables:
        lines += table_markdown(t)
    for f in section.figures:
        if f.key in images:
            lines += [f"![{_esc(f.alt)}]({images[f.key]})", ""]
    for note in section.notes:
        lines += [f"Note: {_esc(note)}", ""]
    return lines
