"""The report's galleries: PNGs beside report.md (linked), embedded in report.html, and loaded in chromium.

HARNESS_DOCS_IMAGES=1 python -m pytest tests/harness/test_report_gallery.py rewrites the docs' screenshots.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.reporting import build_report
from tests.harness.browser_helpers import CHROMIUM, Browser
from tests.harness.gallery_helpers import evaluate_digits

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images"
PARTS = {
    "Linf_0.1": "gallery-threat.png",
    "corruptions": "gallery-corruptions.png",
    "smoothing": "gallery-smoothing.png",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-gallery")
    evaluate_digits(tmp, "run", 16)
    return build_report([tmp / "run"], tmp / "run", title="gallery check")


def test_gallery_pngs_lie_beside_the_report_and_markdown_links_them(report):
    md = report.markdown.read_text()
    links = re.findall(r"\]\((gallery-[^)]+\.png)\)", md)
    # Two threat models, the corruptions and the smoothing noise of the one run.
    assert len(links) == 4 and all((report.directory / name).is_file() for name in links)
    assert "## Gallery" in md and "broken by" in md
    page = report.html.read_text()
    assert page.count('<figure class="gallery"') == 4 and page.count("data:image/png;base64,") >= 4


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_gallery_images_load_in_chromium(report, tmp_path):
    with Browser(tmp_path / "profile", height=900) as b:
        b.open(report.html)
        widths = b.eval(
            "Array.from(document.querySelectorAll('figure.gallery img')).map(function(i){return i.naturalWidth})"
        )
        assert len(widths) == 4 and all(w > 0 for w in widths)
        assert b.eval("document.getElementById('gallery').textContent") == "Gallery"
        assert b.problems() == []
        shots = {}
        for what, name in PARTS.items():
            shots[name] = b.screenshot(tmp_path / name, selector=f'figure.gallery[data-what="{what}"]')
    assert all(s[:8] == b"\x89PNG\r\n\x1a\n" for s in shots.values())
    if os.environ.get("HARNESS_DOCS_IMAGES"):
        for name, shot in shots.items():
            (DOCS / name).write_bytes(shot)
