"""Builders for report tests: Results constructed directly, and tiny real runs through the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.results import Accuracy, Finding, GroupResult, Result

CORRUPTIONS = ("gaussian_noise", "contrast", "brightness")


def attack_group(norm: str, eps: float, correct: int, n: int, per_class=None) -> GroupResult:
    key = f"{norm}-{eps:.6g}"
    entries = [
        {
            "key": f"pgd@{key}",
            "kind": "attack",
            "name": "pgd",
            "params": {},
            "norm": norm,
            "eps": eps,
            "group": key,
            "cumulative": {
                "correct": correct,
                "n": n,
                "accuracy": correct / n,
                "ci95": list(Accuracy.of(correct, n).ci95),
            },
            "seconds": 0.5,
        }
    ]
    return GroupResult(key, "attack", Accuracy.of(correct, n), norm, eps, entries=entries, per_class=per_class or [])


def corruption_group(name: str, sev: int, correct: int, n: int, per_class=None) -> GroupResult:
    return GroupResult(
        f"{name}-{sev}", "corruption", Accuracy.of(correct, n), corruption=name, severity=sev, per_class=per_class or []
    )


def make_result(
    name: str,
    clean: int,
    robust: dict[float, int],
    *,
    n: int = 200,
    objective: str = "ce",
    condition: dict | None = None,
    corruption_base: int | None = None,
    findings: list[Finding] | None = None,
    dataset_sha: str = "d" * 64,
    classes: int = 4,
) -> Result:
    """A Result with L-inf groups at the given eps (correct counts), optional corruptions and findings."""
    rng = np.random.default_rng(len(name) + clean)
    pc = lambda acc: list(np.clip(acc + rng.normal(0, 0.05, classes), 0, 1))
    groups = [attack_group("linf", e, c, n, pc(c / n)) for e, c in sorted(robust.items())]
    if corruption_base is not None:
        for i, cname in enumerate(CORRUPTIONS):
            for s in range(1, 6):
                c = max(0, corruption_base - 12 * s - 9 * i)
                groups.append(corruption_group(cname, s, c, n, pc(c / n)))
    return Result(
        name=name,
        model={
            "name": name,
            "objective": objective,
            "condition": condition or {},
            "architecture": "cnn",
            "sha256_state": "a" * 64,
            "seed": 0,
        },
        dataset={
            "name": "synthetic",
            "split": "test",
            "n": n,
            "num_classes": classes,
            "shape": [1, 8, 8],
            "sha256": dataset_sha,
        },
        suite={"name": "quick"},
        config={"seed": 0, "device": "cpu", "config_hash": "c" * 16},
        environment={"versions": {"python": "3.11", "torch": "2.x"}, "platform": "test-platform", "device": "cpu"},
        clean=Accuracy.of(clean, n),
        groups=groups,
        per_class_clean=pc(clean / n),
        findings=findings or [],
        extra={"class_counts": [n // classes] * classes},
    )


class TinyNet(torch.nn.Module):
    """A linear classifier on flattened images, fitted in a few steps (a real, quick model)."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(d, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def fit_tiny(ds, steps: int, seed: int) -> TinyNet:
    g = torch.Generator().manual_seed(seed)
    x, y = ds.batch(slice(0, len(ds)))
    m = TinyNet(x[0].numel(), ds.num_classes)
    with torch.no_grad():
        m.fc.weight.copy_(0.01 * torch.randn(m.fc.weight.shape, generator=g))
        m.fc.bias.zero_()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


def real_runs(root: Path) -> list[Path]:
    """Two real evaluations (64 digits test samples, quick suite) of two tiny models; returns run folders."""
    from harness.api import load_dataset
    from harness.engine import EvalConfig, evaluate

    torch.manual_seed(0)
    train = load_dataset("digits:split=train")
    test = load_dataset("digits")
    out = []
    for name, steps, obj in (("linear-long", 60, "ce"), ("linear-short", 8, "ce-short")):
        m = fit_tiny(train, steps, 0)
        evaluate(
            m,
            test,
            "quick",
            out=root,
            name=name,
            config=EvalConfig(max_samples=64, progress=False, batch_size=64, chunk_size=32),
            model_info={"name": name, "objective": obj, "condition": {"steps": steps}, "architecture": "linear"},
        )
        out.append(root / name)
    return out
