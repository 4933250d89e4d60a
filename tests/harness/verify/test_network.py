"""The network reader: every built-in architecture and the functional spellings are read exactly;
anything else is an error that names the layer and the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import ModelError
from harness.models import create_model
from harness.registry import VERIFIERS
from harness.verify import read_network
from harness.verify.ops import AddOp, ChannelAffine, ConvOp, MaxPoolOp, ReLUOp


@pytest.mark.parametrize(
    "arch, args",
    [
        ("mlp", {}),
        ("cnn", {}),
        ("preact-resnet18", {"in_channels": 1, "input_size": 8}),
        ("wrn", {"in_channels": 1, "input_size": 8, "depth": 10, "widen": 1}),
    ],
)
def test_builtin_architectures_are_read_exactly(arch, args):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, **({"in_channels": 1, "input_size": 8} | args)).eval()
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(3, 1, 8, 8)
    net = read_network(model, x)  # raises if the read graph disagrees with the model
    assert torch.allclose(net.forward(x).float(), model(x), atol=1e-4)
    kinds = {type(n.op) for n in net.nodes}
    assert ChannelAffine in kinds  # the normalisation wrapper
    if arch in ("preact-resnet18", "wrn"):
        assert AddOp in kinds and ConvOp in kinds
    if arch == "cnn":
        assert MaxPoolOp in kinds
    # IBP bounds hold at random points of a small ball
    eps = 0.01
    b = VERIFIERS.create("ibp", eps=eps).bounds(model, x, model(x).argmax(1))
    pts = (x + (torch.rand(16, *x.shape) * 2 - 1) * eps).clamp(0, 1)
    y = model(x).argmax(1)
    with torch.no_grad():
        for p in pts:
            z = model(p).double()
            m = z.gather(1, y[:, None]) - z
            assert (m >= b.lower - 1e-4).all() and (m <= b.upper + 1e-4).all()


class Functional(nn.Module):
    """Functional spellings the reader must map: F.relu, torch.flatten, view(size(0), -1), +=, torch.add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding="same")
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.conv(x))
        r = self.conv2(h).relu()
        r += h
        h = torch.add(self.bn(r), h)
        h = F.avg_pool2d(h, 2)
        h = self.drop(h.view(h.size(0), -1))
        return self.fc(torch.flatten(h, 1))


def test_functional_spellings_are_read():
    model = Functional().eval()
    x = torch.rand(2, 1, 8, 8)
    net = read_network(model, x)
    assert sum(isinstance(n.op, AddOp) for n in net.nodes) == 2
    assert sum(isinstance(n.op, ReLUOp) for n in net.nodes) == 2
    assert torch.allclose(net.forward(x).float(), model(x), atol=1e-5)


@pytest.mark.parametrize(
    "model, match",
    [
        (
            nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3)),
            r"'2' \(Tanh\(\)\) of model Sequential",
        ),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(3, padding=1), nn.Flatten(), nn.LazyLinear(3)), "padding"),
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Sigmoid(), nn.Linear(8, 3)), "Sigmoid"),
    ],
)
def test_unsupported_layers_are_named(model, match):
    x = torch.rand(2, 1, 8, 8)
    model(x)  # materialise lazy layers
    with pytest.raises(ModelError, match=match):
        read_network(model.eval(), x)


def test_train_mode_batch_norm_and_control_flow_are_refused():
    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 3)).train()
    with pytest.raises(ModelError, match=r"'1' .*BatchNorm2d.*eval"):
        read_network(bn, torch.rand(2, 1, 8, 8))

    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 3)

        def forward(self, x):
            return self.fc(x.flatten(1)) if x.sum() > 0 else -self.fc(x.flatten(1))

    with pytest.raises(ModelError, match="static graph"):
        read_network(Branchy(), torch.rand(2, 1, 8, 8))


def test_a_model_that_differs_from_its_graph_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    model[1].register_forward_hook(lambda mod, inp, out: out * 2)
    with pytest.raises(ModelError, match="disagrees"):
        read_network(model, torch.rand(2, 1, 8, 8))
