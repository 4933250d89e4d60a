"""report.html in a real headless browser (Debian's chromium): it renders, shows its plots and tables,
logs no console errors, and shows a model named <script>alert(1)</script> as text."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.reporting import build_report
from harness.results import Finding
from tests.harness.report_helpers import make_result

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run installs it)"
)
XSS = "<script>alert(1)</script>"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-extensions",
    "--enable-logging=stderr",
    "--v=0",
]


def chromium(args: list[str], page: Path, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    """Page console output (errors, CSP violations, uncaught exceptions) as chromium logs it."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_console_detection_works(tmp_path):
    """Positive control: a page with a script error is caught by the console check used below."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('boom'); undefinedFn();</script></body></html>"
    )
    out = chromium(["--dump-dom"], page, tmp_path)
    msgs = console_messages(out.stderr)
    assert any("boom" in m for m in msgs) and any("undefinedFn" in m for m in msgs)


def test_report_renders_in_chromium(tmp_path):
    rs = [
        make_result(
            XSS,
            180,
            {2 / 255: 150, 4 / 255: 110, 8 / 255: 40},
            corruption_base=160,
            findings=[Finding("eps-monotonic", "warning", "<b>rises</b> with eps", related="linf-0.0156863")],
        ),
        make_result(
            "pgd-at-model",
            150,
            {2 / 255: 140, 4 / 255: 120, 8 / 255: 90},
            objective="pgd-at",
            condition={"eps": "8/255"},
            corruption_base=140,
        ),
    ]
    rep = build_report(rs, tmp_path / "rep", title="browser check")
    dom = chromium(["--dump-dom"], rep.html, tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert console_messages(dom.stderr) == [], console_messages(dom.stderr)
    # plots and tables survived parsing: 2 overview plots + heatmap and per-class per model
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", html)) == 2 + 2 * 2
    assert 'id="summary-table"' in html and html.count("<table") >= 2 * 4 + 1
    assert "Sanity findings" in html and "Pareto front" in html
    # the hostile name is text in the DOM: escaped, and no script element exists anywhere
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert "&lt;b&gt;rises&lt;/b&gt;" in html
    shot = tmp_path / "shot.png"
    out = chromium([f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars"], rep.html, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert console_messages(out.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a rendered page with plots, not blank
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400)
    assert sum(c > 0 for c in img.histogram()) > 20  # many grey levels: text and figures drawn
