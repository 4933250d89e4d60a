"""A small evaluation with a gallery: a closed-form linear digits model and a suite with every entry kind."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from harness.api import load_dataset
from harness.engine import EvalConfig, Evaluation
from harness.results import Result
from harness.suites import Suite

EPS = 0.1
SUITE = Suite(
    "gallery-test",
    attacks=[
        {"name": "fgsm", "norm": "linf", "eps": EPS},
        {"name": "pgd", "norm": "linf", "eps": EPS, "params": {"steps": 5, "restarts": 1}},
        {"name": "pgd", "norm": "l2", "eps": 0.5, "params": {"steps": 5, "restarts": 1}},
    ],
    corruptions=[{"name": "gaussian_noise", "severity": [1, 2, 3, 4, 5]}, {"name": "contrast", "severity": [1, 5]}],
    smoothing=[{"name": "smoothing-l2", "params": {"sigma": 0.25, "n0": 4, "n": 16, "radii": [0.0]}}],
)
N, CHUNK = 40, 16


@functools.cache
def linear_model() -> torch.nn.Module:
    """A linear digits classifier fitted in closed form (ridge regression on one-hot targets, ~95 % clean)."""
    ds = load_dataset("digits:split=train")
    x, y = ds.batch(slice(0, len(ds)))
    X = torch.cat([x.flatten(1).double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    Y = torch.nn.functional.one_hot(y, 10).double()
    W = torch.linalg.solve(X.T @ X + 1e-2 * torch.eye(X.shape[1], dtype=torch.float64), X.T @ Y).float()
    lin = torch.nn.Linear(X.shape[1] - 1, 10)
    with torch.no_grad():
        lin.weight.copy_(W[:-1].T)
        lin.bias.copy_(W[-1])
    return torch.nn.Sequential(torch.nn.Flatten(), lin).eval()


def evaluate_digits(out: Path, name: str, batch_size: int, **config) -> Result:
    """`SUITE` on the first `N` digits test images in chunks of `CHUNK`, into ``out/name``."""
    ds = load_dataset("digits").subset(slice(0, N))
    cfg = EvalConfig(batch_size=batch_size, chunk_size=CHUNK, progress=False, device="cpu", **config)
    return Evaluation(linear_model(), ds, SUITE, out=out, name=name, config=cfg).run()
