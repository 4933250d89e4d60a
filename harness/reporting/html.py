"""report.html: one self-contained page (inline CSS, PNGs as data URIs, no scripts, no network).

Every string that comes from a result (model names, objectives, conditions, findings, versions) goes
through `html.escape`; a Content-Security-Policy forbids scripts and remote loads as a second line.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence

from harness.labels import relabel
from harness.records.gallery import Gallery
from harness.reporting import gallery, verified
from harness.reporting import summary as S
from harness.reporting.sections import Section, Table, report_sections
from harness.results import Accuracy, Finding, GroupResult, Result

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.ci{color:#666;font-size:.85em}
.findings{border:2px solid #c0392b;background:#fdecea;padding:.6em 1em;border-radius:4px}
.findings.warn{border-color:#d68910;background:#fef5e7}
.flag{display:inline-block;background:#c0392b;color:#fff;border-radius:3px;padding:0 .35em;font-size:.8em;
margin-left:.3em;font-weight:600}
.flag.warning{background:#d68910}
.flagtext{display:block;color:#c0392b;font-size:.8em;text-align:left;max-width:26em}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
figure.gallery{margin:.6em 0;width:fit-content}figure.gallery ul{margin:0;font-size:.85em;color:#444}
.meta{color:#444;font-size:.9em}code{font-size:.9em;background:#f6f6f6;padding:0 .2em}
"""


def h(s: object) -> str:
    """Escape any value for HTML text and attribute context."""
    return html.escape(str(s), quote=True)


class _Notes:
    def __init__(self) -> None:
        self.items: list[tuple[int, str, Finding]] = []

    def mark(self, who: str, fs: Sequence[Finding]) -> str:
        """Badges plus the finding text, placed right beside the number it concerns."""
        out = []
        for f in S.serious(fs):
            self.items.append((len(self.items) + 1, who, f))
            n = len(self.items)
            out.append(
                f'<a class="flag {h(f.severity)}" href="#finding-{n}" title="{h(relabel(f.message))}">⚠ {n}</a>'
                f'<span class="flagtext">{h(f.severity)}: {h(f.check)} — {h(relabel(f.message))}</span>'
            )
        return "".join(out)


