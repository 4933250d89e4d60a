import json

import pytest
import torch

from harness.api import load_dataset
from harness.errors import CheckpointError, UsageError
from harness.models import CheckpointMeta, create_model, load_checkpoint, save_checkpoint
from harness.registry import MODELS

# Input shape and small settings per architecture; a newly registered one is tested on 8x8 digits-like input.
SETTINGS = {
    "preact-resnet18": ({}, (3, 32, 32)),
    "wrn": ({"depth": 10, "widen": 1}, (3, 32, 32)),
}


@pytest.mark.parametrize("arch", MODELS.names())
def test_architectures_map_images_to_logits(arch):
    kwargs, shape = SETTINGS.get(arch, ({}, (1, 8, 8)))
    m = create_model(arch, num_classes=7, in_channels=shape[0], input_size=shape[1], **kwargs).eval()
    x = torch.rand(3, *shape)
    with torch.no_grad():
        z = m(x)
        f, z2 = m.features_and_logits(x)
    assert z.shape == (3, 7) and torch.allclose(z, z2)
    assert f.shape[0] == 3


def test_wrn_shapes_and_depth_validation():
    m = create_model("wrn", depth=28, widen=10)
    n = sum(p.numel() for p in m.parameters())
    assert 36_000_000 < n < 37_000_000  # WRN-28-10 has ~36.5M parameters
    with pytest.raises(UsageError, match="6n\\+4"):
        create_model("wrn", depth=27)


def test_normalisation_lives_inside_the_model():
    m = create_model("mlp", num_classes=2, in_channels=1, input_size=2, mean=[0.5], std=[0.25])
    x = torch.full((1, 1, 2, 2), 0.75)
    assert torch.allclose(m.normalize(x), torch.ones_like(x))


def _meta(m, **kw):
    return CheckpointMeta("cnn", {"num_classes": 10, "in_channels": 1, "input_size": 8}, "digits", 10, [1, 8, 8], **kw)


def test_checkpoint_round_trip_rebuilds_from_sidecar_alone(tmp_path):
    m = create_model("cnn", load_dataset("digits")).eval()
    save_checkpoint(tmp_path / "m", m, _meta(m, objective="ce", seed=3, clean_accuracy=0.9))
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["architecture"] == "cnn" and side["objective"] == "ce" and side["harness_version"]
    m2, meta = load_checkpoint(tmp_path / "m.safetensors")
    assert not m2.training and meta.seed == 3
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_bit_flipped_weights_are_refused(tmp_path):
    m = create_model("mlp", num_classes=10, in_channels=1, input_size=8)
    save_checkpoint(tmp_path / "m", m, CheckpointMeta("mlp", {}, "digits", 10, [1, 8, 8]))
    raw = bytearray((tmp_path / "m.safetensors").read_bytes())
    raw[-5] ^= 0x01
    (tmp_path / "m.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(tmp_path / "m")


def test_truncated_weights_without_hash_are_refused(tmp_path):
    m = create_model("mlp", num_classes=10, in_channels=1, input_size=8)
    save_checkpoint(tmp_path / "m", m, CheckpointMeta("mlp", {}, "digits", 10, [1, 8, 8]))
    side = json.loads((tmp_path / "m.json").read_text())
    side["weights_sha256"] = ""
    (tmp_path / "m.json").write_text(json.dumps(side))
    raw = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path / "m")


def test_sidecar_unknown_field_wrong_schema_and_missing(tmp_path):
    m = create_model("mlp", num_classes=10, in_channels=1, input_size=8)
    save_checkpoint(tmp_path / "m", m, CheckpointMeta("mlp", {}, "digits", 10, [1, 8, 8]))
    side = json.loads((tmp_path / "m.json").read_text())
    (tmp_path / "m.json").write_text(json.dumps({**side, "exec": "rm -rf /"}))
    with pytest.raises(CheckpointError, match="unknown fields"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.json").write_text(json.dumps({**side, "schema_version": 99}))
    with pytest.raises(CheckpointError, match="schema_version"):
        load_checkpoint(tmp_path / "m")
    (tmp_path / "m.json").unlink()
    with pytest.raises(CheckpointError, match="sidecar"):
        load_checkpoint(tmp_path / "m")


def test_weights_not_fitting_architecture_name_the_tensors(tmp_path):
    small = create_model("mlp", num_classes=10, in_channels=1, input_size=8, hidden=[32])
    save_checkpoint(tmp_path / "m", small, CheckpointMeta("mlp", {"hidden": [64]}, "digits", 10, [1, 8, 8]))
    with pytest.raises(CheckpointError, match=r"trunk\.1\.weight"):
        load_checkpoint(tmp_path / "m")
