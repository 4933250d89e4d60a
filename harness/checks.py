"""Sanity checks run with every evaluation (the evaluation checklist, items 1-7; docs/checks.md).

`precheck` runs on the first batch before any attack: fatal contract breaks (wrong logit shape or
dtype, an exception, NaN/Inf logits on every clean image) raise `ModelError`; suspicious properties
become findings, among them a model that gives no usable input gradient (`gradient_probe`: the
obfuscated-gradients finding) and one whose logits depend on the rest of the batch. With
``full=True`` it also runs an unbounded attack (L-inf eps = 1) that any working gradient attack
wins. `postcheck`
runs on the aggregated result, using the per-entry counts the engine records (``broken_first``:
samples an entry broke that no earlier entry of its threat model had broken, and ``below_reference``:
budget parameters set below the attack's declared reference budget). Findings are reported next to
the numbers they cast doubt on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.batching import is_oom
from harness.capabilities import sees_through_saturation, softmax_ascent
from harness.errors import HarnessError, ModelError
from harness.guard import HINT, ModelGuard, first_line
from harness.logits import finite_rows, margin, misclassified
from harness.registry import ATTACKS
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
# Zero margin gradients on more than this fraction: the "gradients" warning.
ZERO_GRAD_FRACTION = 0.05
# Zero or non-finite margin gradients on more than this fraction (or none at all): obfuscated gradients.
OBFUSCATED_FRACTION = 0.5
# The gradient-free attack added at every threat model when gradients are obfuscated: Square at the
# budget of AutoAttack standard (Croce & Hein 2020).
AUTO_SQUARE_QUERIES = 5000
AUTO_SQUARE_P_INIT = 0.8
# Batch dependence: allowed |dlogit| between a sample in half the batch and in the full batch,
# relative to the largest |logit|. Kernels differ by batch size; on GPUs TF32 convolutions (PyTorch's
# default) carry ~1e-3 relative error, so 1e-2 leaves room. Measured on the zoo (digits MLP): train-mode
# BatchNorm on the logits differs by 28 % of max |logit|, batch-mean-centred logits by 3.4 %.
BATCH_RTOL = 1e-2
BATCH_ATOL = 1e-5
# The findings `precheck` can raise: what a suite entry's ``when`` may name.
PRECHECKS = (
    "train-mode",
    "stochastic",
    "probabilities",
    "gradients",
    "obfuscated-gradients",
    "batch-dependent",
    "saturation",
    "unbounded",
)


def check_logits(logits: Any, n: int, num_classes: int, *, some_finite: bool = True) -> None:
    """The model contract on one batch: (N, K) floating-point logits for the dataset's K classes.

    With ``some_finite`` a batch whose every row holds a NaN or Inf is a broken model (ModelError);
    non-finite logits on only some rows are left to the per-sample verdict (wrong, with a finding).
    """
    if not isinstance(logits, Tensor):
        raise ModelError(f"model returned {type(logits).__name__}, not a tensor of logits")
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
    if some_finite and n and not bool(finite_rows(logits).any()):
        raise ModelError(
            f"model returned NaN or Inf logits for all {n} clean images",
            "check the weights (NaN after training?) and the input scaling ([0, 1])",
        )


@dataclass(frozen=True)
class GradientProbe:
    """Input gradients of a model at clean points: present at all, and how usable (docs/checks.md)."""

    connected: bool  # False: no input gradient at all (the output does not depend on x in autograd)
    reason: str = ""  # why not connected
    n: int = 0  # samples with finite logits the fractions are over
    nonfinite: float = 0.0  # fraction of samples with a non-finite CE input gradient
    zero: float = 0.0  # fraction with an exactly zero input gradient of the logit margin
    unusable: float = 0.0  # fraction whose margin gradient is zero or non-finite

    @property
    def obfuscated(self) -> bool:
        """Gradient attacks cannot be trusted: no gradient, or none usable on most samples."""
        return not self.connected or self.unusable > OBFUSCATED_FRACTION


def gradient_probe(model: nn.Module, x: Tensor, y: Tensor) -> GradientProbe:
    """CE and logit-margin input gradients at x, over the samples whose logits are finite.

    Never raises for a non-differentiable model: a forward that fails on an input that requires
    grad, an output not connected to x (``torch.no_grad()``, ``x.detach()``, numpy) or a backward
    that fails all give ``connected=False`` with the reason. Out-of-memory passes through.
    """
    xg = x.detach().clone().requires_grad_(True)
    why = "its output is not connected to the input in the autograd graph (a forward under torch.no_grad(), "
    why += "on x.detach(), or through numpy)"
    try:
        with torch.enable_grad():
            z = model(xg)
            if not isinstance(z, Tensor) or not z.requires_grad:
                return GradientProbe(False, why)
            fin = finite_rows(z.detach())
            if not bool(fin.any()):
                return GradientProbe(True, n=0)
            zf, yf = z[fin], y[fin]
            (g,) = torch.autograd.grad(
                F.cross_entropy(zf, yf, reduction="sum"), xg, retain_graph=True, allow_unused=True
            )
            # Zero gradients are judged on the logit margin: a saturated softmax zeroes CE gradients
            # (the saturation finding), while a flat margin means a non-differentiable model.
            (gm,) = torch.autograd.grad(margin(zf, yf).sum(), xg, allow_unused=True)
    except Exception as e:
        if is_oom(e):
            raise
        return GradientProbe(False, f"computing its input gradient fails ({first_line(e)})")
    if g is None or gm is None:
        return GradientProbe(False, why)
    g, gm = g[fin].flatten(1), gm[fin].flatten(1)
    bad = ~torch.isfinite(gm).all(1)
    zero = gm.abs().amax(1) == 0
    return GradientProbe(
        True,
        n=len(gm),
        nonfinite=float((~torch.isfinite(g)).any(1).float().mean()),
        zero=float(zero.float().mean()),
        unusable=float((bad | zero).float().mean()),
    )


def gradient_findings(probe: GradientProbe) -> list[Finding]:
    """The ``gradients`` and ``obfuscated-gradients`` findings of a probe."""
    out: list[Finding] = []
    if not probe.connected:
        out.append(
            Finding(
                "gradients",
                "error",
                f"the model gives no input gradient: {probe.reason}",
                data={"no_gradient": True, "reason": probe.reason},
            )
        )
    else:
        if probe.nonfinite > 0:
            out.append(
                Finding(
                    "gradients",
                    "error",
                    f"{100 * probe.nonfinite:.1f}% of samples have non-finite input gradients",
                    data={"nonfinite_fraction": probe.nonfinite},
                )
            )
        if probe.zero > ZERO_GRAD_FRACTION:
            out.append(
                Finding(
                    "gradients",
                    "warning",
                    f"{100 * probe.zero:.1f}% of samples have exactly zero input gradient of the logit margin "
                    "(masked gradients or a non-differentiable layer): gradient attacks cannot move them; "
                    "run black-box attacks",
                    data={"zero_fraction": probe.zero},
                )
            )
    if probe.obfuscated:
        what = (
            "the model gives no input gradient"
            if not probe.connected
            else f"{100 * probe.unusable:.0f}% of samples have a zero or non-finite input gradient"
        )
        out.append(
            Finding(
                "obfuscated-gradients",
                "error",
                f"obfuscated gradients (Athalye et al. 2018): {what}. Gradient attacks "
                + ("are skipped" if not probe.connected else "cannot be trusted")
                + f"; Square ({AUTO_SQUARE_QUERIES} queries, p_init {AUTO_SQUARE_P_INIT}) runs at every threat "
                "model, and the report marks numbers from gradient-free attacks only. For white-box numbers, "
                "give a differentiable surrogate (--surrogate module:factory) for BPDA",
                data={"connected": probe.connected, "unusable_fraction": probe.unusable, "reason": probe.reason},
            )
        )
    return out


def _majority_correct(model: nn.Module, x: Tensor, y: Tensor, draws: int) -> Tensor:
    with torch.no_grad():
        return torch.stack([~misclassified(model(x), y) for _ in range(draws)]).float().mean(0) >= 0.5


def unbounded_check(model: nn.Module, x: Tensor, y: Tensor, num_classes: int, eot_samples: int = 1) -> Finding | None:
    """PGD (margin loss, start at x) with L-inf eps = 1 on up to 64 correct samples: must reach < chance."""
    ok = _majority_correct(model, x, y, eot_samples)
    x, y = x[ok][:UNBOUNDED_SAMPLES], y[ok][:UNBOUNDED_SAMPLES]
    if len(x) == 0:
        return None
    # Through the registry: the core never imports a concrete attack (attacks/ sits beside it).
    attack = ATTACKS.create(
        "pgd", norm="linf", eps=UNBOUNDED_EPS, steps=UNBOUNDED_STEPS, loss="margin", random_start=False
    )
    attack.set_eot(eot_samples)
    xa = attack(ModelGuard(model), x, y, index=torch.arange(len(x), device=x.device), seed=0)
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


def _forward(model: nn.Module, x: Tensor, what: str) -> Any:
    """model(x) under no_grad; a failure other than out-of-memory is a ModelError."""
    try:
        with torch.no_grad():
            return model(x)
    except HarnessError:
        raise
    except Exception as e:
        if is_oom(e):
            raise
        raise ModelError(f"the model fails on {what} (shape {tuple(x.shape)}): {first_line(e)}", HINT) from e


def _same(a: Tensor, b: Tensor) -> bool:
    """Bitwise-equal logits, NaN equal to NaN (a model NaN on some inputs is not randomised for it)."""
    return torch.equal(a, b) or bool(((a == b) | (a.isnan() & b.isnan())).all())


def batch_dependence(model: nn.Module, x: Tensor, z: Tensor) -> Finding | None:
    """Logits of the first half of the batch alone vs within the whole batch, on finite rows.

    A sample's logits must not depend on the other samples of its batch (train-mode BatchNorm,
    batch-level normalisation): the engine compacts batches inside attacks, so such a model's
    verdicts would depend on batch composition. Float sums differ slightly between batch sizes,
    so differences up to `BATCH_RTOL` of the largest |logit| (plus `BATCH_ATOL`) are allowed.
    """
    h = len(x) // 2
    if h < 1:
        return None
    zh = _forward(model, x[:h], f"a batch of {h} (half of the first batch)")
    check_logits(zh, h, z.shape[1], some_finite=False)
    ok = finite_rows(z[:h]) & finite_rows(zh)
    if not bool(ok.any()):
        return None
    a, b = z[:h][ok].double(), zh[ok].double()
    diff = float((a - b).abs().max())
    tol = BATCH_ATOL + BATCH_RTOL * float(a.abs().max())
    if diff <= tol:
        return None
    flips = float((a.argmax(1) != b.argmax(1)).float().mean())
    return Finding(
        "batch-dependent",
        "error",
        f"a sample's logits depend on the other samples in its batch (max |dlogit| {diff:.3g} between the "
        f"first {h} samples alone and in a batch of {len(x)}; {100 * flips:.1f}% predictions flip): train-mode "
        "BatchNorm or batch-level statistics inside forward. Attacks shrink batches as samples break, so "
        "verdicts depend on batch composition; fix the model (eval-mode normalisation) before trusting numbers",
        data={"max_logit_diff": diff, "tolerance": tol, "flip_rate": flips, "half_batch": h},
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
    probe: GradientProbe | None = None,
) -> list[Finding]:
    """Checks on the first batch; ``full`` adds the unbounded-eps attack (a few dozen PGD steps).

    Raises `ModelError` only when the model breaks the contract for the whole batch (wrong shape
    or dtype, an exception, NaN/Inf on every clean image); everything else is a finding. ``probe``
    reuses a `gradient_probe` of the same batch.
    """
    out: list[Finding] = []
    if was_training:
        out.append(
            Finding(
                "train-mode",
                "warning",
                "model was passed in train mode (BatchNorm/Dropout active); it was evaluated in eval mode",
            )
        )
    z1 = _forward(model, x, "the first batch of clean images")
    check_logits(z1, len(x), num_classes)
    z2 = _forward(model, x, "the first batch of clean images")
    check_logits(z2, len(x), num_classes, some_finite=False)
    fin = finite_rows(z1) & finite_rows(z2)
    stochastic = not _same(z1, z2)
    if stochastic:
        d = (z1[fin] - z2[fin]).abs()
        diff = float(d.max()) if d.numel() else float("nan")
        flips = float(((z1.argmax(1) != z2.argmax(1)) | (finite_rows(z1) != finite_rows(z2))).float().mean())
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
    else:
        f = batch_dependence(model, x, z1)
        if f is not None:
            out.append(f)
    zf = z1[fin]
    rows = zf.sum(1)
    if len(zf) and (zf >= 0).all() and (zf <= 1).all() and torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        out.append(
            Finding(
                "probabilities",
                "error",
                "the model outputs probabilities (rows in [0, 1] summing to 1), not logits: CE-based "
                "attacks are weakened; remove the final softmax",
            )
        )
    probe = probe if probe is not None else gradient_probe(model, x, y)
    out += gradient_findings(probe)
    p = F.softmax(zf.double(), 1).amax(1)
    sat = float((p > SATURATION_PROB).float().mean()) if len(p) else 0.0
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
    if full and probe.connected:
        f = unbounded_check(model, x, y, num_classes, eot_samples or (EOT_AUTO_SAMPLES if stochastic else 1))
        if f is not None:
            out.append(f)
    return out


def _is_ce_pgd(e: dict[str, Any]) -> bool:
    """The masking baseline: a white-box fixed-step ascent on a softmax loss (declared by its class)."""
    return not e.get("black_box", False) and softmax_ascent(str(e.get("name", "")), e.get("config", {}))


def _is_strong(e: dict[str, Any]) -> bool:
    """White-box attacks that see through softmax saturation: margin/DLR losses, logit scaling, APGD, ..."""
    return not e.get("black_box", False) and sees_through_saturation(str(e.get("name", "")), e.get("config", {}))


def _black_box_findings(g: GroupResult, n: int) -> list[Finding]:
    out = []
    for i, e in enumerate(g.entries):
        if not e.get("black_box") or "broken_first" not in e:
            continue
        # White-box entries that ran: a skipped one (no input gradient) left nothing to beat.
        white = [p["key"] for p in g.entries[:i] if not p.get("black_box") and not p.get("skipped")]
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
    out += reference_findings(result)
    return out


def reference_findings(result: Result) -> list[Finding]:
    """``weaker-than-reference``: a suite entry that ran below its attack's declared reference budget.

    The robust accuracy beside it may be higher than the reference attack would leave; the finding
    names the entry, each parameter, its value and the reference (with the source of the reference).
    """
    out = []
    for g in result.threat_models:
        for e in g.entries:
            short = e.get("below_reference") or []
            if not short or e.get("skipped"):
                continue
            parts = ", ".join(f"{s['param']} {_fmt(s['value'])} < {_fmt(s['reference'])}" for s in short)
            sources = "; ".join(dict.fromkeys(str(s.get("source", "")) for s in short if s.get("source")))
            out.append(
                Finding(
                    "weaker-than-reference",
                    "warning",
                    f"{e['key']} ran below its reference budget ({parts}; reference: {sources}): the robust "
                    f"accuracy at {g.key} may be higher than a reference-strength attack would leave",
                    related=g.key,
                    data={"entry": e["key"], "shortfalls": short},
                )
            )
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
