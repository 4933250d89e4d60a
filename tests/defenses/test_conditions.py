"""Training conditions: exact label-noise rates, asymmetric pairs, imbalance profiles, sidecar record."""

from __future__ import annotations

import json
import math

import pytest
import torch

import harness.api as api
from defenses.conditions import (
    apply_conditions,
    apply_imbalance,
    apply_label_noise,
    asym_pairs,
    imbalance_counts,
    parse_imbalance,
    parse_label_noise,
)
from harness.cli import main
from harness.errors import UsageError


@pytest.fixture(scope="module")
def train_digits():
    return api.load_dataset("digits:split=train")


def test_symmetric_noise_exact_rate_and_all_flips_wrong(train_digits):
    noisy, rec = apply_label_noise(train_digits, "sym:0.4", seed=3)
    changed = noisy.y != train_digits.y
    n = len(train_digits)
    assert int(changed.sum()) == round(0.4 * n) == 503
    assert rec["flipped"] == 503 and rec["actual_rate"] == pytest.approx(503 / n)
    assert torch.equal(noisy.ids, train_digits.ids) and torch.equal(noisy.x, train_digits.x)
    # wrong labels spread over the other classes (uniform over 9 classes: each gets some)
    assert len(torch.unique(noisy.y[changed] - train_digits.y[changed])) > 10


def test_noise_is_seeded(train_digits):
    a, _ = apply_label_noise(train_digits, "sym:0.2", seed=0)
    b, _ = apply_label_noise(train_digits, "sym:0.2", seed=0)
    c, _ = apply_label_noise(train_digits, "sym:0.2", seed=1)
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)


def test_asymmetric_pairs_on_digits(train_digits):
    noisy, rec = apply_label_noise(train_digits, "asym:0.3", seed=0)
    pairs = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
    assert rec["pairs"] == {str(k): v for k, v in pairs.items()}
    y0, y1 = train_digits.y, noisy.y
    changed = y1 != y0
    for c in range(10):
        n_c = int((y0 == c).sum())
        flips = changed & (y0 == c)
        if c in pairs:
            assert int(flips.sum()) == round(0.3 * n_c)
            assert bool((y1[flips] == pairs[c]).all())
        else:
            assert int(flips.sum()) == 0


