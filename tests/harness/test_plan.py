"""`harness evaluate --plan-only` (`harness.plan`) against counted evaluations: exact when nothing
breaks (every budget runs in full), an upper bound when early stopping saves passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.api import load_dataset
from harness.cost import Cost
from harness.engine import EvalConfig, evaluate
from harness.plan import plan_evaluation
from harness.suites import Suite
from tests.attacks.test_cost import Counted
from tests.harness.cli_helpers import cli_inprocess
from tests.harness.report_helpers import fit_tiny

SPEC = "synthetic:n=40,channels=1,size=8,noise=0,num_classes=4"
BATCH = {"batch_size": 16, "chunk_size": 32}
# A suite of one corruption: its run is the engine's fixed overhead (sanity checks, gradient probe)
# plus two passes per image the plan knows exactly, so subtracting it isolates what the plan covers.
BASE = Suite("overhead", corruptions=[{"name": "gaussian_noise", "severity": 1}])


class Prototypes(nn.Module):
    """Nearest class prototype, logits -||x - p_c||^2: the noise-free synthetic images are prototypes
    (pairwise squared distances ~ 10), so no L-inf 8/255 perturbation (changing them < 1) breaks one."""

    def __init__(self, protos: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("p", protos.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(torch.cdist(x.flatten(1), self.p) ** 2)


def _counted(net: nn.Module, ds, suite, n: int | None = None) -> Cost:
    model = Counted(net).eval()
    evaluate(model, ds, suite, config=EvalConfig(progress=False, max_samples=n, **BATCH))
    return model.cost


def test_plan_is_exact_when_nothing_breaks():
    ds = load_dataset(SPEC)
    x, y = ds.batch(slice(0, len(ds)))
    net = Prototypes(torch.stack([x[y == c][0] for c in range(4)]))
    overhead = _counted(net, ds, BASE) - plan_evaluation(SPEC, BASE, **BATCH).total
    mixed = Suite("mixed", attacks=[{"name": "apgd-t", "eps": "8/255", "params": {"steps": 3}},
                                    {"name": "square", "eps": "4/255", "params": {"n_queries": 7}}])  # fmt: skip
    for suite in ("quick", mixed):
        plan = plan_evaluation(SPEC, suite, **BATCH)
        assert _counted(net, ds, suite) - overhead == plan.total  # pass for pass
        assert plan.undeclared == []


def test_plan_bounds_a_real_run_where_attacks_stop_early():
    ds = load_dataset("digits")
    net = fit_tiny(load_dataset("digits:split=train"), 60, 0)
    overhead = _counted(net, ds, BASE, 48) - plan_evaluation("digits", BASE, max_samples=48, **BATCH).total
    plan = plan_evaluation("digits", "quick", max_samples=48, **BATCH)
    actual = _counted(net, ds, "quick", 48) - overhead
    assert 0 < actual.forward <= plan.total.forward and 0 < actual.backward <= plan.total.backward
    # the documented gap: most digits samples break in the first PGD steps, so the real count is far lower
    assert actual.passes < plan.total.passes


def test_plan_rows_for_corruptions_smoothing_and_eot():
    plan = plan_evaluation("digits", "natural", max_samples=10)
    assert all(r.cost == Cost(10) for r in plan.rows) and plan.clean == Cost(10)
    cert = plan_evaluation(SPEC, "certified", max_samples=4, **BATCH)
    smooth = [r for r in cert.rows if r.kind == "smoothing"]
    assert smooth and all(r.cost is not None and r.cost.forward >= 4 * 100_000 for r in smooth)
    eot = plan_evaluation("digits", "quick", max_samples=10, eot_samples=3)
    one = plan_evaluation("digits", "quick", max_samples=10)
    assert eot.clean == Cost(30) and eot.total.backward == 3 * one.total.backward


def test_cli_plan_only_needs_no_model_and_reads_like_a_person_writes(capsys):
    args = ["evaluate", "--plan-only", "--dataset", SPEC, "--eps", "linf=2/255,8/255", "--max-samples", "20"]
    code, out, err = cli_inprocess(*args, capsys=capsys)
    assert code == 0, err
    for want in ("clean verdict", "fgsm  L∞ 2/255", "pgd  L∞ 8/255", "total (upper bound)", "n=20"):
        assert want in out, out
    plan = plan_evaluation(SPEC, "quick", max_samples=20, eps={"linf": (2 / 255, 8 / 255)})
    assert f"{plan.total.passes:,}" in out
    code, _, err = cli_inprocess("evaluate", "--plan-only", "--batch-size", "0", capsys=capsys)
    assert code == 2 and len([line for line in err.splitlines() if line.strip()]) == 1, err


@pytest.mark.parametrize("batch, chunk", [(16, 32), ("auto", 32), (7, 20)])
def test_batches_cover_every_image_once(batch, chunk):
    from harness.plan import _batches

    sizes = _batches(45, batch if isinstance(batch, int) else None, chunk)
    assert sum(sizes) == 45 and max(sizes) <= min(chunk, batch if isinstance(batch, int) else 1)
