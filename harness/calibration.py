"""Calibration of a classifier's confidence: ECE (equal-width and equal-mass bins), NLL, Brier score.

Computed from per-sample statistics the engine records for every point it scores (clean,
corrupted, adversarial): the max-softmax confidence, the log-probability of the true class and the
sum of squared probabilities (for the multi-class Brier score), plus the correctness of the
prediction. Confidence intervals are seeded percentile bootstraps over samples. Temperature
scaling (Guo et al. 2017) is fitted on held-out data, never on the evaluated points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

N_BINS = 15
METRICS = ("ece", "ece_adaptive", "nll", "brier", "conf_errors", "accuracy", "confidence")


SCORE_TO_PROB = ("softmax", "simplex-coding")


def score_to_prob_of(model_info: dict[str, Any] | None) -> str:
    """How a model's scores become probabilities, from its sidecar's ``train_config.score_to_prob``.

    ``softmax`` unless the training recorded otherwise (the square loss with simplex coding records
    ``simplex-coding``); an unknown value is a one-line error, never silently softmax.
    """
    tc = (model_info or {}).get("train_config") or {}
    kind = tc.get("score_to_prob", "softmax") if isinstance(tc, dict) else "softmax"
    if kind not in SCORE_TO_PROB:
        from harness.errors import CheckpointError

        raise CheckpointError(
            f"the model's sidecar says score_to_prob = {kind!r}", f"known: {', '.join(SCORE_TO_PROB)}"
        )
    return kind


def scores_to_probs(logits: Tensor, kind: str = "softmax", temperature: float = 1.0) -> Tensor:
    """Class probabilities from scores (n, K), float32.

    ``softmax``: softmax(z / T). ``simplex-coding`` (Hu et al. 2022, square loss with simplex-coded
    targets v_k = sqrt(K/(K-1)) (e_k - 1/K)): eta_k = ((K - 1) z.v_k + 1) / K with z = scores / T,
    clipped to [0, 1] and renormalised to sum 1 (uniform where every eta_k clips to 0).
    """
    z = logits.float() / temperature_for(temperature, kind)
    if kind == "softmax":
        return torch.softmax(z, 1)
    if kind != "simplex-coding":
        raise ValueError(f"unknown score_to_prob {kind!r}")
    return _simplex_probs(z)


def _simplex_probs(z: Tensor) -> Tensor:
    """eta_k = ((K - 1) z.v_k + 1) / K clipped to [0, 1] and renormalised, in z's dtype."""
    k = z.shape[1]
    zv = math.sqrt(k / (k - 1)) * (z - z.mean(1, keepdim=True))  # z . v_k for every k
    eta = (((k - 1) * zv + 1) / k).clamp(0, 1)
    total = eta.sum(1, keepdim=True)
    return torch.where(total > 0, eta / total.clamp_min(1e-30), torch.full_like(eta, 1.0 / k))


def prob_stats(
    logits: Tensor,
    y: Tensor,
    temperature: float = 1.0,
    draws: list[Tensor] | None = None,
    score_to_prob: str = "softmax",
) -> Tensor:
    """Per-sample (max-probability confidence, log p_y, sum_j p_j^2) as an (n, 3) float32 tensor.

    Probabilities come from `scores_to_probs` (``score_to_prob``: softmax, or the simplex coding of a
    square-loss model); a `FittedTemperature` gives the temperature fitted for that map. With ``draws``
    (a randomised model scored by EOT) the probabilities are the mean over draws: the predictive
    distribution of the randomised model.
    """
    temperature = temperature_for(temperature, score_to_prob)
    if draws:
        p = torch.stack([scores_to_probs(d, score_to_prob, temperature) for d in draws]).mean(0)
        logp = torch.log(p.clamp_min(1e-45))
    elif score_to_prob == "softmax":
        logp = torch.log_softmax(logits.float() / temperature, 1)
        p = logp.exp()
    else:
        p = scores_to_probs(logits, score_to_prob, temperature)
        logp = torch.log(p.clamp_min(1e-45))
    conf = p.max(1).values
    lp = logp.gather(1, y.view(-1, 1)).squeeze(1)
    return torch.stack([conf, lp, (p * p).sum(1)], 1)


