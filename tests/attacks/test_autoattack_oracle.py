"""Native AutoAttack `standard` against pyautoattack's on ≥ 1000 samples (slow: minutes per model on CPU).

Issue 5's oracle: on CE, PGD-AT and TRADES digits models, and on a seeded synthetic CIFAR-shaped set,
the native robust accuracy is within ±0.5 points of the reference's and never above it by more.
Run with ``python -m pytest -m slow tests/attacks/test_autoattack_oracle.py -s`` (prints agreement).
"""

from __future__ import annotations

import pytest
import torch

from harness.registry import ATTACKS

pytestmark = pytest.mark.slow

TOLERANCE = 0.005  # ±0.5 points of robust accuracy


def _reference(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    from harness.compat import import_autoattack

    autoattack = import_autoattack()
    adversary = autoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, verbose=False)
    torch.manual_seed(0)
    return adversary.run_standard_evaluation(x, y, bs=500)


def _compare(model: torch.nn.Module, dataset: str, eps: float, n: int) -> tuple[float, float, float]:
    from harness import api

    ds = api.load_dataset(dataset)
    n = min(n, len(ds))
    x, y = ds.batch(slice(0, n))
    model = model.eval()
    native = ATTACKS.create("autoattack", norm="linf", eps=eps, version="standard")
    xn = torch.cat(
        [native(model, x[i : i + 500], y[i : i + 500], index=ds.ids[i : i + 500], seed=0) for i in range(0, n, 500)]
    )
    xr = _reference(model, x, y, eps)
    with torch.no_grad():
        rn, rr = model(xn).argmax(1) == y, model(xr).argmax(1) == y
    acc_n, acc_r, agree = rn.float().mean().item(), rr.float().mean().item(), (rn == rr).float().mean().item()
    print(f"{dataset} n={n} eps={eps}: native {acc_n:.4f} pyautoattack {acc_r:.4f} agreement {agree:.4f}")
    return acc_n, acc_r, agree


@pytest.mark.parametrize("objective", ["ce", "pgd-at", "trades"])
def test_native_autoattack_matches_the_reference_on_digits(objective: str) -> None:
    from harness import api

    model = api.train(objective, "cnn", "digits", epochs=10, progress=False, device="cpu", seed=0).model
    acc_n, acc_r, agree = _compare(model, "digits:split=all", 0.1, 1797)
    assert acc_n <= acc_r + TOLERANCE and abs(acc_n - acc_r) <= TOLERANCE
    assert agree >= 0.98


def test_native_autoattack_matches_the_reference_on_synthetic_cifar_shapes() -> None:
    from harness import api

    data = "synthetic:n=1024,channels=3,size=32,noise=0.3"
    model = api.train(
        "ce",
        "cnn",
        data.replace("synthetic:", "synthetic:split=train,"),
        epochs=4,
        progress=False,
        device="cpu",
        seed=0,
    ).model
    acc_n, acc_r, agree = _compare(model, data, 8 / 255, 1024)
    assert acc_n <= acc_r + TOLERANCE and abs(acc_n - acc_r) <= TOLERANCE
    assert agree >= 0.98
