"""The report builder: files, contents, CIs, findings beside their numbers, escaping, Pareto fronts, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.reporting import build_report, find_runs, pareto_front
from harness.reporting import summary as S
from harness.results import Finding, Result
from tests.harness.report_helpers import make_result, real_runs

XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    return real_runs(tmp_path_factory.mktemp("runs"))


def cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


# ---- Pareto front (unit) ----------------------------------------------------------------------------
def test_pareto_front_hand_cases():
    pts = [(0.9, 0.1), (0.8, 0.4), (0.7, 0.3), (0.6, 0.5), (0.5, 0.5), (0.95, 0.0)]
    # (0.7,0.3) is dominated by (0.8,0.4); (0.5,0.5) by (0.6,0.5); the rest trade off.
    assert pareto_front(pts) == [3, 1, 0, 5]
    assert pareto_front([(0.5, 0.5), (0.5, 0.5)]) == [0, 1]  # ties dominate neither
    assert pareto_front([(0.5, float("nan")), (0.1, 0.1)]) == [1]
    assert pareto_front([]) == []


def test_headline_threat_prefers_training_eps_then_middle_linf():
    a = make_result("a", 180, {0.05: 150, 0.1: 120, 0.2: 60})
    b = make_result("b", 170, {0.05: 160, 0.1: 140, 0.2: 90}, objective="pgd-at")
    assert S.headline_threat([a, b]) == "linf-0.1"
    b.model["objective_params"] = {"eps": 0.2, "norm": "linf"}
    assert S.headline_threat([a, b]) == "linf-0.2"
    assert S.headline_threat([a, b], "linf-0.05") == "linf-0.05"
    from harness.errors import UsageError

    with pytest.raises(UsageError, match="no threat model"):
        S.headline_threat([a, b], "l2-1")


# ---- reports from real runs -------------------------------------------------------------------------
def test_report_from_real_runs(runs, tmp_path):
    rep = build_report([runs[0].parent], tmp_path / "rep", title="digits check")
    assert [r.name for r in rep.results] == ["linear-long", "linear-short"]
    md = rep.markdown.read_text()
    page = rep.html.read_text()
    for key in ("tradeoff", "eps_curves", "per_class-0", "per_class-1"):
        assert rep.figures[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "heatmap-0" not in rep.figures  # the quick suite has no corruptions
    # every accuracy with its 95 % CI: the clean and robust numbers of result.json appear with brackets
    for p in runs:
        r = Result.load(p)
        assert r.clean.pct_ci() in md and r.clean.pct_ci().split(" ")[0] in page
        for g in r.threat_models:
            assert g.accuracy.pct_ci() in md
            lo, hi = g.accuracy.ci95
            assert f'{100 * g.accuracy.accuracy:.1f}<span class="ci"> [{100 * lo:.1f}, {100 * hi:.1f}]' in page
        # the environment and hashes
        assert r.dataset["sha256"] in page and r.model["sha256_state"] in page and r.config["config_hash"] in page
        assert f"torch {r.environment['versions']['torch']}" in page
    # self-contained: every image is a data URI, nothing remote
    # 4 accuracy figures + a reliability diagram per model (calibration is recorded for every run)
    assert {"reliability-0", "reliability-1"} <= set(rep.figures)
    # ... and each run's gallery: one figure per threat model (the quick suite has no corruptions)
    gallery = [k for k in rep.figures if k.startswith("gallery/")]
    assert len(gallery) == sum(len(r.threat_models) for r in rep.results)
    assert page.count('<img alt="') == len(rep.figures) == 6 + len(gallery)
    assert re.findall(r'src="(?!data:image/png;base64,)', page) == []
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "![clean vs robust trade-off](tradeoff.png)" in md
    assert "Pareto front (clean vs L∞ 0.1)" in md


def test_find_runs_accepts_run_folder_parent_and_result_file(runs, tmp_path):
    assert find_runs([runs[0]]) == [runs[0]]
    assert find_runs([runs[0] / "result.json", runs[0]]) == [runs[0]]
    assert find_runs([runs[0].parent]) == sorted(runs)
    from harness.errors import UsageError

    with pytest.raises(UsageError, match=r"no result\.json"):
        find_runs([tmp_path])
    with pytest.raises(UsageError, match="does not exist"):
        find_runs([tmp_path / "nope"])


def test_cli_report_compare_export(runs, tmp_path):
    assert cli(["report", str(runs[0].parent), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "tradeoff.png").is_file()
    assert cli(["report", str(runs[0])]) == 0  # one run: the report lands in the run folder
    assert (runs[0] / "report.html").is_file()
    assert cli(["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "c")]) == 0
    data = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert data["baseline"] == "linear-long" and data["metrics"][0] == "clean"
    assert all(t["p_value"] is not None for t in data["tests"])  # same data, same ids: all paired
    assert "McNemar" in (tmp_path / "c" / "compare.md").read_text()
    assert cli(["export", str(runs[0]), "--format", "robustbench", "--out", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "model_info" / "digits" / "Linf" / "linear-long.json").is_file()
    assert cli(["export", str(runs[0]), "--format", "csv"]) == 2
    assert cli(["report", str(tmp_path / "missing")]) == 2
    assert cli(["compare", str(runs[0])]) == 2


# ---- constructed results: corruptions, findings, escaping, edge cases -------------------------------
def test_corruptions_heatmap_second_panel_and_per_class(tmp_path):
    rs = [
        make_result("standard", 190, {2 / 255: 120, 4 / 255: 40, 8 / 255: 2}, corruption_base=170),
        make_result(
            "at",
            160,
            {2 / 255: 140, 4 / 255: 110, 8 / 255: 70},
            objective="pgd-at",
            condition={"eps": "8/255"},
            corruption_base=150,
        ),
        make_result(
            "trades",
            165,
            {2 / 255: 138, 4 / 255: 105, 8 / 255: 60},
            objective="trades",
            condition={"beta": 6},
            corruption_base=155,
        ),
        make_result(
            "dominated",
            150,
            {2 / 255: 100, 4 / 255: 60, 8 / 255: 20},
            objective="ce",
            condition={"aug": "none"},
            corruption_base=120,
        ),
    ]
    rep = build_report(rs, tmp_path, threat="linf-0.0313725")
    assert {f"heatmap-{i}" for i in range(4)} <= set(rep.figures)
    md = rep.markdown.read_text()
    assert "| gaussian_noise |" in md and "severity 5" in md
    mean = S.mean_corruption(rs[0])
    assert mean is not None and mean.pct_ci() in md
    assert mean.n == 15 * 200 and mean.correct == sum(g.accuracy.correct for g in rs[0].corruptions)
    # front at linf 8/255: at (160,70), trades (165,60), standard (190,2); dominated (150,20) is off it
    assert "Pareto front (clean vs L∞ 8/255): at (pgd-at) [eps=8/255], trades [beta=6], standard (ce)." in md
    page = rep.html.read_text()
    assert page.count("<img") == 2 + 4 + 4  # tradeoff, eps curves, 4 heatmaps, 4 per-class


def test_findings_sit_beside_the_number_they_doubt(tmp_path):
    f_rob = Finding("eps-monotonic", "warning", "robust accuracy rises with eps", related="linf-0.2")
    f_model = Finding("stochastic", "error", "two forward passes differ")
    f_info = Finding("note", "info", "just information")
    r = make_result("flagged", 150, {0.1: 90, 0.2: 95}, findings=[f_rob, f_model, f_info])
    rep = build_report([r], tmp_path)
    md, page = rep.markdown.read_text(), rep.html.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| flagged"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].endswith("⚠[1]") and cells[3].endswith("⚠[2]") and "⚠" not in cells[2]
    assert "1. **ERROR** `stochastic`" in md and "2. **WARNING** `eps-monotonic`" in md
    assert "just information" not in md  # info findings are not alarms
    # HTML: the badge and the finding text are inside the very cell of the 0.2 number
    cell = re.search(r"<td>47\.5<span class=\"ci\">[^<]*</span>(.*?)</td>", page).group(1)
    assert 'href="#finding-2"' in cell and "robust accuracy rises with eps" in cell
    assert page.index('id="findings"') < page.index('id="summary-table"')  # findings come first


def test_html_escapes_every_user_string(tmp_path):
    r = make_result(
        XSS,
        150,
        {0.1: 90},
        objective='<img src=x onerror="alert(2)">',
        condition={"<b>k</b>": "v&v"},
        findings=[Finding("x<i>", "error", "<iframe src=javascript:alert(3)>", related="linf-0.1")],
    )
    r.environment["versions"]["evil"] = "</p><script>alert(4)</script>"
    rep = build_report([r], tmp_path)
    page = rep.html.read_text()
    for raw in (XSS, "<img src=x", "<iframe", "<b>k</b>", "<script>alert(4)", "<i>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src &#x27;none&#x27;" not in page
    md = rep.markdown.read_text()
    assert XSS not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_edge_cases_single_model_without_attacks_or_classes(tmp_path):
    r = make_result("clean-only", 100, {})
    r.per_class_clean = []
    rep = build_report([r], tmp_path)
    assert rep.figures == {}  # nothing to plot: no threat models, corruptions or classes
    assert "50.0 [" in rep.markdown.read_text()
    # two models with the same name get distinct labels
    a, b = make_result("m", 150, {0.1: 80}), make_result("m", 140, {0.1: 90})
    b.name = "m2"
    assert len(set(S.unique_labels([a, b]))) == 2
    # a model that lacks the headline threat model is left out of that panel, not plotted at 0
    c = make_result("other-eps", 150, {0.3: 10})
    rep = build_report([a, c], tmp_path / "x", threat="linf-0.1")
    assert "tradeoff" in rep.figures


@pytest.mark.slow
def test_harness_run_ends_with_the_report(tmp_path):
    """`harness run` builds report.html/report.md over all models it trained and says where."""
    from harness.api import run

    results = run(("ce",), epochs=1, out=tmp_path, name="r", progress=False)
    root = tmp_path / "r"
    assert (root / "report.html").is_file() and (root / "report.md").is_file() and (root / "tradeoff.png").is_file()
    assert results[0].clean.pct_ci() in (root / "report.md").read_text()


def test_export_robustbench_fields_and_values(tmp_path):
    import dataclasses

    from harness.reporting import export_robustbench
    from harness.reporting.export import MODEL_INFO_FIELDS

    try:
        from robustbench.utils import ModelInfo

        assert tuple(f.name for f in dataclasses.fields(ModelInfo)) == MODEL_INFO_FIELDS
    except ImportError:
        pass
    r = make_result("my-model", 181, {2 / 255: 150, 8 / 255: 101}, corruption_base=170)
    paths = export_robustbench(r, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "model_info/synthetic/Linf/my-model.json",
        "model_info/synthetic/corruptions/my-model.json",
    ]
    linf = json.loads(paths[0].read_text())
    assert set(linf) == set(MODEL_INFO_FIELDS)
    # 181/200 = 90.5 %, 101/200 = 50.5 % at RobustBench's standard 8/255
    assert linf["clean_acc"] == "90.50" and linf["autoattack_acc"] == "50.50" and linf["eps"] == "8/255"
    assert "not AutoAttack" in linf["footnote"] and "pgd" in linf["footnote"]
    corr = json.loads(paths[1].read_text())
    mean = S.mean_corruption(r)
    assert corr["corruptions_acc"] == f"{100 * mean.accuracy:.2f}" and corr["autoattack_acc"] is None
    assert json.loads(export_robustbench(r, tmp_path / "b", threat="linf-0.00784314")[0].read_text())["eps"] == "2/255"
