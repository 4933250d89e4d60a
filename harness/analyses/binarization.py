"""The attack unit test (binarization test of Zimmermann et al., NeurIPS 2022): can the suite find
an adversarial example that provably exists?

For each sample x and threat model (norm, eps) the user's model is turned into a 3-way classifier
by a new linear readout on its features phi (``model.features`` when the model has it, else its
logits): with f_bar the mean feature of x and of ``inner_points`` random points inside the ball,
and x_hat a random corner of the ball (L-inf) or a random point on its sphere (L2), clipped to
[0, 1], the score s(z) = (phi(z) - f_bar) . w / |w|^2 with w = phi(x_hat) - f_bar is 1 at x_hat.
The readout's logits are [0, a (s - theta), -a |s - theta| - 1] with theta halfway between the
largest inner score and 1, label 0. A sample is kept only when the readout classifies x as 0 and
x_hat as 1, both checked by a forward pass; then x_hat is an adversarial example inside the ball,
so an attack that misses it is too weak for this model's feature map (a third, never-winning
class keeps losses that need three logits, such as DLR, defined).

Every attack of the suite's threat model is run on each kept sample (one sample at a time, since
each has its own readout); the fraction found is reported, and under ``threshold`` (95 %) the
suite is called too weak for that model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from harness.analyses.base import Analysis, AnalysisOutput, RunView, register_analysis
from harness.data.base import ImageDataset
from harness.results import Finding
from harness.rng import keyed_normal, keyed_uniform, stream_seed
from harness.suites import Suite, load_suite
from harness.threat import ThreatModel, clip_box, enforce_contract, lp_norm, per_sample, project

THRESHOLD = 0.95
READOUT_MARGIN = 5.0  # logit margin of x_hat under the readout


@dataclass
class ThreatUnitTest:
    """Outcome for one threat model."""

    key: str
    valid: int
    found: int
    skipped: int
    attacks: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.found / self.valid if self.valid else 0.0


@dataclass
class UnitTestResult:
    """Per-threat-model fractions of planted adversarial examples found, and the verdict."""

    threats: list[ThreatUnitTest]
    threshold: float = THRESHOLD

    def too_weak(self) -> list[ThreatUnitTest]:
        return [t for t in self.threats if t.fraction < self.threshold]

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "threats": [
                {**asdict(t), "fraction": t.fraction, "too_weak": t.fraction < self.threshold} for t in self.threats
            ],
        }

    def findings(self) -> list[Finding]:
        out = []
        for t in self.threats:
            msg = (
                f"attack unit test at {t.key}: the suite ({', '.join(t.attacks)}) found the planted adversarial "
                f"example on {t.found} of {t.valid} samples ({100 * t.fraction:.1f}%)"
            )
            if t.valid == 0:
                out.append(
                    Finding("attack-unit-test", "warning", msg + ": no valid readout could be built", related=t.key)
                )
            elif t.fraction < self.threshold:
                out.append(
                    Finding(
                        "attack-unit-test",
                        "error",
                        msg + f", under {100 * self.threshold:.0f}%: the suite is too weak for this model; "
                        "its robust accuracies are upper bounds at best",
                        related=t.key,
                        data={"fraction": t.fraction, "valid": t.valid},
                    )
                )
            else:
                out.append(Finding("attack-unit-test", "info", msg + ": passed", related=t.key))
        return out


class _Readout(nn.Module):
    """The user's feature map followed by the per-sample binarizing readout."""

    def __init__(self, features: Callable[[Tensor], Tensor], f_bar: Tensor, w: Tensor, theta: float, scale: float):
        super().__init__()
        self.features, self.f_bar, self.w, self.theta, self.scale = features, f_bar, w, theta, scale

    def score(self, x: Tensor) -> Tensor:
        return (self.features(x).flatten(1) - self.f_bar) @ self.w / (self.w @ self.w)

    def forward(self, x: Tensor) -> Tensor:
        d = self.scale * (self.score(x) - self.theta)
        return torch.stack([torch.zeros_like(d), d, -d.abs() - 1], 1)


def _feature_fn(model: nn.Module) -> Callable[[Tensor], Tensor]:
    f = getattr(model, "features", None)
    return f if callable(f) else model


