"""Small digits classifiers trained in seconds for the check / EOT / unit-test tests (cached per process)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from harness.api import load_dataset
from harness.models import create_model


def _train(adversarial: bool, hidden: tuple[int, ...], steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    ds = load_dataset("digits:split=train")
    x, y = ds.batch(slice(0, len(ds)))
    model = create_model("mlp", ds, hidden=hidden)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    attack = None
    if adversarial:
        from attacks.pgd import PGD

        attack = PGD("linf", 0.1, steps=5, step_size=0.03, keep="last")
    ids = torch.arange(len(x))
    for t in range(steps):
        xb = x
        if attack is not None:
            model.eval()
            xb = attack(model, x, y, index=ids, seed=t)
        model.train()
        loss = F.cross_entropy(model(xb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@functools.cache
def ce_model() -> nn.Module:
    """Full-batch Adam on the digits train split, CE (about 97 % clean test accuracy)."""
    return _train(False, (128,), 200, 0)


@functools.cache
def pgd_at_model() -> nn.Module:
    """PGD-AT (L-inf eps 0.1, 5 steps) full-batch, a quick adversarially trained model."""
    return _train(True, (128,), 150, 0)
