"""--batch-size auto: the largest batch below a (simulated) out-of-memory limit, found once, and the run completes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness import api
from harness.batching import CPU_CAP, autotune_batch_size
from harness.engine import EvalConfig, parse_batch_size
from harness.errors import UsageError
from tests.harness.cli_helpers import cli

OOMS = [
    lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"),
]


class MemoryLimited(nn.Module):
    """A small digits classifier that raises out-of-memory for batches above ``limit`` (any call)."""

    def __init__(self, limit: int, oom=OOMS[0]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.limit, self.oom = limit, oom
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise self.oom()
        return self.net(x)


@pytest.mark.parametrize("limit", [1, 37, 64, 100, 1000])
@pytest.mark.parametrize("oom", OOMS)
def test_autotune_finds_the_largest_size_below_the_limit(limit, oom):
    tried = []

    def step(n: int) -> None:
        tried.append(n)
        if n > limit:
            raise oom()

    assert autotune_batch_size(step, cap=4096) == limit
    assert len(tried) <= 50  # doubling then bisection, not a linear scan


def test_autotune_stops_at_the_cap_and_raises_what_is_not_out_of_memory():
    assert autotune_batch_size(lambda n: None, cap=300) == 300
    with pytest.raises(ValueError):
        autotune_batch_size(lambda n: (_ for _ in ()).throw(ValueError("a bug, not memory")), cap=300)


@pytest.mark.parametrize("oom", OOMS)
def test_auto_batch_size_in_an_evaluation_is_the_largest_that_fits(oom):
    limit = 45
    model = MemoryLimited(limit, oom).eval()
    kw = dict(eps={"linf": (0.1,)}, max_samples=120, progress=False)
    auto = api.evaluate(model, "digits", "quick", batch_size="auto", **kw)
    assert auto.config["autotuned_batch_size"] == limit
    assert auto.config["batch_size"] == "auto" and auto.config["final_batch_size"] == limit
    assert max(model.sizes) > limit  # the limit was hit (probing) and recovered from
    model.limit = 10**9
    fixed = api.evaluate(model, "digits", "quick", batch_size=16, **kw)
    # results do not depend on the batch size (every random draw is keyed by sample id)
    assert [g.accuracy.correct for g in auto.groups] == [g.accuracy.correct for g in fixed.groups]
    assert auto.config["batch_plan"] == {"batch_size": "auto", "used": [limit], "per_chunk": [limit]}
    assert fixed.config["batch_plan"] == {"batch_size": 16, "used": [16], "per_chunk": [16]}


class OOMOnOneImage(nn.Module):
    """Out of memory for a batch of more than ``limit`` images that holds ``image`` (one sample's pixels)."""

    def __init__(self, inner: nn.Module, image: torch.Tensor, limit: int) -> None:
        super().__init__()
        self.inner, self.image, self.limit = inner, image.flatten(), limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit and (x.flatten(1) == self.image).all(1).any():
            raise OOMS[0]()
        return self.inner(x)


def test_the_batch_plan_records_a_back_off_inside_a_chunk():
    """Chunks of 24 at batch 12; the second batch of chunk 0 runs out of memory, so it is redone at 6."""
    ds = api.load_dataset("digits")
    image = ds.batch(slice(15, 16))[0][0]
    model = OOMOnOneImage(MemoryLimited(10**9), image, limit=6).eval()
    kw = dict(eps={"linf": (0.1,)}, max_samples=48, chunk_size=24, progress=False)
    res = api.evaluate(model, ds, "quick", batch_size=12, **kw)
    assert res.config["batch_plan"] == {"batch_size": 12, "used": [12, 6], "per_chunk": [[12, 6], 6]}
    assert res.config["oom_backoffs"] == 1 and res.config["final_batch_size"] == 6
    plain = api.evaluate(MemoryLimited(10**9).eval(), ds, "quick", batch_size=12, **kw)
    assert [g.accuracy.correct for g in res.groups] == [g.accuracy.correct for g in plain.groups]


def test_auto_batch_size_is_probed_once_per_evaluation(tmp_path):
    from harness.engine import Evaluation

    model = MemoryLimited(10**9).eval()
    cfg = EvalConfig(batch_size="auto", max_samples=60, chunk_size=30, progress=False, eps={"linf": (0.1,)})
    ev = Evaluation(model, api.load_dataset("digits"), "quick", out=tmp_path, name="a", config=cfg)
    res = ev.run()
    # CPU gives no out-of-memory signal, so the cap: here the chunk size (a batch never spans chunks)
    assert res.config["autotuned_batch_size"] == min(30, CPU_CAP)
    seen = len(model.sizes)
    assert ev._autotune() == 30 and len(model.sizes) == seen  # cached: no second probe


@pytest.mark.parametrize(("value", "expected"), [("auto", "auto"), (None, "auto"), ("64", 64), (8, 8)])
def test_batch_size_forms(value, expected):
    assert parse_batch_size(value) == expected


@pytest.mark.parametrize("value", [0, -3, "lots", 2.5, True])
def test_a_bad_batch_size_is_a_usage_error(value):
    with pytest.raises(UsageError, match="batch size"):
        EvalConfig(batch_size=value)


def test_cli_rejects_a_bad_batch_size_with_exit_code_2(tmp_path):
    r = cli("evaluate", "--model", "harness.models:create_model", "--batch-size", "big", "--out", tmp_path)
    assert r.returncode == 2 and "batch size" in (r.stdout + r.stderr)
