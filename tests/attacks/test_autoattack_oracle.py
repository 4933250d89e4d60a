"""Native AutoAttack against pyautoattack on ≥ 1000 samples (slow: minutes per model on CPU).

Issue 5's oracle: on CE, PGD-AT and TRADES digits models, and on a seeded synthetic CIFAR-shaped set,
the native robust accuracy is within ±0.5 points of the reference's and never above it by more — for
AutoAttack `standard`, and for APGD-CE alone and Square alone. Per-sample agreement is printed.
The models are MLPs: the oracle compares two implementations of the same attacks on the same model,
and an MLP's forward costs ~1/100 of the digits CNN's on CPU, which turns hours into minutes here (the
CNN is covered by the smaller APGD, FAB-T and Square oracles). Each ε puts robust accuracy mid-range, where
a weaker attack would show.
Run with ``python -m pytest -m slow tests/attacks/test_autoattack_oracle.py -s`` (prints agreement).
"""

from __future__ import annotations

import logging
import time

import pytest
import torch

from harness.registry import ATTACKS

pytestmark = pytest.mark.slow

TOLERANCE = 0.005  # ±0.5 points of robust accuracy
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
BATCH = 500


def _reference(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, attacks, seed: int = 0
) -> torch.Tensor:
    if tuple(attacks) != STANDARD:
        # The harness's pyautoattack backend: the reference's own component objects, with the
        # reference budgets of `standard` (its `custom` would otherwise keep 5 APGD restarts).
        ref = ATTACKS.create(
            "autoattack", norm="linf", eps=eps, version="custom", components=list(attacks), backend="pyautoattack"
        )
        return ref(model, x, y, index=torch.arange(len(x)), seed=seed)
    from harness.compat import import_autoattack

    autoattack = import_autoattack()
    adversary = autoattack.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    adversary.logger.setLevel(logging.WARNING)
    torch.manual_seed(0)
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=BATCH)
    return x_adv


def _compare(
    model: torch.nn.Module, dataset: str, eps: float, n: int, attacks=STANDARD, seed: int = 0
) -> tuple[float, float, float]:
    from harness import api

    ds = api.load_dataset(dataset)
    n = min(n, len(ds))
    x, y = ds.batch(slice(0, n))
    model = model.eval()
    if tuple(attacks) == STANDARD:
        native = ATTACKS.create("autoattack", norm="linf", eps=eps, version="standard")
    else:
        native = ATTACKS.create("autoattack", norm="linf", eps=eps, version="custom", components=list(attacks))
    t0 = time.perf_counter()
    xn = torch.cat(
        [
            native(model, x[i : i + BATCH], y[i : i + BATCH], index=ds.ids[i : i + BATCH], seed=seed)
            for i in range(0, n, BATCH)
        ]
    )
    t_native = time.perf_counter() - t0
    xr = _reference(model, x, y, eps, attacks, seed)
    t_ref = time.perf_counter() - t0 - t_native
    with torch.no_grad():
        rn, rr = model(xn).argmax(1) == y, model(xr).argmax(1) == y
    acc_n, acc_r, agree = rn.float().mean().item(), rr.float().mean().item(), (rn == rr).float().mean().item()
    print(
        f"\n{'+'.join(attacks)} on {dataset} n={n} eps={eps:.4g} seed {seed}: native {acc_n:.4f} ({t_native:.0f} s) "
        f"pyautoattack {acc_r:.4f} ({t_ref:.0f} s) agreement {agree:.4f} "
        f"(native-only robust {int((rn & ~rr).sum())}, reference-only robust {int((rr & ~rn).sum())})"
    )
    return acc_n, acc_r, agree


def _assert_matches(acc_n: float, acc_r: float, agree: float, min_agreement: float) -> None:
    assert acc_n <= acc_r + TOLERANCE and abs(acc_n - acc_r) <= TOLERANCE
    assert agree >= min_agreement


@pytest.fixture(scope="module", params=["ce", "pgd-at", "trades"])
def digits_mlp(request):
    from harness import api

    return api.train(request.param, "mlp", "digits", epochs=10, progress=False, device="cpu", seed=0).model


def test_native_autoattack_matches_the_reference_on_digits(digits_mlp) -> None:
    _assert_matches(*_compare(digits_mlp, "digits:split=all", 0.1, 1797), min_agreement=0.98)


def test_native_apgd_ce_alone_matches_the_reference_on_digits(digits_mlp) -> None:
    _assert_matches(*_compare(digits_mlp, "digits:split=all", 0.1, 1797, ("apgd-ce",)), min_agreement=0.98)


def test_native_square_alone_matches_the_reference_on_digits(digits_mlp) -> None:
    # Square is a random search and the two implementations draw from different random streams, so
    # one run each is not a measurement of either: on these models a single seed's robust accuracy
    # moved by up to 1.5 points (native) and 0.8 points (reference) across seeds 0-3. The ±0.5 point
    # criterion is applied to the means over four seeds. Per-sample agreement of the reference with
    # itself across seeds was 94.9-95.8 % on the CE model, so the floor for native vs reference is 93 %.
    seeds = (0, 1, 2, 3)
    runs = [_compare(digits_mlp, "digits:split=all", 0.1, 1797, ("square",), seed=s) for s in seeds]
    mean_n = sum(r[0] for r in runs) / len(runs)
    mean_r = sum(r[1] for r in runs) / len(runs)
    print(f"square means over seeds {seeds}: native {mean_n:.4f} pyautoattack {mean_r:.4f}")
    _assert_matches(mean_n, mean_r, min(r[2] for r in runs), min_agreement=0.93)


def test_native_autoattack_matches_the_reference_on_synthetic_cifar_shapes() -> None:
    from harness import api

    data = "synthetic:n=1024,channels=3,size=32,noise=0.3"
    model = api.train(
        "ce",
        "mlp",
        data.replace("synthetic:", "synthetic:split=train,"),
        epochs=4,
        progress=False,
        device="cpu",
        seed=0,
    ).model
    # The synthetic prototypes are far apart: PGD-20 leaves 100 % at 16/255, 48 % at 36/255, 0 % at 48/255.
    _assert_matches(*_compare(model, data, 36 / 255, 1024), min_agreement=0.98)