def test_asymmetric_pairs_cifar10_and_fallback():
    assert asym_pairs("cifar10", 10) == {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
    assert asym_pairs("synthetic", 4) == {0: 1, 1: 2, 2: 3, 3: 0}


def test_imbalance_profiles():
    # exp: n_c = floor(n_max * rho^(-c/(K-1))) with rho^(-1/9) = 0.774264
    assert imbalance_counts("exp", 10, 100, 10) == [100, 77, 59, 46, 35, 27, 21, 16, 12, 10]
    assert imbalance_counts("step", 5, 100, 10) == [100] * 5 + [20] * 5
    assert imbalance_counts("step", 4, 40, 3) == [40, 40, 10]


def test_apply_imbalance_counts_and_seed(train_digits):
    sub, rec = apply_imbalance(train_digits, "exp:10", seed=0)
    n_max = int(train_digits.class_counts().min())
    expected = [math.floor(n_max * 10 ** (-c / 9) + 1e-9) for c in range(10)]
    assert rec["class_counts"] == expected == [int(v) for v in sub.class_counts()]
    assert set(sub.ids.tolist()) <= set(train_digits.ids.tolist())
    again, _ = apply_imbalance(train_digits, "exp:10", seed=0)
    other, _ = apply_imbalance(train_digits, "exp:10", seed=1)
    assert torch.equal(sub.ids, again.ids) and not torch.equal(sub.ids, other.ids)


def test_conditions_keep_clean_labels(train_digits):
    cond = apply_conditions(train_digits, label_noise="sym:0.4", imbalance="step:2", seed=0)
    assert set(cond.condition) == {"label_noise", "imbalance", "seed"}
    pos = torch.searchsorted(train_digits.ids, cond.train.ids)
    assert torch.equal(cond.clean_labels, train_digits.y[pos])
    assert int((cond.train.y != cond.clean_labels).sum()) == round(0.4 * len(cond.train))


@pytest.mark.parametrize(
    "fn,spec", [(parse_label_noise, "sym"), (parse_label_noise, "sym:1.5"), (parse_label_noise, "flip:0.2"),
                (parse_imbalance, "exp:0.5"), (parse_imbalance, "exp:x"), (parse_imbalance, "log:10")],
)  # fmt: skip
def test_bad_specs(fn, spec):
    with pytest.raises(UsageError) as e:
        fn(spec)
    assert "e.g." in (e.value.hint or "")


def test_cli_bad_spec_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--label-noise", "sym:2", "--no-progress"])
    assert e.value.code == 2
    assert "sym:RATE" in capsys.readouterr().err


def test_api_trains_on_noisy_labels_evaluates_on_clean(monkeypatch):
    import defenses

    seen = {}

    def fake_train(objective, model, train_ds, test_ds, **kw):
        seen.update(train=train_ds, test=test_ds, **kw)

    monkeypatch.setattr(defenses, "train", fake_train)
    api.train("ce", "mlp", "digits", label_noise="sym:0.4", seed=2)
    clean_train = api.load_dataset("digits:split=train")
    clean_test = api.load_dataset("digits:split=test")
    assert torch.equal(seen["test"].y, clean_test.y)
    assert int((seen["train"].y != clean_train.y).sum()) == 503
    assert seen["condition"]["label_noise"]["spec"] == "sym:0.4" and seen["condition"]["seed"] == 2


def test_sidecar_records_condition(tmp_path):
    torch.set_num_threads(1)
    res = api.train(
        "ce", "mlp", "digits", epochs=1, progress=False, eval_samples=0, out=tmp_path / "m",
        label_noise="asym:0.2", imbalance="exp:5",
    )  # fmt: skip
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["condition"] == res.meta.condition
    assert side["condition"]["imbalance"]["profile"] == "exp" and side["condition"]["imbalance"]["rho"] == 5.0
    assert side["condition"]["label_noise"]["kind"] == "asym"
    assert sum(side["condition"]["imbalance"]["class_counts"]) == side["condition"]["label_noise"]["n"]


# ---- dependent, open and superclass-circular noise (issue 24) ------------------------------------------
def _small(num_classes: int = 10, n: int = 200):
    from harness.api import load_dataset

    return load_dataset(f"synthetic:channels=1,size=8,num_classes={num_classes},n={n},split=train")


def test_dependent_noise_exact_count_always_wrong_and_feature_dependent():
    from defenses.conditions import apply_label_noise

    ds = _small()
    out, rec = apply_label_noise(ds, "dep:0.3", seed=1)
    changed = out.y != ds.y
    assert int(changed.sum()) == 60 == rec["flipped"]  # every chosen sample gets another class
    again, _ = apply_label_noise(ds, "dep:0.3", seed=1)
    assert torch.equal(again.y, out.y)  # seeded
    other, _ = apply_label_noise(ds, "dep:0.3", seed=2)
    assert not torch.equal(other.y, out.y)
    # Feature-dependent, not uniform: within a source class the flips concentrate on few targets.
    src = ds.y[changed] == 0
    assert len(torch.unique(out.y[changed][src])) <= 9


def test_open_noise_replaces_images_and_keeps_labels():
    from defenses.conditions import apply_label_noise

    ds = _small()
    out, rec = apply_label_noise(ds, "open:0.25", seed=0)
    assert torch.equal(out.y, ds.y) and rec["replaced"] == 50
    x0, _ = ds.batch(slice(None))
    x1, _ = out.batch(slice(None))
    replaced = (x0 != x1).flatten(1).any(1)
    assert int(replaced.sum()) == 50 and float(x1.min()) >= 0 and float(x1.max()) <= 1
    assert out.content_hash() != ds.content_hash()


def test_superclass_circular_noise_stays_in_the_superclass():
    from defenses.conditions import apply_label_noise, superclass_pairs

    ds = _small(num_classes=6, n=300)
    ds.info["coarse_labels_of_fine"] = [0, 1, 0, 1, 0, 1]
    assert superclass_pairs(ds) == {0: 2, 2: 4, 4: 0, 1: 3, 3: 5, 5: 1}
    out, _ = apply_label_noise(ds, "asym-super:0.4", seed=0)
    moved = out.y != ds.y
    coarse = torch.tensor(ds.info["coarse_labels_of_fine"])
    assert torch.equal(coarse[out.y[moved]], coarse[ds.y[moved]])
    with pytest.raises(UsageError, match="class hierarchy"):
        apply_label_noise(_small(), "asym-super:0.4", seed=0)
    with pytest.raises(UsageError, match="dep:RATE"):
        apply_label_noise(_small(), "dependent:0.4", seed=0)
