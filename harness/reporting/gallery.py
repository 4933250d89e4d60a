"""The report's galleries: the images behind the numbers, from a run's gallery side file.

Per threat model a few samples chosen by a keyed seed (broken ones first): clean | adversarial |
the perturbation amplified to the full range, each captioned with the true label and the
predictions the record holds; the corruptions of one sample at every severity; that sample under
each smoothing entry's noise. `load` reads and checks the side file (`harness.records.gallery`),
`figures` draws the PNGs, `markdown` and `html` write the section.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.labels import eps_label, key_label, threat_label
from harness.records.gallery import SHOWN, Gallery, Shown, read_gallery
from harness.reporting.plots import new_figure, to_png
from harness.reporting.runs import Run
from harness.results import Result

PREFIX = "gallery/"
PANEL = 1.6  # inches per image panel
DPI = 110


def load(results: Sequence[Result], paths: Sequence[Path | None]) -> list[Gallery | None]:
    """Each run's checked gallery (None: no run folder, no record or no side file)."""
    out: list[Gallery | None] = []
    for r, p in zip(results, paths):
        records = Run(p, r).records if p is not None else None
        if records is None:
            out.append(None)
            continue
        try:
            out.append(read_gallery(records, r.record.get("config_hash") or r.config.get("config_hash")))
        except HarnessError as e:
            out.append(Gallery(notes=[f"gallery not shown: {e.what}"]))
    return out


def key(i: int, what: str) -> str:
    """The figure key of run i's gallery ``what`` (a threat model's group key, corruptions, smoothing)."""
    return f"{PREFIX}{i}/{what}"


def file_names(keys: Sequence[str], labels: Sequence[str]) -> dict[str, str]:
    """PNG file names of gallery figure keys: ``gallery-<i>-<model>-<what>.png`` (single file names)."""

    out = {}
    for k in keys:
        i, what = k[len(PREFIX) :].split("/", 1)
        out[k] = f"gallery-{i}-{_slug(labels[int(i)])}-{part_name(what)}.png"
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("._")[:40] or "x"


def part_name(what: str) -> str:
    """A gallery part as a name: the threat model as people write it (linf-0.0313725 -> Linf_8_255),
    ``corruptions``, ``smoothing``."""
    return _slug(key_label(what).replace("∞", "inf"))


