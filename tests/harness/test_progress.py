"""The evaluation display: samples and ETA for the run, and per chunk its bar, ETA, entry and alive count."""

from __future__ import annotations

import io

import torch
from rich.console import Console

from harness.api import load_dataset
from harness.engine import EvalConfig, evaluate
from harness.progress import Quiet, evaluation_progress
from tests.harness.report_helpers import fit_tiny


class _Untouchable:
    def sum(self):
        raise AssertionError("a quiet display must not read (and sync) the alive mask")


def test_display_shows_chunk_entry_alive_and_eta():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=160)
    with evaluation_progress(True, 100, "run-a", 2, console=console) as shown:
        shown.start_chunk(1, 64)
        shown.entry("pgd  L∞ 8/255", torch.tensor([True, False, True, True]), 4)
        shown.batch_done(32)
        shown.advance(32)
    text = buf.getvalue()
    for want in ("evaluate run-a", "32/100", "chunk 1/2", "32/64", "ETA", "pgd  L∞ 8/255: 3 of 4 alive"):
        assert want in text, text
    with evaluation_progress(False, 100, "run-b") as quiet:
        assert isinstance(quiet, Quiet)
        quiet.entry("pgd", _Untouchable(), 4)  # off: no count taken


def test_engine_reports_each_chunk_and_entry(capsys):
    net = fit_tiny(load_dataset("digits:split=train"), 30, 0)
    evaluate(net, load_dataset("digits"), "quick", config=EvalConfig(max_samples=48, batch_size=16, chunk_size=24))
    out = capsys.readouterr().out
    assert "evaluate" in out and "48/48" in out and "chunk 2/2" in out, out
    assert "pgd  L∞ 0.3: " in out and " of 8 alive" in out, out  # the last entry of the last batch (24 = 16 + 8)
