"""Training-data augmentation: kernels against a per-sample reference, keyed draws, defaults, resume."""

from __future__ import annotations

import pytest
import torch

from defenses import TrainConfig, Trainer
from defenses import train as train_model
from defenses.augment import (
    PIPELINES,
    Augment,
    crop_kernel,
    cutout_kernel,
    default_augment,
    default_pad,
    flip_kernel,
)
from harness.api import load_dataset
from harness.errors import UsageError
from harness.registry import OBJECTIVES
from harness.rng import torch_generator


def _images(b: int = 5, c: int = 2, h: int = 6, w: int = 7) -> torch.Tensor:
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w) + 1


def test_crop_kernel_matches_per_sample_slicing():
    x = _images()
    pad = 2
    shift = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 2], [4, 0]])
    out = crop_kernel(x, shift, pad)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for i, (r, c) in enumerate(shift.tolist()):
        assert torch.equal(out[i], xp[i, :, r : r + 6, c : c + 7])
    assert torch.equal(out[3], x[3])  # offset (pad, pad) is the identity
    assert torch.equal(crop_kernel(x, shift, 0), x)


def test_flip_and_cutout_kernels():
    x = _images()
    flip = torch.tensor([True, False, True, False, False])
    out = flip_kernel(x, flip)
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])
    centre = torch.tensor([[0, 0], [3, 3], [5, 6], [2, 4], [3, 0]])
    cut = cutout_kernel(x, centre, 2)
    for i, (r, c) in enumerate(centre.tolist()):
        mask = torch.zeros(6, 7, dtype=torch.bool)
        mask[max(r - 1, 0) : r + 1, max(c - 1, 0) : c + 1] = True
        assert torch.equal(cut[i], x[i].masked_fill(mask, 0.0))


def test_draws_keyed_by_sample_id_not_batch_position():
    aug = Augment("crop-flip", height=8)
    x = torch.rand(6, 1, 8, 8)
    ids = torch.tensor([10, 11, 12, 13, 14, 15])
    full = aug(x, ids, seed=3, epoch=1)
    perm = torch.tensor([5, 2, 0, 4, 1, 3])
    assert torch.equal(aug(x[perm], ids[perm], seed=3, epoch=1), full[perm])
    assert torch.equal(aug(x[:2], ids[:2], seed=3, epoch=1), full[:2])
    assert not torch.equal(aug(x, ids, seed=3, epoch=2), full)  # a new epoch draws anew
    assert not torch.equal(aug(x, ids, seed=4, epoch=1), full)


def test_draws_cover_the_declared_ranges():
    aug = Augment("crop-flip", height=32)
    p = aug.make_params(torch.arange(4000), seed=0, epoch=0, width=32)
    assert p["shift"].min() == 0 and p["shift"].max() == 8  # pad 4: offsets 0..8
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.05


def test_defaults_and_pad():
    assert default_augment("cifar10") == default_augment("cifar100") == default_augment("imagefolder") == "crop-flip"
    assert default_augment("digits") == default_augment("synthetic") == "none"
    assert (default_pad(32), default_pad(8), default_pad(224)) == (4, 1, 28)
    assert Augment("crop", height=8, pad=2).record() == {"name": "crop", "pad": 2}
    assert set(PIPELINES) >= {"none", "crop", "crop-flip"}


@pytest.mark.parametrize(
    "kwargs",
    [{"augment": "crop_flip"}, {"augment": 3}, {"augment": "crop", "augment_pad": -1}, {"augment_pad": 1.5}],
)
def test_bad_values_are_one_line_usage_errors(kwargs):
    with pytest.raises(UsageError) as e:
        TrainConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_nesterov_off_by_default():
    assert TrainConfig().nesterov is False


def _digits():
    return load_dataset("synthetic:channels=1,size=8,n=192,split=train")


def _cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 64, "eval_samples": 0, "progress": False, "device": "cpu", **kw})


def test_sidecar_records_the_resolved_augmentation(tmp_path):
    res = train_model("ce", "mlp", _digits(), None, config=_cfg(augment="crop", augment_pad=2), out=tmp_path / "m")
    tc = res.meta.train_config
    assert tc["augment"] == "crop" and tc["augmentation"] == {"name": "crop", "pad": 2}
    assert tc["nesterov"] is False and tc["score_to_prob"] == "softmax"
    res = train_model("ce", "mlp", _digits(), None, config=_cfg(epochs=1))
    assert res.meta.train_config["augment"] == "none"  # synthetic/digits default


def test_augmentation_reaches_the_objective_before_its_own():
    """The objective receives the augmented batch (so mixup/MaxUp/MMEL compose after it)."""
    seen: list[torch.Tensor] = []
    obj = OBJECTIVES.create("mixup")
    orig = obj.loss

    def spy(model, x, y, state):
        seen.append(x.clone())
        return orig(model, x, y, state)

    obj.loss = spy  # type: ignore[method-assign]
    data = _digits()
    train_model(obj, "mlp", data, None, config=_cfg(epochs=1, batch_size=192, augment="crop-flip"))
    perm = torch.randperm(192, generator=torch_generator(0, "perm", 0))
    expect = Augment("crop-flip", 8)(data.x[perm], data.ids[perm], 0, 0)
    assert torch.equal(seen[0], expect)


def test_resume_with_augmentation_is_bit_identical(tmp_path, monkeypatch):
    """Killed after the first epoch (in process), the resumed run ends with the uninterrupted weights."""
    import defenses.trainer as trainer_mod

    data = _digits()
    cfg = _cfg(epochs=3, augment="crop-flip")
    ref = train_model("ce", "mlp", data, None, config=cfg, out=tmp_path / "ref")

    class Killed(Exception):
        pass

    def kill(point):
        if point == "train:epoch":
            raise Killed

    monkeypatch.setattr(trainer_mod, "kill_point", kill)
    torch.manual_seed(123)  # a different global RNG state must not matter
    with pytest.raises(Killed):
        train_model("ce", "mlp", data, None, config=cfg, out=tmp_path / "m")
    monkeypatch.setattr(trainer_mod, "kill_point", lambda point: None)
    res = train_model("ce", "mlp", data, None, config=cfg, out=tmp_path / "m")
    for a, b in zip(ref.model.state_dict().values(), res.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["loss"] for r in res.log] == [r["loss"] for r in ref.log]


def test_trainer_default_follows_the_dataset_name():
    data = load_dataset("synthetic:channels=3,size=32,n=8,split=train")
    data.name = "cifar10"
    t = Trainer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 10)), OBJECTIVES.create("ce"), data)
    assert t.cfg.augment == "crop-flip" and t.augment.record() == {"name": "crop-flip", "pad": 4}
