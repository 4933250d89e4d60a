"""The batch-size promise checked inside one process, run by test_kernel_paths.py under several CPU capabilities.

    ATEN_CPU_CAPABILITY=default python -m tests.harness.kernel_paths CHECKPOINT OUT_DIR

``ATEN_CPU_CAPABILITY`` is read when torch is imported, so every kernel path needs its own process.
Checks (an AssertionError exits non-zero with the reason):

- attacks (FGSM, PGD L-inf/L2, APGD-CE, APGD-T, FAB L-inf/L2, Square) on 24 test digits, all at
  once and in batches of 5: same verdicts, equally strong points (tests/verdicts.py), and bit for
  bit the same output when the batch plan is the same;
- the engine (FGSM, PGD L-inf, PGD L2) at batch sizes 7 and 24: the same status, tie flag and clean
  verdict for every sample and entry, and each run's batch plan in result.json.

Prints one JSON line: the capability torch reports and how many comparisons passed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

N = 24
PART = 5
CHUNK = 16
SUITE = """
summary = "kernel-path checks: FGSM, PGD-10 (L-inf), PGD-10 (L2)"
[[attack]]
name = "fgsm"
norm = "linf"
eps = 0.1
[[attack]]
name = "pgd"
norm = "linf"
eps = 0.1
params = { steps = 10, restarts = 1, loss = "ce" }
[[attack]]
name = "pgd"
norm = "l2"
eps = 1.0
params = { steps = 10, restarts = 1, loss = "ce" }
"""
ATTACKS_CHECKED = (
    ("fgsm", {"norm": "linf", "eps": 0.1}),
    ("pgd", {"norm": "linf", "eps": 0.1, "steps": 10}),
    ("pgd", {"norm": "l2", "eps": 1.0, "steps": 10}),
    ("apgd-ce", {"norm": "linf", "eps": 0.1, "steps": 10}),
    ("apgd-t", {"norm": "linf", "eps": 0.1, "steps": 10, "n_target_classes": 2}),
    ("fab", {"norm": "linf", "eps": 0.1, "steps": 6, "restarts": 1}),
    ("fab", {"norm": "l2", "eps": 0.8, "steps": 6, "restarts": 1}),
    ("square", {"norm": "linf", "eps": 0.15, "n_queries": 30}),
)


def check_attacks(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> int:
    from harness.registry import ATTACKS
    from harness.threat import ThreatModel
    from tests.verdicts import assert_same_outcome

    for name, params in ATTACKS_CHECKED:
        attack = ATTACKS.create(name, **params)
        whole = attack(model, x, y, index=ids, seed=3)
        assert torch.equal(whole, attack(model, x, y, index=ids, seed=3)), f"{name}: same plan, other bits"
        cuts = [slice(i, i + PART) for i in range(0, N, PART)]
        parts = torch.cat([attack(model, x[c], y[c], index=ids[c], seed=3) for c in cuts])
        try:
            assert_same_outcome(model, x, y, whole, parts, ThreatModel(params["norm"], params["eps"]))
        except AssertionError as e:
            raise AssertionError(f"{name} {params}: {e}") from e
    return len(ATTACKS_CHECKED)


def check_engine(ckpt: Path, out: Path) -> int:
    from harness.api import evaluate
    from harness.records import open_record
    from harness.suites import parse_suite

    runs = {}
    for bs in (7, N):
        res = evaluate(
            ckpt, "digits", parse_suite(SUITE, "kernel-paths"), out=out, name=f"bs{bs}", max_samples=N,
            batch_size=bs, chunk_size=CHUNK, progress=False, device="cpu",
        )  # fmt: skip
        plan = res.config["batch_plan"]  # chunks [0, 16) and [16, 24), each run at batch size bs
        assert plan == {"batch_size": bs, "used": [bs], "per_chunk": [bs, bs]}, plan
        store = open_record(out / f"bs{bs}" / "records")
        runs[bs] = {k: store.column(k) for k in store.read(0)}
    a, b = runs[7], runs[N]
    assert np.array_equal(a["clean_pred"] == a["label"], b["clean_pred"] == b["label"])
    n_cols = 0
    for col in a:
        if col[0] in "st" and col[1:].isdigit():
            assert np.array_equal(a[col], b[col]), f"engine column {col} differs between batch sizes 7 and {N}"
            n_cols += 1
    return n_cols


def main() -> None:
    ckpt, out = Path(sys.argv[1]), Path(sys.argv[2])
    from harness.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    model = model.eval()
    from harness.api import load_dataset

    ds = load_dataset("digits")
    x, y = ds.batch(slice(0, N))
    n_attacks = check_attacks(model, x, y, ds.ids[:N])
    n_cols = check_engine(ckpt, out)
    cap = torch.backends.cpu.get_cpu_capability()
    print(json.dumps({"capability": cap, "threads": torch.get_num_threads(), "attacks": n_attacks, "columns": n_cols}))


if __name__ == "__main__":
    main()
