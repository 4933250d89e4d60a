"""leaderboard.html: every run's clean and robust accuracy, one row per (model, threat model), in one
self-contained page whose table sorts by any column and filters by model, objective, suite and threat.

The table is rendered here, server side, with every string HTML-escaped; the page's one inline script
(plain JavaScript, no network) only reorders and hides rows. The Content-Security-Policy allows that
script by its SHA-256 hash and nothing else, so text injected through a result (a model named
``<script>...``) can neither run nor load anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Sequence
from dataclasses import dataclass

from harness.reporting import summary as S
from harness.reporting.html import page_head
from harness.results import Accuracy, GroupResult, Result

# Plain ES5 so any browser a team keeps runs it. Sorting: the first click on a numeric column sorts
# descending (best first), the next ascending; empty cells always sort last. Filters: every filter
# box must match its column (case-insensitive substring of the cell's text or of its data-alt, where
# a threat model's key sits: "linf" finds L∞ rows) for a row to stay visible.
SCRIPT = r"""
(function () {
  var table = document.getElementById("board");
  var body = table.tBodies[0];
  var heads = table.tHead.rows[0].cells;
  var count = document.getElementById("shown");
  var filters = document.querySelectorAll("input[data-col]");
  var state = { col: -1, dir: 1 };
  function value(row, i) {
    var cell = row.cells[i];
    var v = cell.getAttribute("data-value");
    if (v === null) { return cell.textContent.trim().toLowerCase(); }
    return v === "" ? null : parseFloat(v);
  }
  function compare(i, dir) {
    return function (a, b) {
      var x = value(a, i), y = value(b, i);
      if (x === null || y === null) { return (x === null) - (y === null); }
      if (x < y) { return -dir; }
      if (x > y) { return dir; }
      return a.getAttribute("data-order") - b.getAttribute("data-order");
    };
  }
  function sortBy(i) {
    var numeric = heads[i].getAttribute("data-type") === "number";
    state.dir = state.col === i ? -state.dir : (numeric ? -1 : 1);
    state.col = i;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(compare(i, state.dir));
    for (var k = 0; k < rows.length; k++) { body.appendChild(rows[k]); }
    for (var j = 0; j < heads.length; j++) {
      heads[j].setAttribute("aria-sort", j === i ? (state.dir > 0 ? "ascending" : "descending") : "none");
    }
  }
  function applyFilters() {
    var shown = 0;
    for (var r = 0; r < body.rows.length; r++) {
      var row = body.rows[r], keep = true;
      for (var f = 0; f < filters.length; f++) {
        var want = filters[f].value.trim().toLowerCase();
        var col = parseInt(filters[f].getAttribute("data-col"), 10);
        var cell = row.cells[col];
        var text = (cell.textContent + " " + (cell.getAttribute("data-alt") || "")).toLowerCase();
        if (want && text.indexOf(want) < 0) { keep = false; }
      }
      row.hidden = !keep;
      shown += keep ? 1 : 0;
    }
    count.textContent = shown + " of " + body.rows.length + " rows";
  }
  for (var i = 0; i < heads.length; i++) {
    (function (i) {
      heads[i].addEventListener("click", function () { sortBy(i); });
      heads[i].addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(i); }
      });
    })(i);
  }
  for (var f = 0; f < filters.length; f++) { filters[f].addEventListener("input", applyFilters); }
  applyFilters();
})();
"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
CSP = f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; style-src 'unsafe-inline'; img-src data:"
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;
color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em}.meta{color:#444;font-size:.9em}
.filters{display:flex;flex-wrap:wrap;gap:.6em 1.2em;margin:.8em 0}
.filters label{font-size:.9em}.filters input{margin-left:.3em;padding:.15em .3em;width:11em}
table{border-collapse:collapse;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;vertical-align:top}
th{background:#f3f3f3;cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
td.l,th.l{text-align:left}td[data-value]:not(.l){white-space:nowrap}.ci{color:#666;font-size:.85em}
.flag{background:#c0392b;color:#fff;border-radius:3px;padding:0 .35em;font-size:.8em;margin-left:.3em;font-weight:600}
tr[hidden]{display:none}
"""


@dataclass(frozen=True)
class Column:
    """One column: its header, whether it sorts as a number, and the filter box it has (if any)."""

    title: str
    numeric: bool = False
    filter: str | None = None  # the filter box's label


COLUMNS = (
    Column("model", filter="model"),
    Column("objective", filter="objective"),
    Column("training condition"),
    Column("dataset"),
    Column("suite", filter="suite"),
    Column("threat model", filter="threat model"),
    Column("clean (%)", numeric=True),
    Column("robust (%)", numeric=True),
    Column("n", numeric=True),
    Column("findings", numeric=True),
)


def h(s: object) -> str:
    return html.escape(str(s), quote=True)


def _acc(a: Accuracy | None, flag: str = "") -> str:
    if a is None:
        return '<td data-value="">–</td>'
    lo, hi = a.ci95
    return (
        f'<td data-value="{100 * a.accuracy:.6g}">{100 * a.accuracy:.1f}'
        f'<span class="ci"> [{100 * lo:.1f}, {100 * hi:.1f}]</span>{flag}</td>'
    )


def _text(s: object, value: object | None = None, alt: str = "") -> str:
    v = "" if value is None else f' data-value="{h(value)}"'
    a = f' data-alt="{h(alt)}"' if alt else ""
    return f'<td class="l"{v}{a}>{h(s)}</td>'


def rows(results: Sequence[Result], labels: Sequence[str]) -> list[list[str]]:
    """Table rows (cells as HTML): one per threat model of each run, one for its mean corruption
    accuracy, and one for a run with neither; a ⚠ marks a number a serious finding doubts."""
    out: list[list[str]] = []
    for lab, r in zip(labels, results):
        fk = S.findings_by_key(r)
        model_doubt = bool(S.serious(fk.get(S.CLEAN, [])))
        n_serious = len(S.serious(r.findings))
        head = [
            _text(lab),
            _text(r.model.get("objective") or "–"),
            _text(S.condition_text(r) or "–"),
            _text(f"{r.dataset.get('name')} ({r.dataset.get('split')})"),
            _text(r.suite.get("name") or "–"),
        ]
        tail = [f'<td data-value="{r.clean.n}">{r.clean.n}</td>', f'<td data-value="{n_serious}">{n_serious}</td>']
        clean = _acc(r.clean, _flag(model_doubt))
        groups: list[tuple[str, str, float, Accuracy | None, bool]] = []
        for g in r.threat_models:
            doubt = model_doubt or bool(S.serious(fk.get(g.key, [])))
            groups.append((S.group_text(g) + _basis(g), g.key, _order(g), g.accuracy, doubt))
        mc = S.mean_corruption(r)
        if mc is not None:
            doubt = model_doubt or any(S.serious(fk.get(c.key, [])) for c in r.corruptions)
            groups.append(("mean corruption", "corruptions", LAST, mc, doubt))
        if not groups:
            groups.append(("–", "", LAST, None, False))
        for text, key, order, acc, doubt in groups:
            out.append([*head, _text(text, f"{order:.9g}", key), clean, _acc(acc, _flag(doubt)), *tail])
    return out


LAST = 1e12  # the sort value of a row after every threat model (mean corruption, nothing evaluated)


def _order(g: GroupResult) -> float:
    """Threat models sort by norm, then eps: L-inf radii before L2 radii (both are < 1e6)."""
    return (0 if g.norm == "linf" else 1e6) + float(g.eps or 0.0)


def _basis(g: GroupResult) -> str:
    mark = S.basis_mark(g)
    return f" {mark}" if mark else ""


def _flag(doubt: bool) -> str:
    return '<span class="flag" title="a sanity finding casts doubt on this number">⚠</span>' if doubt else ""


def render_leaderboard(results: Sequence[Result], title: str = "Robustness leaderboard") -> str:
    """The leaderboard page of ``results`` (HTML text)."""
    labels = S.unique_labels(results)
    body = rows(results, labels)
    head = "".join(
        f'<th class="{"" if c.numeric else "l"}" data-type="{"number" if c.numeric else "text"}" '
        f'tabindex="0" aria-sort="none" title="sort by {h(c.title)}">{h(c.title)}</th>'
        for c in COLUMNS
    )
    filters = "".join(
        f'<label>{h(c.filter)}<input type="search" data-col="{i}" placeholder="filter" '
        f'aria-label="filter by {h(c.filter)}"></label>'
        for i, c in enumerate(COLUMNS)
        if c.filter
    )
    trs = "".join(f'<tr data-order="{i}">' + "".join(cells) + "</tr>" for i, cells in enumerate(body))
    legend = "".join(f'<p class="meta">{h(line)}</p>' for line in S.basis_legend(results))
    return "\n".join(
        [
            *page_head(title, csp=CSP, css=CSS),
            f'<p class="meta">{len(results)} run(s). Robust accuracy is the per-sample worst case over the '
            "attacks of a threat model (an upper bound: a stronger attack can only lower it); brackets give "
            "95 % Wilson intervals; ⚠ marks a number a sanity finding casts doubt on (see each run's report). "
            "Click a column header to sort (again to reverse); type in a box to filter.</p>",
            f'<div class="filters">{filters}<span class="meta" id="shown"></span></div>',
            f'<table id="board"><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>',
            legend,
            f"<script>{SCRIPT}</script>",
            "</body></html>",
        ]
    )
