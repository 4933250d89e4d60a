"""ε as people write it: `harness.labels` by hand, and 2/255-style labels wherever a person reads a run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from harness.errors import UsageError
from harness.labels import eps_label, key_label, parse_eps, relabel, threat_label
from harness.reporting import build_report, compare_runs
from harness.results import Result
from harness.suites import Suite, parse_eps_grid
from tests.harness.browser_helpers import CHROMIUM, Browser
from tests.harness.cli_helpers import cli, cli_inprocess
from tests.harness.report_helpers import make_result


def test_eps_label_hand_cases():
    assert [eps_label(k / 255) for k in (1, 2, 4, 8, 16)] == ["1/255", "2/255", "4/255", "8/255", "16/255"]
    # the 6-significant-digit keys and float32 round trips are the same k/255
    assert eps_label(0.0313725) == "8/255" and eps_label(0.00784314) == "2/255"
    assert eps_label(float(__import__("numpy").float32(8 / 255))) == "8/255"
    # digits and L2 radii are not k/255: the plain short number
    assert [eps_label(e) for e in (0.05, 0.1, 0.2, 0.3, 0.5, 0.25)] == ["0.05", "0.1", "0.2", "0.3", "0.5", "0.25"]
    assert eps_label(0.123456) == "0.123456" and eps_label(1 / 3) == "85/255"  # 1/3 is 85/255 exactly
    assert eps_label(1.0) == "1" and eps_label(2.0) == "2"  # whole ranges, not 255/255
    assert eps_label(4 / 15, bits=4) == "4/15"
    assert threat_label("linf", 8 / 255) == "L∞ 8/255" and threat_label("l2", 0.5) == "L2 0.5"
    assert key_label("linf-0.0313725") == "L∞ 8/255" and key_label("l2-0.5") == "L2 0.5"
    assert key_label("gaussian_noise-3") == "gaussian_noise-3" and key_label("linf-x") == "linf-x"


def test_relabel_rewrites_keys_inside_finding_messages():
    msg = "pgd@linf-0.0313725 ran below its budget: the robust accuracy at linf-0.0313725 may be higher than l2-0.5."
    assert (
        relabel(msg) == "pgd@L∞ 8/255 ran below its budget: the robust accuracy at L∞ 8/255 may be higher than L2 0.5."
    )
    for same in ("gaussian_noise-3", "linf-x", "xlinf-0.1", "no key here"):
        assert relabel(same) == same


def test_findings_read_labels_in_the_report(tmp_path):
    from harness.results import Finding

    f = Finding(
        "eps-monotonic", "warning", "accuracy at linf-0.0313725 exceeds linf-0.0156863", related="linf-0.0313725"
    )
    r = make_result("m", 180, {4 / 255: 120, 8 / 255: 130}, findings=[f])
    rep = build_report([r], tmp_path / "rep")
    md, page = rep.markdown.read_text(), rep.html.read_text()
    assert "on L∞ 8/255: accuracy at L∞ 8/255 exceeds L∞ 4/255" in md
    assert "accuracy at L∞ 8/255 exceeds L∞ 4/255" in page
    assert r.findings[0].message == "accuracy at linf-0.0313725 exceeds linf-0.0156863"  # stored with keys


def test_parse_eps_accepts_fractions_and_refuses_the_rest():
    assert parse_eps("8/255") == 8 / 255 and parse_eps(" 4 / 255 ") == 4 / 255
    assert parse_eps("0.1") == 0.1 and parse_eps("1e-2") == 0.01 and parse_eps(0.5) == 0.5
    assert parse_eps("3/2", norm="l2") == 1.5
    for bad in ("1/0", "nan", "inf", "-1/255", "0", "abc", "8/", "1e400", True, None, [1]):
        with pytest.raises(UsageError) as e:
            parse_eps(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="exceeds 1"):
        parse_eps("300/255", norm="linf")


def test_eps_grid_and_suite_accept_k_over_255():
    assert parse_eps_grid(["linf=2/255,8/255", "l2=0.5"]) == {"linf": (2 / 255, 8 / 255), "l2": (0.5,)}
    for bad in ("linf=8/0", "linf=2", "linf=", "linf=nan", "l2=-1"):
        with pytest.raises(UsageError):
            parse_eps_grid([bad])
    suite = Suite("s", attacks=[{"name": "fgsm", "norm": "linf", "eps": "8/255"},
                                {"name": "pgd", "norm": "linf", "eps": ["2/255", 0.1]}])  # fmt: skip
    entries = suite.resolve()
    assert [e.eps for e in entries] == [8 / 255, 2 / 255, 0.1]
    assert [e.group for e in entries] == ["linf-0.0313725", "linf-0.00784314", "linf-0.1"]  # keys unchanged
    for bad in ("8/0", "two", "300/255", "-1/255"):
        with pytest.raises(UsageError, match="attack #1"):
            Suite("s", attacks=[{"name": "fgsm", "eps": bad}]).resolve()


def _human_parts(md: str) -> list[str]:
    """The summary-table header and the attack rows of report.md (what a person reads first)."""
    return [line for line in md.splitlines() if line.startswith("| model |") or line.startswith("| L∞")]


def test_cifar_shaped_run_reads_2_over_255_everywhere(tmp_path):
    """CLI table, result.json label, report.md, report.html, comparison: 2/255, never 0.00784314."""
    from safetensors.torch import save_file

    from tests.harness._user_models import rgb32

    torch.manual_seed(0)
    save_file(rgb32().state_dict(), tmp_path / "w.safetensors")
    out = tmp_path / "runs"
    args = ["evaluate", "--model", "tests.harness._user_models:rgb32", "--weights", tmp_path / "w.safetensors"]
    args += ["--out", out, "--no-progress"]
    args += ["--dataset", "synthetic:channels=3,size=32,n=24", "--suite", "quick", "--batch-size", "24"]
    res = cli(*args, "--name", "a", "--eps", "linf=2/255,4/255,8/255")
    assert res.returncode == 0, res.stderr
    for want in ("L∞ 2/255", "L∞ 4/255", "L∞ 8/255"):
        assert want in res.stdout
    assert "0.00784314" not in res.stdout and "linf-" not in res.stdout
    data = json.loads((out / "a" / "result.json").read_text())
    groups = [g for g in data["groups"] if g["kind"] == "attack"]
    assert [(g["key"], g["label"]) for g in groups] == [
        ("linf-0.00784314", "L∞ 2/255"),
        ("linf-0.0156863", "L∞ 4/255"),
        ("linf-0.0313725", "L∞ 8/255"),
    ]
    r = Result.load(out / "a")
    rep = build_report([out / "a"], tmp_path / "rep")
    md = rep.markdown.read_text()
    head = _human_parts(md)[0]
    assert "L∞ 2/255 | L∞ 4/255 | L∞ 8/255" in head, head
    assert sum(line.startswith("| L∞ 8/255 | fgsm") for line in md.splitlines()) == 1
    assert "linf-0.0" not in md and "0.00784314" not in md
    page = rep.html.read_text()
    assert ">L∞ 2/255</th>" in page and ">L∞ 8/255</td>" in page
    # the keys survive only as tooltips (title attributes), never as visible text
    visible = page.replace('title="linf-0.00784314"', "").replace('title="linf-0.0156863"', "")
    visible = visible.replace('title="linf-0.0313725"', "")
    assert "linf-0.0" not in visible
    assert r.group("linf-0.0313725").label == "L∞ 8/255"
    cmp = compare_runs([out / "a", out / "a"])
    assert [cmp.label(m) for m in cmp.metrics[1:]] == ["L∞ 2/255", "L∞ 4/255", "L∞ 8/255"]
    assert "| L∞ 8/255 |" in cmp.to_markdown()
    assert math.isclose(r.group("linf-0.0313725").eps, 8 / 255, rel_tol=1e-12)  # parsed exactly, not rounded


def test_digits_eps_reads_as_the_number_and_old_results_still_label(tmp_path):
    """eps 0.1 is 0.1; a result.json written before labels existed (no label field) reads the same."""
    r = make_result("digits-model", 180, {0.05: 150, 0.1: 110, 0.3: 20})
    assert all(g.label is None for g in r.groups)  # as old files: the label comes from norm and eps
    rep = build_report([r], tmp_path / "rep")
    md = rep.markdown.read_text()
    assert "| model | clean | L∞ 0.05 | L∞ 0.1 | L∞ 0.3 |" in md
    assert "Pareto front (clean vs L∞ 0.1)" in md
    assert ">L∞ 0.1</th>" in rep.html.read_text()


def test_cli_refuses_bad_eps_in_one_line(tmp_path, capsys):
    args = ["evaluate", "--model", "tests.harness._user_models:small_net", "--eps", "linf=8/0", "--out", tmp_path]
    code, _, err = cli_inprocess(*args, capsys=capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "8/0" in lines[0] and "hint" in lines[0], err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_headers_read_k_over_255_in_chromium(tmp_path):
    """The summary table as a browser shows it; HARNESS_DOCS_IMAGES=1 rewrites the docs' screenshot."""
    rs = [
        make_result("standard", 186, {2 / 255: 120, 4 / 255: 61, 8 / 255: 9}, objective="ce"),
        make_result("pgd-at", 160, {2 / 255: 141, 4 / 255: 122, 8 / 255: 88}, objective="pgd-at"),
    ]
    rep = build_report(rs, tmp_path / "rep", title="CIFAR-shaped run")
    with Browser(tmp_path / "profile", height=700) as b:
        b.open(rep.html)
        heads = b.eval(
            "Array.from(document.querySelectorAll('#summary-table th')).map(function(t){return t.textContent})"
        )
        assert heads == ["model", "clean", "L∞ 2/255", "L∞ 4/255", "L∞ 8/255"]
        attack_rows = b.eval(
            "Array.from(document.querySelectorAll('table.attacks td.l')).map(function(t){return t.textContent})"
        )
        assert "L∞ 8/255" in attack_rows and not any("linf-" in t for t in attack_rows)
        assert b.problems() == []
        shot = b.screenshot(tmp_path / "summary.png", selector="#summary-table")
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("HARNESS_DOCS_IMAGES"):
        target = Path(__file__).resolve().parents[2] / "docs" / "images" / "report-eps-labels.png"
        target.write_bytes(shot)
