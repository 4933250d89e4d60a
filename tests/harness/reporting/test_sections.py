"""report.md and report.html render the registered sections alike: same titles in the same order,
same table cells, same figures, for a result with calibration, certified accuracy, corruption metrics
and the attack unit test."""

from __future__ import annotations

import base64
import html
import re
from html.parser import HTMLParser

from harness.corruption_metrics import attach
from harness.reporting import render_markdown
from harness.reporting.html import render_html
from harness.reporting.sections import report_sections
from harness.reporting.summary import unique_labels
from tests.harness.report_helpers import make_result


def _cal_group(ece: float, **kind) -> dict:
    d = {"ece": ece, "ece_adaptive": ece / 2, "nll": 0.5, "brier": 0.2, "conf_errors": 0.7}
    d["ci95"] = {"ece": [0.01, 0.09]}
    return {**d, **kind, "scaled": {"ece": ece / 3, "nll": 0.4, "ci95": {"ece": [0.0, 0.05]}}}


def _results():
    ref = make_result("reference <ce>", 180, {0.1: 60}, corruption_base=150)
    r = make_result("model | at", 170, {0.1: 90}, corruption_base=140, objective="pgd-at")
    attach(r, ref)
    r.extra["calibration"] = {
        "bins": 15,
        "bootstrap": 200,
        "temperature": {"value": 1.25, "split": "train", "n": 100},
        "groups": {
            "clean": _cal_group(0.04, kind="clean"),
            "gaussian_noise-1": _cal_group(0.08, kind="corruption", corruption="gaussian_noise", severity=1),
            "linf-0.1": _cal_group(0.2, kind="attack", norm="linf", eps=0.1),
        },
    }
    acc = lambda a: {"accuracy": a, "ci95": [a - 0.1, a + 0.1]}
    r.extra["certified"] = {
        "smoothing-l2": {
            "config": {"sigma": 0.25, "n0": 16, "n": 64, "alpha": 0.05, "attack_steps": 20, "eot_samples": 8,
                       "n_verdict": 1000},
            "abstain": 0.125,
            "table": [
                {"radius": 0.0, "certified": acc(0.6), "empirical": acc(0.7), "violations": 0},
                {"radius": 0.5, "certified": acc(0.3), "empirical": acc(0.4), "violations": 1},
            ],
            "curve": [[0.0, 0.6], [0.5, 0.3]],
        }
    }  # fmt: skip
    r.extra["unit_test"] = {
        "threshold": 0.95,
        "threats": [{"key": "linf-0.1", "attacks": ["fgsm@linf-0.1"], "found": 9, "valid": 10, "fraction": 0.9,
                     "too_weak": True}],
    }  # fmt: skip
    return [r, ref]


def _md_text(s: str) -> str:
    """Markdown cell or heading text back to plain text (escaped pipes, HTML entities)."""
    return html.unescape(s.replace("\\|", "|"))


def _md_sections(md: str, titles: list[str]) -> dict[str, list[str]]:
    """Per ``## title`` of ``titles``: its table cells (head and body, separator rows skipped), unescaped."""
    out: dict[str, list[str]] = {}
    current = None
    for line in md.splitlines():
        if line.startswith("## "):
            title = _md_text(line[3:])
            current = title if title in titles else None
            if current is not None:
                out[current] = []
        elif current is not None and line.startswith("|") and not set(line) <= set("|-"):
            cells = re.split(r"(?<!\\) \| ", line.strip()[2:-2])
            out[current] += [_md_text(c) for c in cells]
    return out


class _HtmlSections(HTMLParser):
    """Per ``<h2>`` text: the text of its th/td cells until the next ``<h2>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cells: dict[str, list[str]] = {}
        self.order: list[str] = []
        self.where: str | None = None
        self.current: str | None = None
        self.text = ""

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "th", "td"):
            self.where, self.text = tag, ""

    def handle_endtag(self, tag):
        if tag == "h2" and self.where == "h2":
            self.current = self.text
            self.order.append(self.text)
            self.cells.setdefault(self.text, [])
        elif tag in ("th", "td") and self.where == tag and self.current is not None:
            self.cells[self.current].append(self.text)
        if tag == self.where:
            self.where = None

    def handle_data(self, data):
        if self.where:
            self.text += data


def test_markdown_and_html_render_the_same_sections_tables_and_figures() -> None:
    results = _results()
    labels = unique_labels(results)
    sections = report_sections(results, labels)
    titles = [s.title for s in sections]
    assert titles == [
        "Common corruptions",
        "Calibration under shift",
        f"Calibration — {labels[0]}",
        f"Certified robustness — {labels[0]}",
        "Attack unit test",
    ]
    keys = [f.key for s in sections for f in s.figures]
    assert keys == ["ece_severity", "reliability-0", "certified-0"]
    md = render_markdown(results, images={k: f"{k}.png" for k in keys})
    page = render_html(results, {k: k.encode() for k in keys})

    md_cells = _md_sections(md, titles)
    parser = _HtmlSections()
    parser.feed(page)
    assert [t for t in parser.order if t in titles] == titles
    assert [_md_text(t) for t in re.findall(r"^## (.*)$", md, re.M) if _md_text(t) in titles] == titles
    for s in sections:
        want = [c for t in s.tables for c in (*t.head, *(c for row in t.rows for c in row))]
        assert md_cells[s.title] == want, s.title
        assert parser.cells[s.title] == want, s.title
    # Every figure in both: a file link in markdown, inline data in HTML; captions and notes in both.
    for k in keys:
        assert f"]({k}.png)" in md and f"base64,{base64.b64encode(k.encode()).decode()}" in page
    assert page.count("data:image/png;base64,") == len(keys)
    for s in sections:
        for t in s.tables:
            if t.caption:
                assert t.caption.replace("|", "\\|") in md and html.escape(t.caption) in page
    # Numbers reach the cells: mCE of the model against the reference, the certificate violation count.
    (corr,) = [s for s in sections if s.title == "Common corruptions"]
    mce = results[0].extra["corruptions"]["mce"]
    assert corr.tables[0].rows[0][2] == f"{mce:.3f}" and "reference <ce>" in corr.intro
    (cert,) = [s for s in sections if s.title.startswith("Certified")]
    assert [row[3] for row in cert.tables[0].rows] == ["0", "1"]


def test_no_section_without_its_extra() -> None:
    r = make_result("plain", 100, {0.1: 50})
    assert report_sections([r], unique_labels([r])) == []
