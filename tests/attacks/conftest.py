"""Shared fixtures for attack tests: a small CNN trained on digits (once per session)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def digits_cnn():
    from harness import api

    torch.manual_seed(0)
    res = api.train("ce", "cnn", "digits", epochs=8, progress=False, device="cpu", seed=0)
    return res.model.eval()
