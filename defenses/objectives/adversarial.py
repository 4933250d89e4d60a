"""Adversarial-training family: PGD-AT, TRADES, MART, GAIRAT, LRAT, SRAT.

Every objective crafts its training points with `defenses.crafting.craft` (eval-mode PGD, the last
iterate, keyed random start) and exposes the attack settings as fields (`AttackSettings`):
``eps=None`` uses the dataset's training eps (8/255 on CIFAR, 0.1 on digits), ``step_size=None``
is eps/4, ``steps`` 10, ``init`` "uniform" (Madry, GAIRAT) or "normal" = 0.001*N(0, 1) (TRADES,
MART). The papers' CIFAR settings (eps 0.031, step 0.007, 10 steps) are one `--param` away.

Sources (see ../shared/reference/objectives.md section 1 and docs/objectives.md):
- PGD-AT: Madry et al. 2018, MadryLab/cifar10_challenge.
- TRADES: Zhang et al. 2019, yaodongyu/TRADES (`trades.py`): KL-PGD from 0.001*N(0,1), the KL
  target softmax(f(x)) is not detached in the training loss.
- MART: Wang et al. 2020, YisenWang/MART (`mart.py`): boosted CE + KL * (1 - p_y(x)).
- GAIRAT: Zhang et al. 2021, zjfheart/Geometry-aware-Instance-reweighted-Adversarial-Training.
- LRAT (arXiv 2106.15776) and SRAT (arXiv 2107.13639): the paper bodies and code were not
  available; their structure follows the abstracts and a secondary summary, every unverified choice
  is a documented parameter (see the class docstrings).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.errors import UsageError
from harness.losses import LOSSES
from harness.params import Param
from harness.registry import OBJECTIVES
from harness.rng import stream_seed

from ..crafting import craft
from ..objective import Objective, StepState, TrainContext


@dataclass
class AttackSettings:
    """Training-time attack settings shared by the AT objectives (resolved in `setup`)."""

    eps: float | None = None
    step_size: float | None = None
    steps: int = 10
    norm: str = "linf"
    init: str = "uniform"

    PARAMS: ClassVar[dict[str, Param]] = {
        "eps": Param("training attack radius (None: the dataset's training eps, 8/255 on CIFAR)", gt=0),
        "step_size": Param("training PGD step (None: eps / 4)", gt=0),
        "steps": Param("training PGD steps", ge=1),
        "norm": Param("training attack norm", choices=("linf", "l2")),
        "init": Param("PGD start: uniform in the ball, 0.001 * N(0, 1) (TRADES, MART), or x itself",
                      choices=("uniform", "normal", "zero")),
    }  # fmt: skip

    def resolve_attack(self, ctx: TrainContext) -> None:
        if self.eps is None:
            self.eps = ctx.default_eps.get(self.norm, 8 / 255)
        if self.step_size is None:
            self.step_size = self.eps / 4

    def adversarial(
        self, model: nn.Module, x: Tensor, y: Tensor, state: StepState, **kw
    ) -> tuple[Tensor, Tensor | None]:
        assert self.eps is not None and self.step_size is not None, "setup() resolves eps"
        return craft(
            model,
            x,
            y,
            index=state.index,
            seed=state.seed,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            init=self.init,
            **kw,
        )


@OBJECTIVES.register("pgd-at")
@dataclass
class PgdAT(AttackSettings, Objective):
    """PGD adversarial training (Madry et al. 2018): cross-entropy on eval-mode PGD points only."""

    def setup(self, ctx: TrainContext) -> None:
        self.resolve_attack(ctx)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        xa, _ = self.adversarial(model, x, y, state)
        return F.cross_entropy(model(xa), y), {}


# ---- formulas as pure functions of logits (tested against hand-computed values) -----------------


def kl_rows(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Per-sample KL(softmax(p_logits) || softmax(q_logits)); gradients flow into both arguments."""
    logp, logq = F.log_softmax(p_logits, 1), F.log_softmax(q_logits, 1)
    return (logp.exp() * (logp - logq)).sum(1)