def _show(ax, img: np.ndarray, caption: str) -> None:
    """One image (C, H, W in [0, 1], or uint8) on an axis without ticks, the caption below it."""
    a = img.astype(np.float32) / 255 if img.dtype == np.uint8 else img
    if a.shape[0] == 1:
        ax.imshow(a[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(a.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_xlabel(caption, fontsize=7)


def amplified(delta: np.ndarray) -> tuple[np.ndarray, float]:
    """The perturbation mapped to [0, 1] (0.5 = unchanged, max |δ| = 0 or 1) and its amplification factor."""
    peak = float(np.abs(delta).max()) if delta.size else 0.0
    if peak == 0:
        return np.full_like(delta, 0.5), 1.0
    return 0.5 + delta / (2 * peak), 0.5 / peak


def _pred(p: int) -> str:
    return "no prediction" if p < 0 else str(p)


def threat_figure(title: str, shown: Sequence[Shown]) -> bytes:
    """Rows of clean | adversarial | amplified perturbation for a threat model's samples."""
    fig = new_figure(3 * PANEL + 0.3, len(shown) * (PANEL + 0.4) + 0.45)
    axes = fig.subplots(len(shown), 3, squeeze=False)
    for row, s in zip(axes, shown):
        delta = s.adv - s.clean
        amp_img, amp = amplified(delta)
        verdict = f"broken ({s.entry.split('@')[0]})" if s.broken else "robust"
        _show(row[0], s.clean, f"clean #{s.id}\ntrue {s.label}, pred {_pred(s.clean_pred)}")
        _show(row[1], s.adv, f"adversarial: pred {_pred(s.adv_pred)}\n{verdict}")
        _show(row[2], amp_img, f"perturbation ×{amp:.3g}\nmax |δ| {eps_label(float(np.abs(delta).max()))}")
    fig.suptitle(title, fontsize=9)
    return to_png(fig, dpi=DPI)


def corruption_figure(title: str, g: Gallery) -> bytes | None:
    """One sample: clean, then each corruption (rows) at each severity (columns)."""
    if g.sample is None or not g.corrupted:
        return None
    names = list(dict.fromkeys(c.name for c in g.corrupted))
    sevs = sorted({c.severity for c in g.corrupted})
    sid, label, clean, cpred = g.sample
    fig = new_figure((len(sevs) + 1) * PANEL + 0.3, len(names) * (PANEL + 0.4) + 0.45)
    axes = fig.subplots(len(names), len(sevs) + 1, squeeze=False)
    for r, name in enumerate(names):
        _show(axes[r][0], clean, f"{name}\nclean: pred {_pred(cpred)}")
        for c, sev in enumerate(sevs, start=1):
            hit = next((x for x in g.corrupted if x.name == name and x.severity == sev), None)
            if hit is None:
                axes[r][c].set_axis_off()
                continue
            _show(axes[r][c], hit.image, f"severity {sev}\npred {_pred(hit.pred)}")
    fig.suptitle(f"{title}\nsample #{sid}, true class {label}", fontsize=9)
    return to_png(fig, dpi=DPI)


def smoothing_figure(title: str, g: Gallery) -> bytes | None:
    """One sample, clean and under one draw of each smoothing entry's Gaussian noise."""
    if g.sample is None or not g.noisy:
        return None
    sid, label, clean, cpred = g.sample
    fig = new_figure(2 * PANEL + 1.2, len(g.noisy) * (PANEL + 0.6) + 0.45)
    axes = fig.subplots(len(g.noisy), 2, squeeze=False)
    for row, n in zip(axes, g.noisy):
        _show(row[0], clean, f"clean\ntrue {label}, pred {_pred(cpred)}")
        smoothed = (
            "abstains"
            if n.pred < 0
            else f"{n.pred}" + (f", certified r {n.radius:.3g}" if n.radius == n.radius else "")
        )
        noise = f"+ N(0, σ²), σ = {eps_label(n.sigma)} (shown clipped)"
        _show(row[1], n.image, f"{noise}\nbase model: {_pred(n.base_pred)}\nsmoothed: {smoothed}")
    fig.suptitle(f"{title}\nsample #{sid} under the smoothing noise", fontsize=9)
    return to_png(fig, dpi=DPI)


def figures(galleries: Sequence[Gallery | None], labels: Sequence[str]) -> dict[str, bytes]:
    """Every gallery PNG, keyed by `key`."""
    out: dict[str, bytes] = {}
    for i, (g, lab) in enumerate(zip(galleries, labels)):
        if not g:
            continue
        for gkey, shown in g.threat.items():
            e = g.threat_entries[gkey]
            out[key(i, gkey)] = threat_figure(f"{threat_label(e.get('norm'), e.get('eps'))} — {lab}", shown)
        corr = corruption_figure(f"Corruptions — {lab}", g)
        if corr:
            out[key(i, "corruptions")] = corr
        noisy = smoothing_figure(f"Randomized smoothing — {lab}", g)
        if noisy:
            out[key(i, "smoothing")] = noisy
    return out


INTRO = (
    f"Up to {SHOWN} samples per threat model, chosen by a keyed seed (the same for any batch size, resume "
    "or number of ranks), broken ones first: clean | adversarial (the point the engine scored) | the "
    "perturbation amplified to the full range. Labels and predictions come from the per-sample record; "
    "the corruptions and the smoothing noise are shown on the first chosen sample."
)


def _rows(g: Gallery, i: int) -> list[tuple[str, str, list[str]]]:
    """(figure key, alt text, one text line per sample) of run i's gallery figures."""
    out = []
    for gkey, shown in g.threat.items():
        lines = [
            f"sample #{s.id}: true {s.label}, clean pred {_pred(s.clean_pred)}, adversarial pred "
            f"{_pred(s.adv_pred)} — " + (f"broken by {s.entry.split('@')[0]}" if s.broken else "robust")
            for s in shown
        ]
        out.append((key(i, gkey), f"{key_label(gkey)}: clean, adversarial, perturbation", lines))
    if g.sample is not None and g.corrupted:
        out.append((key(i, "corruptions"), f"sample #{g.sample[0]} under every corruption and severity", []))
    if g.sample is not None and g.noisy:
        out.append((key(i, "smoothing"), f"sample #{g.sample[0]} under the smoothing noise", []))
    return out


def markdown(
    galleries: Sequence[Gallery | None], labels: Sequence[str], images: Mapping[str, str], esc: Callable[[object], str]
) -> list[str]:
    """The gallery section of report.md: links to the PNGs beside it, the samples as text."""
    if not any(g is not None for g in galleries):
        return []
    lines = ["## Gallery", "", INTRO, ""]
    for i, (g, lab) in enumerate(zip(galleries, labels)):
        if g is None:
            continue
        lines += [f"### {esc(lab)}", ""]
        for k, alt, text in _rows(g, i):
            if k in images:
                lines += [f"![{esc(alt)}]({images[k]})", ""]
                lines += [f"- {esc(t)}" for t in text] + ([""] if text else [])
        lines += [f"> {esc(n)}" for n in g.notes] + ([""] if g.notes else [])
    return lines


def html(
    galleries: Sequence[Gallery | None],
    labels: Sequence[str],
    figs: Mapping[str, bytes],
    h: Callable[[object], str],
    img: Callable[[bytes | None, str], str],
) -> str:
    """The gallery section of report.html, its PNGs embedded."""
    if not any(g is not None for g in galleries):
        return ""
    parts = ['<h2 id="gallery">Gallery</h2>', f"<p>{h(INTRO)}</p>"]
    for i, (g, lab) in enumerate(zip(galleries, labels)):
        if g is None:
            continue
        parts.append(f'<h3 id="gallery-{i}">{h(lab)}</h3>')
        for k, alt, text in _rows(g, i):
            if k in figs:
                what = part_name(k.split("/", 2)[-1])
                parts.append(f'<figure class="gallery" data-run="{i}" data-what="{h(what)}">{img(figs[k], alt)}')
                if text:
                    parts.append("<figcaption><ul>" + "".join(f"<li>{h(t)}</li>" for t in text) + "</ul></figcaption>")
                parts.append("</figure>")
        parts += [f'<p class="meta">{h(n)}</p>' for n in g.notes]
    return "\n".join(parts)