def bin_ids(conf: np.ndarray, n_bins: int = N_BINS, adaptive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Bin index per sample and the bin edges.

    Equal-width: edges linspace(0, 1); equal-mass ("adaptive"): the confidence quantiles. A value on
    an inner edge goes to the lower bin (np.searchsorted, side="left").
    """
    if adaptive:
        edges = np.percentile(conf, np.linspace(0, 100, n_bins + 1)) if len(conf) else np.linspace(0, 1, n_bins + 1)
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], conf), edges


def reliability(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, adaptive: bool = False) -> dict:
    """Per-bin counts, mean confidence and accuracy (nan for empty bins)."""
    ids, edges = bin_ids(conf, n_bins, adaptive)
    count = np.bincount(ids, minlength=n_bins).astype(np.int64)
    s_conf = np.bincount(ids, weights=conf, minlength=n_bins)
    s_acc = np.bincount(ids, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "edges": edges.tolist(),
            "count": count.tolist(),
            "confidence": np.where(count > 0, s_conf / np.maximum(count, 1), np.nan).tolist(),
            "accuracy": np.where(count > 0, s_acc / np.maximum(count, 1), np.nan).tolist(),
        }


def ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS, adaptive: bool = False) -> float:
    """Expected calibration error: sum over bins of |B|/n * |acc(B) - conf(B)| (Naeini et al. 2015)."""
    n = len(conf)
    if n == 0:
        return float("nan")
    ids, _ = bin_ids(conf, n_bins, adaptive)
    count = np.bincount(ids, minlength=n_bins)
    gap = np.bincount(ids, weights=conf, minlength=n_bins) - np.bincount(
        ids, weights=correct.astype(np.float64), minlength=n_bins
    )
    return float(np.abs(gap).sum() / n) if count.sum() else float("nan")


def metrics(conf: np.ndarray, correct: np.ndarray, logp: np.ndarray, sumsq: np.ndarray, n_bins: int = N_BINS) -> dict:
    """All point metrics of one group of samples."""
    wrong = ~correct
    return {
        "ece": ece(conf, correct, n_bins),
        "ece_adaptive": ece(conf, correct, n_bins, adaptive=True),
        "nll": float(-logp.mean()) if len(logp) else float("nan"),
        # Multi-class Brier (Brier 1950): sum_j (p_j - 1[j=y])^2 = sum p^2 - 2 p_y + 1.
        "brier": float((sumsq - 2 * np.exp(logp) + 1).mean()) if len(logp) else float("nan"),
        "conf_errors": float(conf[wrong].mean()) if wrong.any() else float("nan"),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "confidence": float(conf.mean()) if len(conf) else float("nan"),
    }


def bootstrap(
    conf: np.ndarray,
    correct: np.ndarray,
    logp: np.ndarray,
    sumsq: np.ndarray,
    *,
    seed: int,
    n_boot: int = 200,
    n_bins: int = N_BINS,
) -> dict[str, list[float]]:
    """95 % percentile bootstrap intervals (resampling samples with replacement), seeded."""
    n = len(conf)
    if n == 0 or n_boot <= 0:
        return {k: [float("nan"), float("nan")] for k in METRICS}
    rng = np.random.Generator(np.random.PCG64(seed))
    vals: dict[str, list[float]] = {k: [] for k in METRICS}
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        for k, v in metrics(conf[i], correct[i], logp[i], sumsq[i], n_bins).items():
            vals[k].append(v)
    out = {}
    for k, v in vals.items():
        a = np.asarray(v, dtype=np.float64)
        a = a[~np.isnan(a)]
        out[k] = [float(np.percentile(a, 2.5)), float(np.percentile(a, 97.5))] if len(a) else [math.nan, math.nan]
    return out


@dataclass
class GroupStats:
    """Per-sample statistics of one group (clean, a corruption x severity, or a threat model)."""

    conf: np.ndarray
    correct: np.ndarray
    logp: np.ndarray
    sumsq: np.ndarray

    def summary(self, *, seed: int, n_boot: int, n_bins: int = N_BINS) -> dict[str, Any]:
        d: dict[str, Any] = metrics(self.conf, self.correct, self.logp, self.sumsq, n_bins)
        d["n"] = len(self.conf)
        d["ci95"] = bootstrap(self.conf, self.correct, self.logp, self.sumsq, seed=seed, n_boot=n_boot, n_bins=n_bins)
        d["reliability"] = reliability(self.conf, self.correct, n_bins)
        return _clean_nan(d)


def _clean_nan(d: Any) -> Any:
    """JSON has no NaN: write None."""
    if isinstance(d, dict):
        return {k: _clean_nan(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_clean_nan(v) for v in d]
    if isinstance(d, float) and math.isnan(d):
        return None
    return d


# log(p) floor of the fitted NLL: float32's smallest subnormal, the value `prob_stats`'s clamp_min(1e-45)
# gives in float32, so the fit minimises the NLL the record reports.
_LOG_FLOOR = 2.0**-149
_T_BOUNDS = (0.01, 100.0)


def _fit_softmax(logits: Tensor, y: Tensor) -> float:
    from scipy.optimize import minimize_scalar

    z = logits.detach().double().cpu()
    yy = y.cpu()

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / math.exp(log_t), yy))

    bounds = (math.log(_T_BOUNDS[0]), math.log(_T_BOUNDS[1]))
    res = minimize_scalar(nll, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


def temperature_nll(logits: Tensor, y: Tensor, temperature: float, score_to_prob: str = "softmax") -> float:
    """Mean NLL of the true class under ``score_to_prob`` of logits / T, in float64 (log p floored as recorded)."""
    return _nll(logits.detach().double().cpu(), y.cpu().view(-1, 1), float(temperature), score_to_prob)


def _nll(zd: Tensor, yy: Tensor, temperature: float, score_to_prob: str) -> float:
    z = zd / temperature
    if score_to_prob == "softmax":
        return float(-torch.log_softmax(z, 1).gather(1, yy).mean())
    if score_to_prob != "simplex-coding":
        raise ValueError(f"unknown score_to_prob {score_to_prob!r}")
    return float(-torch.log(_simplex_probs(z).gather(1, yy).clamp_min(_LOG_FLOOR)).mean())


def _fit_by_grid(logits: Tensor, y: Tensor, score_to_prob: str) -> float:
    """Minimise `temperature_nll` over log T: an 81-point grid on [0.01, 100], then a bounded search
    between the best point's neighbours. The simplex readout clips, so its NLL need not be convex in
    1/T; the grid keeps the search from stopping in a local dip."""
    from scipy.optimize import minimize_scalar

    lo, hi = math.log(_T_BOUNDS[0]), math.log(_T_BOUNDS[1])
    grid = [lo + (hi - lo) * i / 80 for i in range(81)]
    zd, yy = logits.detach().double().cpu(), y.cpu().view(-1, 1)

    def nll(log_t: float) -> float:
        return _nll(zd, yy, math.exp(log_t), score_to_prob)

    vals = [nll(g) for g in grid]
    i = min(range(len(grid)), key=vals.__getitem__)
    a, b = grid[max(0, i - 1)], grid[min(len(grid) - 1, i + 1)]
    res = minimize_scalar(nll, bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    best = res.x if res.fun <= vals[i] else grid[i]
    return float(math.exp(best))


class FittedTemperature(float):
    """Temperatures fitted on one held-out set, one per probability map; as a float, the softmax one.

    `fit_temperature` without ``score_to_prob`` returns this, so a caller that does not know the
    model's map (the engine) can hand it to `prob_stats` / `scores_to_probs`, which take the
    temperature fitted for the map they apply (`temperature_for`). Maps other than softmax are fitted
    on first use from the kept held-out logits.
    """

    def __new__(cls, softmax_t: float, logits: Tensor, y: Tensor, fitted: dict[str, float] | None = None):
        obj = super().__new__(cls, softmax_t)
        obj._logits, obj._y = logits.detach().cpu(), y.detach().cpu()
        obj._fitted = {"softmax": float(softmax_t), **(fitted or {})}
        return obj

    def __reduce__(self):
        return (FittedTemperature, (float(self), self._logits, self._y, dict(self._fitted)))

    def for_map(self, score_to_prob: str) -> float:
        """The temperature minimising the held-out NLL of ``score_to_prob`` (fitted once, then kept)."""
        if score_to_prob not in self._fitted:
            if score_to_prob not in SCORE_TO_PROB:
                raise ValueError(f"unknown score_to_prob {score_to_prob!r}")
            self._fitted[score_to_prob] = _fit_by_grid(self._logits, self._y, score_to_prob)
        return self._fitted[score_to_prob]


def temperature_for(temperature: float, score_to_prob: str) -> float:
    """The temperature to apply with ``score_to_prob``: a `FittedTemperature`'s fit for that map, else as given."""
    if isinstance(temperature, FittedTemperature):
        return temperature.for_map(score_to_prob)
    return temperature


def fit_temperature(logits: Tensor, y: Tensor, score_to_prob: str | None = None) -> float:
    """The temperature T > 0 minimising the held-out NLL of the model's probabilities of logits / T.

    Softmax (Guo et al. 2017): NLL is convex in 1/T, so a bounded scalar search over log T finds the
    optimum. ``simplex-coding`` (a square-loss model, `scores_to_probs`): the NLL of that readout, by
    `_fit_by_grid`. Without ``score_to_prob``: a `FittedTemperature` (a float equal to the softmax T,
    bit-identical to the softmax fit) that gives each map its own fit when applied.
    """
    if score_to_prob is None:
        return FittedTemperature(_fit_softmax(logits, y), logits, y)
    if score_to_prob == "softmax":
        return _fit_softmax(logits, y)
    if score_to_prob not in SCORE_TO_PROB:
        raise ValueError(f"unknown score_to_prob {score_to_prob!r}")
    return _fit_by_grid(logits, y, score_to_prob)


DEFAULT_BOOTSTRAP = 100
