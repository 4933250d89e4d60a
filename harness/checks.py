"""Sanity checks run with every evaluation (the evaluation checklist, items 1-7; docs/checks.md).

`precheck` runs on the first batch before any attack: fatal contract breaks (wrong logit shape,
non-finite logits) raise `ModelError`; suspicious properties become findings. With ``full=True`` it
also runs an unbounded attack (L-inf eps = 1) that any working gradient attack wins. `postcheck`
runs on the aggregated result, using the per-entry counts the engine records (``broken_first``:
samples an entry broke that no earlier entry of its threat model had broken). Findings are
reported next to the numbers they cast doubt on.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import ModelError
from harness.logits import margin
from harness.results import Finding, GroupResult, Result

SATURATION_PROB = 1 - 1e-6
EOT_AUTO_SAMPLES = 10
# Unbounded check: L-inf eps 1 reaches every image, so a working attack ends at 0 % accuracy.
UNBOUNDED_EPS = 1.0
UNBOUNDED_STEPS = 50
UNBOUNDED_SAMPLES = 64
# "Very large" budgets for the postcheck: half the pixel range (L-inf), half the cube's diagonal (L2).
LARGE_LINF_EPS = 0.5
LARGE_L2_FRACTION = 0.5
# Black-box beats white-box: at least this many samples and this fraction of all.
BLACK_BOX_MIN = 2
BLACK_BOX_FRACTION = 0.005
# Masking gap: stronger attacks break > MASKING_REL of CE-PGD's survivors and >= MASKING_ABS of all.
MASKING_REL = 0.10
MASKING_ABS = 0.03
STRONG_LOSSES = ("margin", "cw", "dlr")
STRONG_PREFIXES = ("apgd", "autoattack", "cw-", "fab")
# The findings `precheck` can raise: what a suite entry's ``when`` may name.
PRECHECKS = ("train-mode", "stochastic", "probabilities", "gradients", "saturation", "unbounded")


def check_logits(logits: Tensor, n: int, num_classes: int) -> None:
    """The model contract on one batch: (N, K) finite logits for the dataset's K classes."""
    if logits.dim() != 2 or logits.shape[0] != n:
        raise ModelError(
            f"model returned shape {tuple(logits.shape)} for a batch of {n}",
            "the model must map (N, C, H, W) images to (N, K) logits",
        )
    if logits.shape[1] != num_classes:
        raise ModelError(
            f"model returns {logits.shape[1]} logits but the dataset has {num_classes} classes",
            "evaluate on the dataset the model was trained for, or fix num_classes",
        )
    if not logits.is_floating_point():  # integer logits carry no gradient and tie under argmax
        raise ModelError(
            f"model returned {str(logits.dtype).removeprefix('torch.')} logits; logits must be floating point",
            "return the raw float scores of the last layer (e.g. without .long() or .round().int())",
        )
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(1).sum())
        raise ModelError(
            f"model returned NaN or Inf logits for {bad} of {n} clean images",
            "check the weights (NaN after training?) and the input scaling ([0, 1])",
        )


