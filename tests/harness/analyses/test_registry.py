"""Registered post-run analyses: the built-in order, scoped registration, and a toy metric added in one
analysis plus one section function, seen in result.json and in both reports."""

from __future__ import annotations

import html

import pytest

from harness.analyses import ANALYSES, Analysis, AnalysisOutput, RunView, register_analysis
from harness.api import load_dataset
from harness.engine import EvalConfig, evaluate
from harness.errors import UsageError
from harness.records import schema as col
from harness.reporting import render_markdown
from harness.reporting.html import render_html
from harness.reporting.sections import SECTIONS, Section, Table, register_section
from harness.reporting.summary import unique_labels
from harness.results import Finding, Result
from tests.harness.report_helpers import fit_tiny

# The built-ins, in the order whose findings result.json has always listed.
BUILT_IN = ["calibration", "certified", "radius", "postcheck", "compile", "unit_test", "corruptions"]

SUITE = 'summary = "FGSM only"\n\n[[attack]]\nname = "fgsm"\nnorm = "linf"\neps = [0.1]\n'


def test_built_in_analyses_run_in_the_declared_order() -> None:
    assert ANALYSES.names() == BUILT_IN
    assert SECTIONS.names() == ["verified", "radius", "corruptions", "calibration", "certified", "unit_test"]


def test_scoped_registration_is_dropped_on_exit_and_duplicates_are_refused() -> None:
    class Dup(Analysis):
        name = "calibration"
        order = 1

        def run(self, view: RunView) -> AnalysisOutput:
            return AnalysisOutput()

    with ANALYSES.scoped():
        with pytest.raises(UsageError, match="registered twice"):
            register_analysis(Dup)

        @register_analysis
        class Early(Analysis):
            name = "early"
            order = 0

            def run(self, view: RunView) -> AnalysisOutput:
                return AnalysisOutput()

        assert ANALYSES.names()[0] == "early"
    assert ANALYSES.names() == BUILT_IN


def test_a_toy_metric_in_one_analysis_and_one_section_reaches_result_and_both_reports(tmp_path) -> None:
    """The docs/architecture.md recipe: a metric is an analysis (reads the record) plus its section."""
    (tmp_path / "fgsm.toml").write_text(SUITE)
    train, test = load_dataset("digits:split=train"), load_dataset("digits")
    model = fit_tiny(train, 20, 0)

    with ANALYSES.scoped(), SECTIONS.scoped():

        @register_analysis
        class FgsmMargin(Analysis):
            """Mean margin of the FGSM points over the samples it attacked, and an info finding naming it."""

            name = "toy_margin"
            order = 100

            def run(self, view: RunView) -> AnalysisOutput:
                k = next(i for i, e in enumerate(view.entries) if e.kind == "attack")
                margins = [
                    m for c in view.store.iter_chunks() for m, s in zip(c[col.margin(k)], c[col.status(k)]) if s >= 0
                ]
                mean = float(sum(margins) / len(margins))
                found = Finding("toy-margin", "info", f"mean FGSM margin {mean:.3f}", data={"mean": mean})
                return AnalysisOutput({"n": len(margins), "mean_margin": mean}, (found,))

        @register_section("toy_margin", order=100)
        def toy_section(results, labels) -> list[Section]:
            rows = tuple(
                (lab, str(r.extra["toy_margin"]["n"])) for lab, r in zip(labels, results) if "toy_margin" in r.extra
            )
            return (
                [Section("Toy margin", "toy-margin", "FGSM margins.", (Table(("model", "attacked"), rows),))]
                if rows
                else []
            )

        result = evaluate(
            model,
            test,
            str(tmp_path / "fgsm.toml"),
            out=tmp_path,
            name="toy",
            config=EvalConfig(max_samples=16, progress=False, batch_size=16, chunk_size=16),
        )
        saved = Result.load(tmp_path / "toy")
        toy = saved.extra["toy_margin"]
        assert 0 < toy["n"] <= 16 and toy == result.extra["toy_margin"]
        # Its finding comes after the built-in ones (order 100), and calibration is still there.
        assert saved.findings[-1].check == "toy-margin" and "calibration" in saved.extra
        md, page = render_markdown([saved]), render_html([saved], {})
        (lab,) = unique_labels([saved])
        assert f"## Toy margin\n\nFGSM margins.\n\n| model | attacked |\n|---|---|\n| {lab} | {toy['n']} |" in md
        assert '<h2 id="toy-margin">Toy margin</h2>' in page
        assert f"<tr><td>{html.escape(lab)}</td><td>{toy['n']}</td></tr>" in page
        assert "Toy margin" in (tmp_path / "toy" / "report.md").read_text()
    assert "toy_margin" not in ANALYSES and "toy_margin" not in SECTIONS
