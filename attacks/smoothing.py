"""Randomized smoothing (Cohen, Rosenfeld and Kolter, ICML 2019): PREDICT, CERTIFY, and an attack on it.

The smoothed classifier g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I). CERTIFY draws n0
noisy copies to guess the top class c_A, then n more to lower-bound p_A by a one-sided
Clopper-Pearson bound at level alpha; if p_A_lower > 1/2 the prediction is c_A with certified L2
radius sigma * Phi^-1(p_A_lower), else it abstains. PREDICT draws n copies and abstains unless the
top class beats the runner-up in a two-sided binomial test at level alpha.

The empirical side: an L2 PGD attack with expectation over the noise (EOT) on the base model
wrapped as a noisy model, then the smoothed verdict at the attacked point by a majority of noisy
draws. A point certified at radius r that the attack flips within r, with the flip statistically
significant, contradicts the certificate: the engine reports it as an error finding.

Every noise draw is keyed by (seed, phase, block, global sample id) through `harness.rng`, in
fixed blocks of `BLOCK` draws per sample, so results do not depend on the batch size. A draw on
which the base model returns NaN/Inf logits votes for no class: it counts in n but for no c, so it
lowers the bound on p_A like a wrong vote does.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from harness.cost import Cost, steps
from harness.logits import finite_rows
from harness.params import Param
from harness.registry import ATTACKS, CERTIFIERS
from harness.rng import keyed_normal, stream_seed
from harness.threat import ThreatModel, enforce_contract

BLOCK = 250  # noise draws per sample per keyed block (part of the result's definition: do not change)


def cp_lower(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion (0 when k = 0)."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        lo = beta.ppf(alpha, np.maximum(k, 1e-300), n - k + 1)
    return np.where(k > 0, lo, 0.0)


def cp_upper(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson upper bound (1 when k = n)."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        hi = beta.ppf(1 - alpha, k + 1, np.maximum(n - k, 1e-300))
    return np.where(k < n, hi, 1.0)


def _top(counts: Tensor) -> Tensor:
    """The most frequent class, or -1 where no draw voted (every draw had non-finite logits)."""
    return torch.where(counts.amax(1) > 0, counts.argmax(1), -1)


class NoisyModel(nn.Module):
    """f(x + sigma * e) with e keyed by (seed, call number, sample id): the randomised base model.

    Bound to one batch of sample ids; every forward must see that whole batch in order (the
    attack runs without compaction), so the k-th draw of a sample is the same in any batch.
    """

    def __init__(self, base: nn.Module, sigma: float, index: Tensor, seed: int) -> None:
        super().__init__()
        self.base, self.sigma, self.index, self.seed, self.calls = base, float(sigma), index, int(seed), 0

    def forward(self, x: Tensor) -> Tensor:
        if len(x) != len(self.index):
            raise RuntimeError("NoisyModel called on a batch that is not its bound batch")
        e = keyed_normal(stream_seed(self.seed, "eot", self.calls), self.index, tuple(x.shape[1:])).to(x.dtype)
        self.calls += 1
        return self.base(x + self.sigma * e)


@CERTIFIERS.register("smoothing-l2")
class SmoothingL2:
    """Randomized smoothing (Cohen et al. 2019): CERTIFY radii, PREDICT, EOT-PGD on the smoothed model."""

    # Cohen et al.'s CERTIFY defaults: n0 = 100, n = 100 000, alpha = 0.001. Counts are bounded so a
    # typo cannot ask for years of noise draws (n = 10^7 is 100x the paper's budget).
    PARAMS: ClassVar[dict[str, Param]] = {
        "sigma": Param("standard deviation of the Gaussian noise (pixel units)", gt=0, le=10),
        "n0": Param("noise draws that select the top class", ge=1, le=10**7),
        "n": Param("noise draws that estimate its probability (the certificate)", ge=1, le=10**7),
        "alpha": Param("failure probability of the certificate and of PREDICT's test", gt=0, lt=0.5),
        "radii": Param("L2 radii at which certified and attacked accuracy are reported", max_len=64,
                       item=Param("an L2 radius", ge=0)),
        "attack_steps": Param("EOT-PGD steps per radius on the smoothed model", ge=1),
        "eot_samples": Param("noise draws averaged per EOT-PGD step", ge=1, le=10**4),
        "n_verdict": Param("noise draws for the smoothed verdict at an attacked point", ge=1, le=10**7),
        "max_images": Param("noisy images per forward pass (memory; at least one sample's 250 draws)", ge=1, le=2**20),
    }  # fmt: skip

    def __init__(
        self,
        sigma: float = 0.25,
        n0: int = 100,
        n: int = 100_000,
        alpha: float = 0.001,
        radii: list[float] | None = None,
        attack_steps: int = 20,
        eot_samples: int = 8,
        n_verdict: int = 1000,
        max_images: int = 8192,
    ) -> None:
        self.sigma, self.n0, self.n, self.alpha = float(sigma), int(n0), int(n), float(alpha)
        self.radii = [float(r) for r in (radii if radii is not None else [0.0, 0.25, 0.5, 0.75, 1.0])]
        self.attack_steps, self.eot_samples = int(attack_steps), int(eot_samples)
        self.n_verdict, self.max_images = int(n_verdict), int(max_images)

    def set_eot(self, draws: int) -> list[str]:
        """Noise draws averaged per EOT-PGD step of the empirical attack (the engine's EOT count)."""
        self.eot_samples = int(draws)
        return []

    def config(self) -> dict[str, Any]:
        return {"certifier": "smoothing-l2", **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    # ---- Monte Carlo class counts ------------------------------------------------------------------
    @torch.no_grad()
    def counts(self, model: nn.Module, x: Tensor, index: Tensor, num: int, seed: int, num_classes: int) -> Tensor:
        """Class counts of f(x + sigma e) over ``num`` keyed draws per sample, shape (len(x), K), int64."""
        out = torch.zeros(len(x), num_classes, dtype=torch.int64, device=x.device)
        per = max(1, self.max_images // BLOCK)  # samples per forward pass
        for b in range(math.ceil(num / BLOCK)):
            m = min(BLOCK, num - b * BLOCK)
            s = stream_seed(seed, "block", b)
            for i in range(0, len(x), per):
                xi, ii = x[i : i + per], index[i : i + per]
                e = keyed_normal(s, ii, (BLOCK, *x.shape[1:]))[:, :m].to(x.dtype)
                xn = (xi[:, None] + self.sigma * e).reshape(-1, *x.shape[1:])
                z = model(xn)
                # Non-finite rows vote for an extra, dropped class: no class gets their vote.
                pred = torch.where(finite_rows(z), z.argmax(1), num_classes).view(len(xi), m)
                out[i : i + per] += torch.nn.functional.one_hot(pred, num_classes + 1)[..., :num_classes].sum(1)
        return out

    def predict(self, counts: Tensor) -> np.ndarray:
        """PREDICT from counts: the top class, or -1 when a binomial test cannot separate it from the runner-up."""
        from scipy.stats import binomtest

        top2 = counts.topk(2, dim=1)
        out = top2.indices[:, 0].cpu().numpy().astype(np.int16)
        na, nb = top2.values[:, 0].cpu().numpy(), top2.values[:, 1].cpu().numpy()
        for i in range(len(out)):
            if binomtest(int(na[i]), int(na[i] + nb[i]), 0.5).pvalue > self.alpha:
                out[i] = -1
        return out

    # ---- the engine's entry point -------------------------------------------------------------------
    def cost(self, n: int, *, num_classes: int = 10) -> Cost:
        """``n0 + n`` noisy forwards to certify; per radius > 0 an L2 PGD on the noisy model
        (``attack_steps`` gradients over ``eot_samples`` draws, one forward at the end) and
        ``n_verdict`` noisy forwards for the verdict."""
        radii = sum(1 for r in self.radii if r > 0)
        attack = (steps(self.attack_steps) + Cost(1)) * self.eot_samples + Cost(self.n_verdict)
        return (Cost(self.n0 + self.n) + attack * radii) * n

    def run(self, model: nn.Module, x: Tensor, y: Tensor, *, index: Tensor, seed: int, num_classes: int) -> dict:
        """CERTIFY every sample, then attack the certified-correct ones at each radius.

        Returns per-sample arrays: pred (c_A or -1 abstain), radius (nan if abstained), pa_lower,
        emp (n, R) 1 if the smoothed prediction at the attacked point is still y (0 otherwise),
        viol (n, R) 1 where a point certified at radius r was significantly flipped within r.
        """
        c0 = self.counts(model, x, index, self.n0, stream_seed(seed, "select"), num_classes)
        ca = c0.argmax(1)
        c = self.counts(model, x, index, self.n, stream_seed(seed, "estimate"), num_classes)
        na = c.gather(1, ca[:, None]).squeeze(1).cpu().numpy()
        pa = cp_lower(na, self.n, self.alpha)
        from scipy.stats import norm

        certified = pa > 0.5
        radius = np.where(certified, self.sigma * norm.ppf(np.clip(pa, 0.5, 1.0)), np.nan).astype(np.float32)
        pred = np.where(certified, ca.cpu().numpy(), -1).astype(np.int16)
        y_np = y.cpu().numpy()
        emp = np.zeros((len(x), len(self.radii)), np.int8)
        viol = np.zeros((len(x), len(self.radii)), np.int8)
        # Smoothed prediction at the clean point: the majority of the n estimation draws.
        maj0 = _top(c).cpu().numpy()
        for j, r in enumerate(self.radii):
            if r == 0:
                emp[:, j] = maj0 == y_np
                continue
            act = np.nonzero(maj0 == y_np)[0]
            if not len(act):
                continue
            a = torch.as_tensor(act, device=x.device)
            xa, ya, ia = x[a], y[a], index[a]
            noisy = NoisyModel(model, self.sigma, ia, stream_seed(seed, "attack", j))
            pgd = ATTACKS.create(
                "pgd",
                norm="l2",
                eps=r,
                steps=self.attack_steps,
                restarts=1,
                early_stop=False,
                eot_samples=self.eot_samples,
            )
            x_adv = pgd(noisy, xa, ya, index=ia, seed=stream_seed(seed, "pgd", j))
            enforce_contract(xa, x_adv, ThreatModel("l2", r), who=f"smoothing-l2 attack r={r}")
            cv = self.counts(model, x_adv, ia, self.n_verdict, stream_seed(seed, "verdict", j), num_classes)
            emp[act, j] = (_top(cv) == ya).cpu().numpy()
            ky = cv.gather(1, ya[:, None]).squeeze(1).cpu().numpy()
            # The certificate says p_y(x_adv) > 1/2; a significant p_y < 1/2 contradicts it.
            contra = cp_upper(ky, self.n_verdict, self.alpha) < 0.5
            cert_r = (pred[act] == y_np[act]) & (np.nan_to_num(radius[act], nan=-1.0) >= r)
            viol[act, j] = contra & cert_r
        return {"pred": pred, "radius": radius, "pa_lower": pa.astype(np.float32), "emp": emp, "viol": viol}