def page_head(title: str, *, csp: str, css: str) -> list[str]:
    """The opening lines of a self-contained page: doctype, charset, its Content-Security-Policy, title, h1."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{h(title)}</title><style>{css}</style></head><body>",
        f"<h1>{h(title)}</h1>",
    ]


def _acc(a: Accuracy | None, flags: str = "") -> str:
    if a is None:
        return "<td>–</td>"
    return (
        f'<td>{100 * a.accuracy:.1f}<span class="ci"> [{100 * a.ci95[0]:.1f}, {100 * a.ci95[1]:.1f}]</span>{flags}</td>'
    )


def _basis(g: GroupResult) -> str:
    """The gradient-free / surrogate marker, with its meaning as a tooltip."""
    mark = S.basis_mark(g)
    return f'<span class="basis" title="{h(S.BASIS_TEXT[str(g.attack_basis)])}"> {h(mark)}</span>' if mark else ""


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    return f'<img alt="{h(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def render_html(
    results: Sequence[Result],
    figures: Mapping[str, bytes],
    title: str = "Robustness report",
    threat: str | None = None,
    leaderboard: str | None = None,
    galleries: Sequence[Gallery | None] = (),
) -> str:
    """The self-contained HTML report; ``leaderboard`` names the sortable table written beside it (linked);
    ``galleries`` are the runs' image galleries (`harness.reporting.gallery`)."""
    labels = S.unique_labels(results)
    keys = S.threat_keys(results)
    has_corr = any(r.corruptions for r in results)
    headline = S.headline_threat(results, threat)
    notes = _Notes()
    body_rows = []
    for lab, r in zip(labels, results):
        fk = S.findings_by_key(r)
        have = {g.key: g for g in r.threat_models}
        cells = [f'<td class="l">{h(lab)}</td>', _acc(r.clean, notes.mark(lab, fk.get(S.CLEAN, [])))]
        cells += [
            _acc(have[k].accuracy, _basis(have[k]) + h(verified.cell_suffix(have[k])) + notes.mark(lab, fk.get(k, [])))
            if k in have
            else "<td>–</td>"
            for k in keys
        ]
        if has_corr:
            corr_f = [f for c in r.corruptions for f in fk.get(c.key, [])]
            cells.append(_acc(S.mean_corruption(r), notes.mark(lab, corr_f)))
        body_rows.append("<tr>" + "".join(cells) + "</tr>")
    head = (
        '<tr><th class="l">model</th><th>clean</th>'
        + "".join(f'<th title="{h(k)}">{h(S.key_text(results, k))}</th>' for k in keys)
        + ("<th>mean corruption</th>" if has_corr else "")
        + "</tr>"
    )
    parts = page_head(title, csp=CSP, css=CSS)
    datasets = sorted({f"{r.dataset.get('name')} ({r.dataset.get('split')}, n={r.dataset.get('n')})" for r in results})
    suites = sorted({str(r.suite.get("name")) for r in results})
    parts.append(
        f'<p class="meta">{len(results)} model(s) on {h(", ".join(datasets))}; suite(s): {h(", ".join(suites))}. '
        "Every accuracy is given with its 95 % Wilson interval in brackets."
        + (f' <a href="{h(leaderboard)}">Sortable, filterable table of these runs</a>.' if leaderboard else "")
        + "</p>"
    )
    table = (
        '<h2 id="summary">Clean vs robust accuracy (%)</h2>'
        "<p>Robust accuracy is the per-sample worst case over all attacks of a threat model; mean corruption "
        "accuracy pools all corruption × severity evaluations.</p>"
        f'<table id="summary-table"><thead>{head}</thead><tbody>{"".join(body_rows)}</tbody></table>'
        + "".join(f'<p class="meta basis">{h(line)}</p>' for line in S.basis_legend(results))
    )
    if notes.items:
        sev = "error" if any(f.severity == "error" for _, _, f in notes.items) else "warning"
        items = "".join(
            f'<li id="finding-{n}"><b>{h(f.severity.upper())}</b> <code>{h(f.check)}</code> — {h(who)}, on '
            f"{h(S.key_text(results, f.related) or 'the model as a whole (clean accuracy)')}: "
            f"{h(relabel(f.message))}</li>"
            for n, who, f in notes.items
        )
        parts.append(
            f'<div class="findings{"" if sev == "error" else " warn"}" id="findings"><h2>⚠ Sanity findings '
            f"({len(notes.items)})</h2><p>These cast doubt on the numbers marked ⚠ below; read them before "
            f"trusting those numbers.</p><ol>{items}</ol></div>"
        )
    parts.append(table)
    if "tradeoff" in figures or "eps_curves" in figures:
        parts.append('<h2 id="tradeoff">Trade-off</h2>')
        if headline:
            pts = []
            for r in results:
                g = next((g for g in r.threat_models if g.key == headline), None)
                pts.append((r.clean.accuracy, g.accuracy.accuracy if g else float("nan")))
            front = S.pareto_front(pts)
            parts.append(
                f"<p>Pareto front (clean vs robust at {h(S.key_text(results, headline))}): "
                + ", ".join(h(labels[i]) for i in front)
                + ". Points carry 95 % CIs in both directions.</p>"
            )
        parts.append(_img(figures.get("tradeoff"), "clean vs robust accuracy trade-off"))
        parts.append(_img(figures.get("eps_curves"), "robust accuracy vs eps"))

    parts += [section_html(section, figures) for section in report_sections(results, labels)]
    parts.append(gallery.html(galleries, labels, figures, h, _img))
    for i, (lab, r) in enumerate(zip(labels, results)):
        parts.append(_model_section(lab, r, figures, i, headline))
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def table_html(t: Table) -> str:
    """A section table: its caption paragraph, then the table (every cell escaped)."""
    cls = f' class="{h(t.css)}"' if t.css else ""
    head = "".join(f"<th>{h(c)}</th>" for c in t.head)
    body = "".join("<tr>" + "".join(f"<td>{h(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    caption = f"<p>{h(t.caption)}</p>" if t.caption else ""
    return f"{caption}<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section_html(section: Section, figures: Mapping[str, bytes]) -> str:
    """Any report section: title, intro, tables, the figures inlined, notes."""
    parts = [f'<h2 id="{h(section.anchor)}">{h(section.title)}</h2>']
    if section.intro:
        parts.append(f"<p>{h(section.intro)}</p>")
    parts += [table_html(t) for t in section.tables]
    parts += [_img(figures.get(f.key), f.alt) for f in section.figures]
    parts += [f'<p class="meta">Note: {h(note)}</p>' for note in section.notes]
    return "\n".join(p for p in parts if p)


def _model_section(lab: str, r: Result, figures: Mapping[str, bytes], i: int, headline: str | None) -> str:
    d, c, m = r.dataset, r.config, r.model
    fk = S.findings_by_key(r)
    out = [f'<h2 id="model-{i}">{h(lab)}</h2>']
    bad = S.serious(r.findings)
    if bad:
        sev = "error" if any(f.severity == "error" for f in bad) else "warning"
        out.append(
            f'<div class="findings{"" if sev == "error" else " warn"}"><ul>'
            + "".join(
                f"<li><b>{h(f.severity.upper())}</b> <code>{h(f.check)}</code> "
                f"({h(S.key_text([r], f.related) or 'model')}): "
                f"{h(relabel(f.message))}</li>"
                for f in bad
            )
            + "</ul></div>"
        )
    out.append(
        '<table class="meta-table">'
        + "".join(
            f'<tr><th class="l">{h(k)}</th><td class="l">{v}</td></tr>'
            for k, v in (
                ("dataset", f"{h(d.get('name'))} ({h(d.get('split'))}, n={h(d.get('n'))})"),
                ("dataset sha256", f"<code>{h(d.get('sha256', ''))}</code>"),
                ("architecture", h(m.get("architecture", "?"))),
                ("objective", h(m.get("objective", "?"))),
                ("objective params", h(m.get("objective_params", {}))),
                ("training condition", h(S.condition_text(r) or "–")),
                ("training seed", h(m.get("seed", "–"))),
                ("model state sha256", f"<code>{h(m.get('sha256_state', ''))}</code>"),
                ("weights sha256", f"<code>{h(m.get('weights_sha256', '–'))}</code>"),
                ("suite", h(r.suite.get("name"))),
                ("evaluation seed", h(c.get("seed"))),
                ("config hash", f"<code>{h(c.get('config_hash', ''))}</code>"),
                ("device", h(c.get("device"))),
                ("precision", h(S.precision_text(c))),
                ("clean accuracy", f"{r.clean.pct_ci()} % ({r.clean.correct}/{r.clean.n})"),
                *(
                    (f"robust accuracy at {h(S.group_text(g))}", f"{S.basis_mark(g)} comes {h(text)}")
                    for g, text in S.basis_notes(r)
                ),
                *(
                    (("surrogate", f"{h(c['surrogate'].get('source'))} ({h(c['surrogate'].get('mode'))})"),)
                    if c.get("surrogate")
                    else ()
                ),
            )
        )
        + "</table>"
    )
    if r.threat_models:
        rows = []
        for g in r.threat_models:
            flags = "".join(
                f'<span class="flag {h(f.severity)}">⚠</span>'
                f'<span class="flagtext">{h(f.check)} — {h(relabel(f.message))}</span>'
                for f in S.serious(fk.get(g.key, []))
            )
            for j, e in enumerate(g.entries):
                cum = e["cumulative"]
                a = Accuracy(cum["correct"], cum["n"], cum["accuracy"], tuple(cum["ci95"]))  # type: ignore[arg-type]
                last = j == len(g.entries) - 1
                rows.append(
                    f'<tr><td class="l" title="{h(g.key)}">{h(S.group_text(g))}</td>'
                    f'<td class="l">{h(S.entry_text(e, g))}</td>'
                    + _acc(a, flags if last else "")
                    + f"<td>{float(e.get('seconds', 0)):.2f}</td></tr>"
                )
        out.append(
            '<h3>Attacks (robust accuracy after each, cumulative worst case)</h3><table class="attacks">'
            '<tr><th class="l">threat model</th><th class="l">attack</th><th>robust (%)</th><th>seconds</th></tr>'
            + "".join(rows)
            + "</table>"
        )
    if r.corruptions:
        names = S.corruption_names([r])
        sevs = sorted({g.severity for g in r.corruptions if g.severity is not None})
        rows = []
        for n in names:
            cells = []
            for s in sevs:
                g = next((g for g in r.corruptions if g.corruption == n and g.severity == s), None)
                flags = "".join(
                    f'<span class="flag {h(f.severity)}">⚠</span><span class="flagtext">{h(relabel(f.message))}</span>'
                    for f in S.serious(fk.get(g.key, []) if g else [])
                )
                cells.append(_acc(g.accuracy if g else None, flags))
            rows.append(f'<tr><td class="l">{h(n)}</td>{"".join(cells)}</tr>')
        out.append(
            '<h3>Corruptions (accuracy %)</h3><table class="corruptions"><tr><th class="l">corruption</th>'
            + "".join(f"<th>severity {s}</th>" for s in sevs)
            + "</tr>"
            + "".join(rows)
            + "</table>"
        )
        out.append(_img(figures.get(f"heatmap-{i}"), f"corruption x severity heatmap of {lab}"))
    if r.per_class_clean:
        out.append(_per_class(r, headline))
        out.append(_img(figures.get(f"per_class-{i}"), f"per-class accuracy of {lab}"))
    env = r.environment
    v = env.get("versions", {})
    out.append(
        '<h3>Environment</h3><p class="meta">'
        + ", ".join(f"{h(k)} {h(val)}" for k, val in v.items())
        + f"<br>platform {h(env.get('platform', ''))}; device {h(env.get('device', ''))}"
        + (f" ({h(env['gpu'])})" if env.get("gpu") else "")
        + f"; threads {h(env.get('threads', '?'))}</p>"
    )
    return "\n".join(o for o in out if o)


def _per_class(r: Result, headline: str | None) -> str:
    counts = S.class_counts(r)
    g = next((g for g in r.threat_models if g.key == headline), None)
    cs = [c for c in r.corruptions if c.per_class]
    head = (
        '<tr><th class="l">class</th><th>n</th><th>clean</th>'
        + (f"<th>robust {h(S.group_text(g))}</th>" if g and g.per_class else "")
        + ("<th>mean corruption</th>" if cs else "")
        + "</tr>"
    )
    rows = []
    for k, acc in enumerate(r.per_class_clean):
        n = counts[k] if counts and k < len(counts) else None
        cells = [f'<td class="l">{k}</td><td>{n if n is not None else "?"}</td>', _pc(acc, n)]
        if g and g.per_class:
            cells.append(_pc(g.per_class[k], n))
        if cs:
            vals = [c.per_class[k] for c in cs]
            cells.append(_pc(sum(vals) / len(vals), n * len(cs) if n is not None else None))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<h3>Per-class accuracy (%)</h3><table class="per-class">{head}{"".join(rows)}</table>'


def _pc(acc: float, n: int | None) -> str:
    if acc != acc:
        return "<td>–</td>"
    if not n:
        return f"<td>{100 * acc:.1f}</td>"
    lo, hi = S.class_ci(acc, n)
    return f'<td>{100 * acc:.1f}<span class="ci"> [{100 * lo:.1f}, {100 * hi:.1f}]</span></td>'