def _ball_points(x: Tensor, threat: ThreatModel, seed: int, idx: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """x_hat (a corner / sphere point) and k inner points, all keyed by the sample id, clipped to [0, 1]."""
    shape = tuple(x.shape[1:])
    ids = idx.repeat(k)
    if threat.norm == "linf":
        corner = torch.sign(keyed_uniform(stream_seed(seed, "hat"), idx, shape, x.dtype).to(x.device) - 0.5)
        hat = x + threat.eps * corner
        inner = (2 * keyed_uniform(stream_seed(seed, "inner"), ids, shape, x.dtype).to(x.device) - 1) * threat.eps
    else:
        v = keyed_normal(stream_seed(seed, "hat"), idx, shape, x.dtype).to(x.device)
        hat = x + threat.eps * v / per_sample(lp_norm(v, "l2"), x)
        u = keyed_normal(stream_seed(seed, "inner"), ids, shape, x.dtype).to(x.device)
        r = per_sample(keyed_uniform(stream_seed(seed, "radius"), ids, (1,), x.dtype).to(x.device), x)
        inner = threat.eps * r * u / per_sample(lp_norm(u, "l2"), x)
    xk = x.expand(k, *shape)
    return x + clip_box(x, project(hat - x, threat.norm, threat.eps)), xk + clip_box(
        xk, project(inner, threat.norm, threat.eps)
    )


def _majority(model: nn.Module, x: Tensor, draws: int) -> Tensor:
    with torch.no_grad():
        preds = torch.stack([model(x).argmax(1) for _ in range(draws)])
    return preds.mode(0).values


def attack_unit_test(
    model: nn.Module,
    dataset: ImageDataset,
    suite: str | Suite = "quick",
    *,
    n_samples: int = 32,
    inner_points: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    eot_samples: int = 1,
    threshold: float = THRESHOLD,
) -> UnitTestResult:
    """Run the suite's attacks against readouts with a planted adversarial example; see the module doc."""
    model = model.eval()
    feats = _feature_fn(model)
    entries = [e for e in load_suite(suite).resolve(dataset.eps_grid) if e.kind == "attack"]
    n = min(n_samples, len(dataset))
    x_all, _ = dataset.batch(slice(0, n))
    x_all = x_all.to(device)
    ids_all = dataset.ids[:n].to(device)  # type: ignore[index]
    by_group: dict[str, list] = {}
    for e in entries:
        by_group.setdefault(e.group, []).append(e)
    out = []
    for key, group in by_group.items():
        threat = group[0].threat
        attackers = [e.build() for e in group]
        for a in attackers:
            if hasattr(a, "eot_samples"):
                a.eot_samples = eot_samples
        gseed = stream_seed(seed, "unit-test", key)
        valid = found = skipped = 0
        for i in range(n):
            x, idx = x_all[i : i + 1], ids_all[i : i + 1]
            hat, inner = _ball_points(x, threat, gseed, idx, inner_points)
            with torch.no_grad():
                f0 = feats(torch.cat([x, inner])).flatten(1)
                f_hat = feats(hat).flatten(1)[0]
                f_bar = f0.mean(0)
                w = f_hat - f_bar
                ok = bool(w.norm() > 0)
                if ok:
                    s_in = (f0 - f_bar) @ w / (w @ w)
                    top = float(s_in.max())
                    ok = top < 1.0
            if not ok:
                skipped += 1
                continue
            theta = (1.0 + top) / 2
            readout = _Readout(feats, f_bar, w, theta, READOUT_MARGIN / (1.0 - theta))
            # Validity is checked, not assumed: x is class 0 and x_hat (inside the ball) class 1.
            if int(_majority(readout, x, eot_samples)[0]) != 0 or int(_majority(readout, hat, eot_samples)[0]) != 1:
                skipped += 1
                continue
            valid += 1
            y0 = torch.zeros(1, dtype=torch.long, device=x.device)
            for e, a in zip(group, attackers):
                xa = a(readout, x, y0, index=idx, seed=stream_seed(gseed, e.key))
                enforce_contract(x, xa, threat, who=f"{e.key} (unit test)")
                if int(_majority(readout, xa, eot_samples)[0]) != 0:
                    found += 1
                    break
        out.append(ThreatUnitTest(key, valid, found, skipped, [e.key for e in group]))
    return UnitTestResult(out, threshold)


@register_analysis
class AttackUnitTest(Analysis):
    """``result.extra["unit_test"]`` and its findings, only with ``--checks full``."""

    name = "unit_test"
    order = 50

    def run(self, view: RunView) -> AnalysisOutput:
        if view.checks != "full":
            return AnalysisOutput()
        ut = attack_unit_test(
            view.model, view.dataset, view.suite, seed=view.seed, device=view.device, eot_samples=view.eot_samples
        )
        return AnalysisOutput(ut.to_dict(), tuple(ut.findings()))