def _majority_correct(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> Tensor:
    with torch.no_grad():
        return torch.stack([model(x).argmax(1) == y for _ in range(draws)]).float().mean(0) >= 0.5


def unbounded_check(model: nn.Module, x: Tensor, y: Tensor, num_classes: int, eot_samples: int = 1) -> Finding | None:
    """PGD (margin loss, start at x) with L-inf eps = 1 on up to 64 correct samples: must reach < chance."""
    from attacks.pgd import PGD  # attacks sits above harness; imported lazily

    ok = _majority_correct(model, x, y, eot_samples)
    x, y = x[ok][:UNBOUNDED_SAMPLES], y[ok][:UNBOUNDED_SAMPLES]
    if len(x) == 0:
        return None
    attack = PGD("linf", UNBOUNDED_EPS, steps=UNBOUNDED_STEPS, loss="margin", random_start=False)
    attack.eot_samples = eot_samples
    xa = attack(model, x, y, index=torch.arange(len(x), device=x.device), seed=0)
    acc = float(_majority_correct(model, xa, y, eot_samples).float().mean())
    chance = 1.0 / num_classes
    if acc <= chance:
        return None
    return Finding(
        "unbounded",
        "error",
        f"PGD-{UNBOUNDED_STEPS} (margin loss) with L-inf eps = 1, which can reach any image, leaves "
        f"{100 * acc:.1f}% of {len(x)} samples correct (chance {100 * chance:.1f}%): gradients are masked or "
        "the model is not differentiable; robust accuracies from gradient attacks are not trustworthy",
        data={"accuracy": acc, "n": len(x), "chance": chance},
    )


def precheck(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    num_classes: int,
    was_training: bool,
    *,
    full: bool = False,
    eot_samples: int | None = None,
) -> list[Finding]:
    """Checks on the first batch; ``full`` adds the unbounded-eps attack (a few dozen PGD steps)."""
    out: list[Finding] = []
    if was_training:
        out.append(
            Finding(
                "train-mode",
                "warning",
                "model was passed in train mode (BatchNorm/Dropout active); it was evaluated in eval mode",
            )
        )
    with torch.no_grad():
        z1 = model(x)
        check_logits(z1, len(x), num_classes)
        z2 = model(x)
    if not torch.equal(z1, z2):
        diff = float((z1 - z2).abs().max())
        flips = float((z1.argmax(1) != z2.argmax(1)).float().mean())
        out.append(
            Finding(
                "stochastic",
                "error",
                f"two forward passes on the same inputs differ (max |dlogit| {diff:.3g}, "
                f"{100 * flips:.1f}% predictions flip): "
                "the model is randomised, so gradient attacks need expectation over transformation (EOT); "
                f"the evaluation uses EOT with {eot_samples or EOT_AUTO_SAMPLES} draws (EvalConfig.eot_samples)",
                data={"max_logit_diff": diff, "flip_rate": flips},
            )
        )
    rows = z1.sum(1)
    if (z1 >= 0).all() and (z1 <= 1).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        out.append(
            Finding(
                "probabilities",
                "error",
                "the model outputs probabilities (rows in [0, 1] summing to 1), not logits: CE-based "
                "attacks are weakened; remove the final softmax",
            )
        )
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = model(xg)
        (g,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), xg, retain_graph=True)
        # Zero gradients are judged on the logit margin: a saturated softmax zeroes CE gradients
        # (the saturation finding), while a flat margin means a non-differentiable model.
        (gm,) = torch.autograd.grad(margin(z, y).sum(), xg)
    nonfinite = float((~torch.isfinite(g)).flatten(1).any(1).float().mean())
    zero = float((gm.flatten(1).abs().amax(1) == 0).float().mean())
    if nonfinite > 0:
        out.append(
            Finding(
                "gradients",
                "error",
                f"{100 * nonfinite:.1f}% of samples have non-finite input gradients",
                data={"nonfinite_fraction": nonfinite},
            )
        )
    if zero > 0.05:
        out.append(
            Finding(
                "gradients",
                "warning",
                f"{100 * zero:.1f}% of samples have exactly zero input gradient of the logit margin (masked "
                "gradients or a non-differentiable layer): gradient attacks cannot move them; run black-box attacks",
                data={"zero_fraction": zero},
            )
        )
    p = F.softmax(z1.double(), 1).amax(1)
    sat = float((p > SATURATION_PROB).float().mean())
    if sat > 0.5:
        out.append(
            Finding(
                "saturation",
                "warning",
                f"softmax is saturated on {100 * sat:.0f}% of samples (max prob > 1-1e-6): CE gradients "
                "vanish; trust margin/DLR-loss attacks over CE ones",
                data={"saturated_fraction": sat},
            )
        )
    if full:
        stochastic = any(f.check == "stochastic" for f in out)
        f = unbounded_check(model, x, y, num_classes, eot_samples or (EOT_AUTO_SAMPLES if stochastic else 1))
        if f is not None:
            out.append(f)
    return out


def _is_ce_pgd(e: dict[str, Any]) -> bool:
    cfg = e.get("config", {})
    return (
        e.get("name") in ("pgd", "fgsm")
        and cfg.get("loss", "ce") == "ce"
        and float(cfg.get("logit_scale", 1.0)) == 1.0
        and not e.get("black_box", False)
    )


def _is_strong(e: dict[str, Any]) -> bool:
    """White-box attacks that see through softmax saturation: margin/DLR losses, logit scaling, APGD, ..."""
    if e.get("black_box", False):
        return False
    cfg = e.get("config", {})
    name = str(e.get("name", ""))
    return (
        name.startswith(STRONG_PREFIXES)
        or cfg.get("loss") in STRONG_LOSSES
        or float(cfg.get("logit_scale", 1.0)) != 1.0
    )