def trades_loss(z: Tensor, za: Tensor, y: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """TRADES: ce(z, y) + beta * mean_i KL(p(x_i) || p(x'_i)); returns (loss, KL term).

    The official loss is ``KLDivLoss(sum)(log_softmax(za), softmax(z)) / B`` with the target not
    detached, so the KL term also trains the natural branch; the same holds here.
    """
    kl = kl_rows(z, za).mean()
    return F.cross_entropy(z, y) + beta * kl, kl


def mart_loss(z: Tensor, za: Tensor, y: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """MART: BCE(p(x'), y) + beta * mean_i KL(p(x_i) || p(x'_i)) * (1 - p_y(x_i)).

    BCE = -log p_y(x') - log(1.0001 - max_{k != y} p_k(x')), with the constants of YisenWang/MART
    (1.0001, 1e-12 inside logs, 1.0000001 - p_y); KL target not detached, as in the official code.
    """
    pa = F.softmax(za, 1)
    p = F.softmax(z, 1)
    others = pa.scatter(1, y[:, None], -1.0)  # exclude the true class from the max
    y2 = others.argmax(1)
    bce = F.cross_entropy(za, y) + F.nll_loss(torch.log(1.0001 - pa + 1e-12), y2)
    kl = (p * (torch.log(p + 1e-12) - torch.log(pa + 1e-12))).sum(1)
    py = p.gather(1, y[:, None]).squeeze(1)
    robust = (kl * (1.0000001 - py)).mean()
    return bce + beta * robust, robust


def gairat_weights(kappa: Tensor, steps: int, lam: float) -> Tensor:
    """GAIRAT's tanh weight ``(1 + tanh(lam + 5 * (1 - 2 * kappa / K))) / 2``, normalised to batch mean 1.

    As in the official ``GAIR.py``: ``(K/2 - kappa) * 5 / (K/2)`` with ``K/2`` an integer division.
    """
    half = max(1, steps // 2)
    # (1 + tanh(a)) / 2 == sigmoid(2a), which keeps float32 precision where tanh(a) is close to -1.
    w = torch.sigmoid(2 * (lam + (half - kappa.float()) * 5.0 / half))
    return w * len(w) / w.sum()


def lrat_weights(v: Tensor, c: float, g: str = "identity", lam: float = -1.0) -> tuple[Tensor, Tensor]:
    """LRAT's within-group weights: ``w_ij = C * g(V_ij) / J`` and the natural weight ``C - sum_j w_ij``.

    ``v`` is (J, B) with vulnerabilities in [0, 1]; since g maps [0, 1] into [0, 1] each group's
    weights sum to C with a non-negative natural share. ``g``: "identity", or "tanh"
    ``(1 + tanh(lam + 5 * (2V - 1))) / 2`` (GAIRAT's curve on V = 1 - kappa/K).
    """
    v = v.clamp(0, 1)
    if g == "identity":
        gv = v
    elif g == "tanh":
        gv = torch.sigmoid(2 * (lam + 5.0 * (2 * v - 1)))  # == (1 + tanh(.)) / 2, stable in float32
    else:
        raise UsageError(f"unknown LRAT g {g!r}", "use 'identity' or 'tanh'")
    w = c * gv / v.shape[0]
    return w, c - w.sum(0)


def effective_number_weights(counts: Tensor, beta: float) -> Tensor:
    """Class weights ``(1 - beta) / (1 - beta^n_c)`` (Cui et al. 2019), normalised to sum to K."""
    counts = counts.double().clamp_min(1)
    w = (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (w * len(w) / w.sum()).float()


def supcon_loss(features: Tensor, y: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on L2-normalised features.

    ``L_i = -1/|P(i)| sum_{p in P(i)} log(exp(s_ip / T) / sum_{a != i} exp(s_ia / T))``, averaged
    over anchors that have at least one positive (same label, other sample); 0 if none has.
    """
    f = F.normalize(features.flatten(1), dim=1)
    sim = f @ f.T / temperature
    n = len(y)
    self_mask = torch.eye(n, dtype=torch.bool, device=f.device)
    pos = (y[:, None] == y[None, :]) & ~self_mask
    logits = sim.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, 1, keepdim=True)
    n_pos = pos.sum(1)
    has = n_pos > 0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos.clamp_min(1)
    return (per_anchor * has).sum() / has.sum().clamp_min(1)


def _burn_in(value: int | None, epochs: int, name: str) -> int:
    """A 1-based epoch from which a schedule switches on; ``None`` = half of the training."""
    if value is None:
        return max(1, math.ceil(0.5 * epochs))
    if value < 1:
        raise UsageError(f"{name} must be a 1-based epoch >= 1, not {value}")
    return int(value)


# ---- objectives ----------------------------------------------------------------------------------


@OBJECTIVES.register("trades")
@dataclass
class Trades(AttackSettings, Objective):
    """TRADES (Zhang et al. 2019): ce(f(x), y) + beta * KL(p(x) || p(x')), x' from KL-PGD; beta=6.

    x' maximises KL(p(x) || p(x')) (target p(x) from the eval-mode model) starting from
    0.001*N(0, 1) as in the official code. Larger beta: more robust, less accurate.
    """

    init: str = "normal"
    beta: float = 6.0
    PARAMS: ClassVar[dict[str, Param]] = {"beta": Param("weight of the KL (robustness) term", ge=0)}

    def setup(self, ctx: TrainContext) -> None:
        self.resolve_attack(ctx)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            was = model.training
            model.eval()
            target = F.log_softmax(model(x), 1)
            model.train(was)

        # Crafting keeps every sample in its batch position (keep="last", no compaction), so the
        # closure's target rows line up with the logits it is called with.
        def kl_attack(za: Tensor, _y: Tensor) -> Tensor:
            la = F.log_softmax(za, 1)
            return (target.exp() * (target - la)).sum(1)

        xa, _ = self.adversarial(model, x, y, state, loss=kl_attack)
        z = model(x)
        za = model(xa)
        loss, kl = trades_loss(z, za, y, self.beta)
        return loss, {"kl": kl.detach()}


@OBJECTIVES.register("mart")
@dataclass
class Mart(AttackSettings, Objective):
    """MART (Wang et al. 2020): BCE(p(x'), y) + beta * KL(p(x) || p(x')) * (1 - p_y(x)); beta=6.

    x' from CE-PGD with 0.001*N(0, 1) init (YisenWang/MART). The official WRN script uses beta=6,
    the ResNet-18 script beta=5.
    """

    init: str = "normal"
    beta: float = 6.0
    PARAMS: ClassVar[dict[str, Param]] = {"beta": Param("weight of the misclassification-aware KL term", ge=0)}

    def setup(self, ctx: TrainContext) -> None:
        self.resolve_attack(ctx)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        xa, _ = self.adversarial(model, x, y, state)
        z = model(x)
        za = model(xa)
        loss, robust = mart_loss(z, za, y, self.beta)
        return loss, {"kl_weighted": robust.detach()}


@OBJECTIVES.register("gairat")
@dataclass
class Gairat(AttackSettings, Objective):
    """GAIRAT (Zhang et al. 2021): PGD-AT with per-sample tanh weights from kappa (steps still correct).

    kappa_i counts the PGD iterations (of ``steps``) at which the iterate is still classified
    correctly; w_i = (1 + tanh(lam + 5 * (1 - 2 kappa_i / K))) / 2, normalised to batch mean 1;
    loss = mean(w_i * ce(f(x'_i), y_i)). Before ``begin_epoch`` (1-based; ``None`` = half of the
    epochs, the official 60 of 120) it is plain PGD-AT. lam=-1 is the official fixed schedule;
    lam=inf gives PGD-AT. Known to overfit to the training PGD (pitfall 6.1): evaluate it with
    margin-loss or logit-scaled PGD too.
    """

    lam: float = -1.0
    begin_epoch: int | None = None
    PARAMS: ClassVar[dict[str, Param]] = {
        "lam": Param("weight-schedule offset lambda (inf: plain PGD-AT)", finite=False),
        "begin_epoch": Param("1-based epoch from which samples are reweighted (None: half of the epochs)", ge=1),
    }

    def setup(self, ctx: TrainContext) -> None:
        self.resolve_attack(ctx)
        self.begin_epoch = _burn_in(self.begin_epoch, ctx.epochs, "begin_epoch")

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        xa, kappa = self.adversarial(model, x, y, state, count_correct=True)
        assert kappa is not None
        ce = F.cross_entropy(model(xa), y, reduction="none")
        assert self.begin_epoch is not None
        if state.epoch + 1 >= self.begin_epoch and math.isfinite(self.lam):
            w = gairat_weights(kappa, self.steps, self.lam)
            ce = ce * w
        return ce.mean(), {"kappa": kappa.float().mean()}


@OBJECTIVES.register("lrat")
@dataclass
class Lrat(AttackSettings, Objective):
    """LRAT (Gao et al., arXiv 2106.15776): reweighting inside each (natural, adversarial variants) group.

    L = mean_i [ sum_j w_ij ce(f(x~_ij), y_i) + (C - sum_j w_ij) ce(f(x_i), y_i) ], one variant per
    attack (default: one, PGD-CE, as the abstract trains with one attack and tests on others; add
    "margin" for a CW-loss PGD variant), w_ij = C * g(V_ij) / J, no reweighting across
    instances (no batch renormalisation): a sample safe against an attack puts that share of its
    weight on the natural image. The paper's exact V and g could NOT be verified (its body and code
    were not available); this tool's choices are parameters: ``vulnerability`` "prob" = 1 - p_y(x~)
    (from the training forward pass, detached) or "kappa" = 1 - kappa/K (GAIRAT's geometry value on
    that variant's PGD), ``g`` "identity" or "tanh" (with ``lam``), C = 1.
    """

    attacks: tuple[str, ...] = ("ce",)
    vulnerability: str = "prob"
    g: str = "identity"
    lam: float = -1.0
    c: float = 1.0
    PARAMS: ClassVar[dict[str, Param]] = {
        # The loss names of the PGD core's one loss table (harness/losses.py).
        "attacks": Param(
            "one training attack variant per PGD loss",
            max_len=8,
            item=Param("a PGD loss", choices=tuple(LOSSES)),
        ),
        "vulnerability": Param("V: 1 - p_y(x~) ('prob') or 1 - kappa/K ('kappa')", choices=("prob", "kappa")),
        "g": Param("weight function of the vulnerability", choices=("identity", "tanh")),
        "lam": Param("offset of g = 'tanh'"),
        "c": Param("total weight C of a sample's group", gt=0),
    }

    def setup(self, ctx: TrainContext) -> None:
        self.resolve_attack(ctx)
        self.attacks = tuple(self.attacks)
        if not self.attacks:
            raise UsageError("lrat needs at least one attack variant", "e.g. attacks=['ce','margin']")

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        variants, kappas = [], []
        for j, a in enumerate(self.attacks):
            st = dataclasses.replace(state, seed=stream_seed(state.seed, "lrat-variant", j))
            xv, kappa = self.adversarial(model, x, y, st, loss=a, count_correct=self.vulnerability == "kappa")
            variants.append(xv)
            kappas.append(kappa)
        ces, vs = [], []
        for xv, kappa in zip(variants, kappas):
            zv = model(xv)
            ces.append(F.cross_entropy(zv, y, reduction="none"))
            if self.vulnerability == "prob":
                vs.append(1 - F.softmax(zv.detach(), 1).gather(1, y[:, None]).squeeze(1))
            else:
                assert kappa is not None
                vs.append(1 - kappa.float() / self.steps)
        w, w_nat = lrat_weights(torch.stack(vs), self.c, self.g, self.lam)
        ce_nat = F.cross_entropy(model(x), y, reduction="none")
        loss = ((w * torch.stack(ces)).sum(0) + w_nat * ce_nat).mean()
        return loss, {"natural_weight": w_nat.mean()}


@OBJECTIVES.register("srat")
@dataclass
class Srat(AttackSettings, Objective):
    """SRAT (Wang et al., arXiv 2107.13639): deferred class reweighting + feature separation for imbalance.

    L = mean_i w_{y_i}(t) ce(f(x'_i), y_i) + lam * SupCon(normalize(h(x')), y; temperature), with
    h the penultimate features (``model.features_and_logits``), w = 1 before ``defer_epoch``
    (1-based; None = half of the epochs) and afterwards effective-number class weights
    (1 - beta)/(1 - beta^n_c) normalised to sum K (Cui et al. 2019; beta=0.999) from the training
    set's class counts. The exact separation loss, lam, layer, weight formula and deferral epoch of
    the paper could NOT be verified (body and code unavailable): these defaults are this tool's.
    """

    lam: float = 0.1
    temperature: float = 0.1
    beta: float = 0.999
    defer_epoch: int | None = None
    PARAMS: ClassVar[dict[str, Param]] = {
        "lam": Param("weight of the feature-separation (SupCon) term", ge=0),
        "temperature": Param("SupCon temperature", gt=0),
        "beta": Param("effective-number class-weight parameter (Cui et al. 2019)", ge=0, lt=1),
        "defer_epoch": Param("1-based epoch from which classes are reweighted (None: half of the epochs)", ge=1),
    }

    def __post_init__(self) -> None:
        self._weights: Tensor | None = None

    def setup(self, ctx: TrainContext) -> None:
        self.resolve_attack(ctx)
        if not hasattr(ctx.model, "features_and_logits"):
            raise UsageError(
                "srat needs a model with features_and_logits(x) (penultimate features)",
                "use a built-in architecture (mlp, cnn, resnet*)",
            )
        self.defer_epoch = _burn_in(self.defer_epoch, ctx.epochs, "defer_epoch")
        self._weights = effective_number_weights(ctx.class_counts, self.beta).to(ctx.device)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, state: StepState) -> tuple[Tensor, dict[str, Tensor]]:
        assert self._weights is not None and self.defer_epoch is not None
        xa, _ = self.adversarial(model, x, y, state)
        feat, z = model.features_and_logits(xa)  # type: ignore[operator]
        ce = F.cross_entropy(z, y, reduction="none")
        if state.epoch + 1 >= self.defer_epoch:
            ce = ce * self._weights.to(ce.device)[y]
        sep = supcon_loss(feat, y, self.temperature) if self.lam > 0 else z.new_zeros(())
        return ce.mean() + self.lam * sep, {"sep": sep.detach()}
