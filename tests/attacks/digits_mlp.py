"""A small MLP fitted to the digits training split in closed loop (Adam, 150 full-batch steps, seed 0),
and the first ``n`` test digits it classifies correctly: the model of the CW and min-norm oracles."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.api import load_dataset
from harness.models import create_model


def digits_mlp(n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """(model in eval mode, test images, labels) for the correctly classified ones of the first ``n``."""
    torch.manual_seed(0)
    ds = load_dataset("digits:split=train")
    x, y = ds.batch(slice(0, len(ds)))
    model = create_model("mlp", ds, hidden=(64,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = load_dataset("digits").batch(slice(0, n))
    ok = model(xt).argmax(1) == yt
    return model, xt[ok], yt[ok]
