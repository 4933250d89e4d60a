"""Golden per-sample verdicts: the committed PGD-AT digits model on 40 test digits, held bit for bit.

The expected bits were recorded before the issue-21 refactor (base commit f626540) and must never
change: a refactor of the engine, the records or the reader that changes one verdict fails here.
Verdicts, not float bits, are held (float sums differ across CPUs, docs/reliability.md); the one
exception is a verdict the record flags as a float-level tie (``clean_tie``/``t{k}``), which may
come out either way on another machine (docs/reliability.md, "ties").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness import api
from harness.records import open_record
from harness.records import schema as col
from harness.records.outcome import members_by_group, read_bits
from harness.suites import parse_suite

MODEL = Path(__file__).resolve().parents[2] / "data" / "gate" / "pgd_at_digits.safetensors"
SUITE = """
[[attack]]
name = "fgsm"
norm = "linf"
eps = 0.1

[[attack]]
name = "pgd"
norm = "linf"
eps = 0.1
params = { steps = 10 }

[[attack]]
name = "pgd"
norm = "l2"
eps = 0.75
params = { steps = 10 }

[[corruption]]
name = "gaussian_noise"
severity = [3]
"""
# 1 = correct (clean) / robust (group), one character per sample in record order.
EXPECTED = {
    "clean": "1011111111111111111111011111111111111111",
    "linf-0.1": "1011101111001110111111011011101111111011",
    "l2-0.75": "0011001101001110100011001010000100011001",
    "gaussian_noise-3": "1011111111011111111111011111111111111111",
}
FIRST_IDS = [3, 5, 7, 13, 16]


def _bits(a: np.ndarray) -> str:
    return "".join("1" if b else "0" for b in a)


def test_golden_verdicts(tmp_path: Path) -> None:
    model, _ = api.load_model(MODEL)
    api.evaluate(
        model, "digits", parse_suite(SUITE, "golden"), out=tmp_path, name="g",
        batch_size=16, chunk_size=16, seed=0, max_samples=40, progress=False, device="cpu",
    )  # fmt: skip
    rec = tmp_path / "g" / "records"
    rb = read_bits(rec)
    assert rb.ids[:5].tolist() == FIRST_IDS
    got = {"clean": rb.clean, **rb.groups}
    assert set(got) == set(EXPECTED)
    # Samples whose verdict rests on a float-level tie may differ (none on the recording machine).
    chunks = list(open_record(rec).iter_chunks())
    clean_tie = np.concatenate([c[col.CLEAN_TIE] for c in chunks]).astype(bool)
    for key, want in EXPECTED.items():
        tie = clean_tie.copy()
        for k in members_by_group(rb.entries).get(key, []):
            tie |= np.concatenate([c[col.tie(k)] for c in chunks]).astype(bool)
        have = _bits(got[key])
        differ = [i for i, (a, b) in enumerate(zip(have, want)) if a != b and not tie[i]]
        assert not differ, f"{key}: verdicts changed at record rows {differ}\n have {have}\n want {want}"
