"""Report figures as PNG bytes, drawn with matplotlib's Agg canvas (no pyplot, no global backend change)."""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.labels import NORM_TEXT, eps_label
from harness.reporting import summary as S
from harness.results import Result

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def new_figure(w: float, h: float) -> Figure:
    import matplotlib

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(w, h), layout="constrained")
        FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure, dpi: int = 150) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def palette(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _eps_text(g) -> str:
    """``L∞, ε = 8/255`` (`harness.labels.eps_label`: k/255 where it is one, else the number)."""
    norm = NORM_TEXT.get(g.norm or "", g.norm or "")
    return f"{norm}, ε = {eps_label(g.eps or 0.0)}"


def _err(a) -> tuple[float, float]:
    """Error-bar lengths (%) below and above an accuracy; never negative (at 0 % or 100 % the Wilson
    bound equals the accuracy up to float rounding, which matplotlib refuses when it dips below)."""
    return (max(0.0, 100 * (a.accuracy - a.ci95[0])), max(0.0, 100 * (a.ci95[1] - a.accuracy)))


def _clip(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _label_offset(x: float, y: float, placed: list[tuple[float, float]]) -> tuple[int, int, str]:
    """A label offset (points) whose anchor keeps clear of labels already placed (data units, %)."""
    for dx, dy, ha in ((6, 5, "left"), (6, -12, "left"), (-6, 5, "right"), (-6, -12, "right")):
        cx, cy = x + (dx / 6) * 4, y + dy / 4
        if all(abs(cx - px) > 12 or abs(cy - py) > 3.5 for px, py in placed):
            return dx, dy, ha
    return 6, 5, "left"


def _scatter_panel(ax, xs, ys, xerr, yerr, labels, objectives, colors, xlabel, ylabel, title) -> None:
    objs = sorted(set(objectives))
    placed: list[tuple[float, float]] = []
    for i in range(len(xs)):
        if math.isnan(xs[i]) or math.isnan(ys[i]):
            continue
        ax.errorbar(
            xs[i],
            ys[i],
            xerr=[[xerr[i][0]], [xerr[i][1]]],
            yerr=[[yerr[i][0]], [yerr[i][1]]],
            fmt=MARKERS[objs.index(objectives[i]) % len(MARKERS)],
            color=colors[i],
            ms=7,
            capsize=2,
            elinewidth=0.8,
            zorder=3,
        )
        dx, dy, ha = _label_offset(xs[i], ys[i], placed)
        placed.append((xs[i] + (dx / 6) * 4, ys[i] + dy / 4))
        ax.annotate(
            _clip(labels[i]), (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=8, ha=ha, zorder=4
        )
    front = S.pareto_front(list(zip(xs, ys)))
    if front:
        fx = [xs[i] for i in front]
        fy = [ys[i] for i in front]
        from matplotlib.lines import Line2D

        ax.plot(fx, fy, "--", color="0.35", lw=1.2, zorder=2)
        ax.scatter(fx, fy, s=180, facecolors="none", edgecolors="0.2", lw=1.2, zorder=5)
        proxy = Line2D([], [], ls="--", color="0.35", marker="o", ms=11, mfc="none", mec="0.2")
        bars = Line2D([], [], ls="none", marker="+", ms=10, color="0.4")
        ax.legend([proxy, bars], ["Pareto front", "95 % CI"], loc="lower left", frameon=False)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    finite = [v for v in list(xs) + list(ys) if not math.isnan(v)]
    lo = max(0.0, min(finite) - 8) if finite else 0.0
    ax.set_xlim(lo, 101)
    ax.set_ylim(max(0.0, min(v for v in ys if not math.isnan(v)) - 8) if finite else 0.0, 101)


def tradeoff(results: Sequence[Result], threat: str | None) -> bytes | None:
    """Clean vs robust accuracy (one point per model, 95 % CIs, Pareto front), and clean vs mean
    corruption accuracy as a second panel when corruptions were evaluated."""
    has_corr = any(r.corruptions for r in results)
    if threat is None and not has_corr:
        return None
    panels = (threat is not None) + has_corr
    fig = new_figure(5.2 * panels, 4.4)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    labels = S.unique_labels(results, S.short_label)
    objectives = [str(r.model.get("objective") or "?") for r in results]
    colors = palette(len(results))
    clean = [100 * r.clean.accuracy for r in results]
    cerr = [_err(r.clean) for r in results]
    ai = 0
    if threat is not None:
        rob, rerr = [], []
        g0 = None
        for r in results:
            g = next((g for g in r.threat_models if g.key == threat), None)
            g0 = g0 or g
            if g is None:
                rob.append(float("nan"))
                rerr.append((0.0, 0.0))
            else:
                a = g.accuracy
                rob.append(100 * a.accuracy)
                rerr.append(_err(a))
        _scatter_panel(
            axes[ai],
            clean,
            rob,
            cerr,
            rerr,
            labels,
            objectives,
            colors,
            "clean accuracy (%)",
            "robust accuracy (%)",
            f"Clean vs robust ({_eps_text(g0)})",
        )
        ai += 1
    if has_corr:
        mc, merr = [], []
        for r in results:
            a = S.mean_corruption(r)
            if a is None:
                mc.append(float("nan"))
                merr.append((0.0, 0.0))
            else:
                mc.append(100 * a.accuracy)
                merr.append(_err(a))
        _scatter_panel(
            axes[ai],
            clean,
            mc,
            cerr,
            merr,
            labels,
            objectives,
            colors,
            "clean accuracy (%)",
            "mean corruption accuracy (%)",
            "Clean vs common corruptions",
        )
    return to_png(fig)


def eps_curves(results: Sequence[Result]) -> bytes | None:
    """Robust accuracy against ε, one panel per norm, one line per model (ε = 0 is clean accuracy)."""
    norms = sorted({g.norm for r in results for g in r.threat_models if g.norm})
    if not norms:
        return None
    fig = new_figure(4.6 * len(norms) + 1.8, 3.8)
    axes = fig.subplots(1, len(norms), squeeze=False)[0]
    labels = S.unique_labels(results)
    colors = palette(len(results))
    for ax, norm in zip(axes, norms):
        for i, r in enumerate(results):
            gs = sorted((g for g in r.threat_models if g.norm == norm), key=lambda g: g.eps or 0.0)
            if not gs:
                continue
            accs = [r.clean] + [g.accuracy for g in gs]
            e = np.array([0.0] + [g.eps or 0.0 for g in gs])
            y = np.array([100 * a.accuracy for a in accs])
            lo = np.array([100 * a.ci95[0] for a in accs])
            hi = np.array([100 * a.ci95[1] for a in accs])
            ax.plot(e, y, marker=MARKERS[i % len(MARKERS)], color=colors[i], ms=4, lw=1.4, label=_clip(labels[i]))
            ax.fill_between(e, lo, hi, color=colors[i], alpha=0.15, lw=0)
        ticks = sorted({g.eps for r in results for g in r.threat_models if g.norm == norm and g.eps})
        if len(ticks) <= 8:  # the evaluated radii as people write them (8/255), when they fit
            ax.set_xticks([0.0, *ticks], ["0", *(eps_label(t) for t in ticks)], fontsize=7, rotation=30)
        ax.set_xlabel(f"ε ({NORM_TEXT.get(norm, norm)})")
        ax.set_ylabel("robust accuracy (%)")
        ax.set_title(f"Robust accuracy vs ε ({NORM_TEXT.get(norm, norm)})")
        ax.set_ylim(0, 101)
        ax.set_xlim(left=0)
    handles, labs = axes[0].get_legend_handles_labels()
    fig.legend(handles, labs, loc="outside right center", frameon=False, title="model (shaded: 95 % CI)")
    return to_png(fig)


def _nanmean(a: np.ndarray, **kw: Any) -> np.ndarray:
    """np.nanmean without the "Mean of empty slice" warning: an all-NaN column (a corruption or
    class with no samples) is plotted as a blank cell, which is the intended outcome."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, **kw)


def corruption_heatmap(r: Result) -> bytes | None:
    """Accuracy per corruption (rows) and severity (columns) for one model, mean row last."""
    cs = r.corruptions
    if not cs:
        return None
    names = S.corruption_names([r])
    sevs = sorted({g.severity for g in cs if g.severity is not None})
    m = np.full((len(names), len(sevs)), np.nan)
    for g in cs:
        m[names.index(str(g.corruption)), sevs.index(g.severity)] = 100 * g.accuracy.accuracy
    mean_row = _nanmean(m, axis=0, keepdims=True) if len(names) > 1 else None
    full = np.vstack([m, mean_row]) if mean_row is not None else m
    rows = names + (["mean"] if mean_row is not None else [])
    fig = new_figure(1.2 + 0.75 * len(sevs) + 1.6, 1.0 + 0.32 * len(rows))
    ax = fig.subplots()
    ax.grid(False)
    im = ax.imshow(full, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(full):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
    ax.set_xticks(range(len(sevs)), [str(s) for s in sevs])
    ax.set_yticks(range(len(rows)), rows)
    if mean_row is not None:
        ax.axhline(len(names) - 0.5, color="white", lw=2)
    ax.set_xlabel("severity")
    ax.set_title(f"Corruption accuracy (%) — {_clip(S.label(r), 60)}\nclean {r.clean.pct()} %", fontsize=9)
    fig.colorbar(im, ax=ax, label="accuracy (%)", shrink=0.9)
    return to_png(fig)


def per_class(r: Result, threat: str | None) -> bytes | None:
    """Per-class accuracy: clean, robust at ``threat`` and mean over corruptions (95 % CIs when
    class counts are known), so head/tail effects under class imbalance are visible."""
    K = len(r.per_class_clean)
    if K == 0:
        return None
    counts = S.class_counts(r)
    series: list[tuple[str, list[float]]] = [("clean", r.per_class_clean)]
    g = next((g for g in r.threat_models if g.key == threat), None)
    if g is not None and g.per_class:
        series.append((f"robust ({_eps_text(g)})", g.per_class))
    cs = [c for c in r.corruptions if c.per_class]
    if cs:
        series.append(("mean corruption", list(_nanmean(np.array([c.per_class for c in cs], float), axis=0))))
    fig = new_figure(min(14.0, 2.5 + 0.55 * K * len(series) / 2), 3.6)
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(K)
    colors = ["#4C72B0", "#C44E52", "#55A868"]
    for si, (name, vals) in enumerate(series):
        v = np.array(vals, float) * 100
        err = None
        if counts and len(counts) == K:
            ci = np.array([S.class_ci(a / 100, n) for a, n in zip(v, counts)]) * 100
            err = np.vstack([np.clip(v - ci[:, 0], 0, None), np.clip(ci[:, 1] - v, 0, None)])
            err = np.nan_to_num(err)
        ax.bar(
            x + (si - (len(series) - 1) / 2) * width,
            v,
            width,
            yerr=err,
            capsize=1.5,
            color=colors[si],
            label=name,
            error_kw={"ecolor": "0.3", "elinewidth": 0.7},
        )
    ticks = [f"{k}\n(n={counts[k]})" for k in range(K)] if counts and len(counts) == K and K <= 20 else list(range(K))
    ax.set_xticks(x, ticks, fontsize=7 if K <= 20 else 6)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Per-class accuracy — {_clip(S.label(r), 60)}" + (" (bars: 95 % CI)" if counts else ""))
    fig.legend(loc="outside upper right", frameon=False, ncols=len(series))
    return to_png(fig)