def _black_box_findings(g: GroupResult, n: int) -> list[Finding]:
    out = []
    for i, e in enumerate(g.entries):
        if not e.get("black_box") or "broken_first" not in e:
            continue
        white = [p["key"] for p in g.entries[:i] if not p.get("black_box")]
        k = int(e["broken_first"])
        if white and k >= max(BLACK_BOX_MIN, math.ceil(BLACK_BOX_FRACTION * n)):
            out.append(
                Finding(
                    "black-box-beats-white-box",
                    "warning",
                    f"the black-box attack {e['key']} broke {k} samples ({100 * k / n:.1f}% of {n}) that the "
                    f"white-box attacks ({', '.join(white)}) left robust: gradients are masked or obfuscated, "
                    "so white-box results overestimate robustness",
                    related=g.key,
                    data={"broken_only_by_black_box": k, "n": n, "entry": e["key"]},
                )
            )
    return out


def _masking_findings(g: GroupResult, n: int) -> list[Finding]:
    ents = g.entries
    strong_idx = [i for i, e in enumerate(ents) if _is_strong(e) and "broken_first" in e]
    base_idx = [i for i, e in enumerate(ents) if _is_ce_pgd(e) and strong_idx and i < strong_idx[-1]]
    if not base_idx or not n:
        return []
    j = base_idx[-1]
    survivors = int(ents[j]["cumulative"]["correct"])
    later = [i for i in strong_idx if i > j]
    broken = sum(int(ents[i]["broken_first"]) for i in later)
    if survivors == 0 or broken / survivors <= MASKING_REL or broken / n < MASKING_ABS:
        return []
    names = ", ".join(ents[i]["key"] for i in later)
    return [
        Finding(
            "masking",
            "warning",
            f"CE-PGD ({ents[j]['key']}) left {100 * survivors / n:.1f}% robust; the stronger attacks ({names}) "
            f"then broke {broken} more ({100 * broken / n:.1f} points, {100 * broken / survivors:.0f}% of the CE "
            "survivors): CE gradients are masked (e.g. saturated softmax); report the lower number and "
            "use margin/DLR-loss, logit-scaled or AutoAttack evaluations",
            related=g.key,
            data={
                "ce_pgd_robust": survivors / n,
                "broken_by_stronger": broken,
                "fraction_of_survivors": broken / survivors,
                "n": n,
            },
        )
    ]


def _large_eps_findings(result: Result) -> list[Finding]:
    K = int(result.dataset.get("num_classes") or 0)
    shape = result.dataset.get("shape") or []
    if K < 2:
        return []
    chance = 1.0 / K
    diag = math.sqrt(math.prod(shape)) if shape else math.inf
    out = []
    for g in result.threat_models:
        eps = float(g.eps or 0.0)
        large = (g.norm == "linf" and eps >= LARGE_LINF_EPS) or (g.norm == "l2" and eps >= LARGE_L2_FRACTION * diag)
        if large and g.accuracy.accuracy > chance:
            out.append(
                Finding(
                    "large-eps",
                    "error",
                    f"at {g.norm} eps={eps:g}, a budget that can turn most images into any other, robust accuracy is "
                    f"{g.accuracy.pct()}%, above chance ({100 * chance:.1f}%): the attacks are failing "
                    "(masked gradients or a broken attack)",
                    related=g.key,
                    data={"accuracy": g.accuracy.accuracy, "chance": chance},
                )
            )
    return out


def postcheck(result: Result) -> list[Finding]:
    """Checks on the aggregated result (see the module docstring and docs/checks.md)."""
    out: list[Finding] = []
    clean = result.clean
    by_norm: dict[str, list] = {}
    for g in result.threat_models:
        if g.accuracy.correct > clean.correct:
            out.append(
                Finding(
                    "robust-above-clean",
                    "error",
                    f"robust accuracy {g.accuracy.pct()}% exceeds clean {clean.pct()}%",
                    related=g.key,
                )
            )
        by_norm.setdefault(g.norm or "", []).append(g)
    for norm, gs in by_norm.items():
        gs.sort(key=lambda g: g.eps)
        for a, b in zip(gs, gs[1:]):
            if b.accuracy.correct > a.accuracy.correct:
                out.append(
                    Finding(
                        "eps-monotonic",
                        "warning",
                        f"{norm} robust accuracy rises from {a.accuracy.pct()}% at eps={a.eps:g} "
                        f"to {b.accuracy.pct()}% "
                        f"at eps={b.eps:g}: the attack is failing at the larger eps",
                        related=b.key,
                    )
                )
    for g in result.threat_models:
        out += _black_box_findings(g, clean.n)
        out += _masking_findings(g, clean.n)
    out += _large_eps_findings(result)
    return out
