"""Training conditions: label noise (``sym:RATE``, ``asym:RATE``) and class imbalance (``exp:RHO``, ``step:RHO``).

Both act on the training split only and are seeded by the training seed; the test split (and so every
evaluation) keeps its clean, balanced labels. Imbalance is applied first, then label noise on the
remaining samples. What was done is returned as a JSON-able ``condition`` dict that the trainer writes
into the checkpoint sidecar.

Label noise (exact counts, not Bernoulli draws, so the realised rate equals the requested one up to
rounding; the papers' settings are listed in docs/objectives.md):
- ``sym:RATE``: round(RATE * n) samples, chosen uniformly, get a label drawn uniformly from the *other*
  K - 1 classes (so every chosen label is really wrong).
- ``asym:RATE``: class-pair flips; in every source class c, round(RATE * n_c) samples get label pair[c].
  Pairs per dataset (`ASYM_PAIRS`): digits/MNIST 2->7, 3->8, 5<->6, 7->1 (Patrini et al. 2017);
  CIFAR-10 truck->automobile, bird->airplane, deer->horse, cat<->dog (Patrini et al. 2017; the ODNL and
  LogitClip setting); any other dataset c -> (c + 1) mod K (ODNL's CIFAR-100 code does this too).
- ``asym-super:RATE``: CIFAR-100's superclass-circular flips (each fine class -> the next fine class of
  its superclass; the common CIFAR-100 asymmetric setting), needs ``coarse_labels_of_fine``.
- ``dep:RATE``: feature-dependent noise as ODNL's ``DependentLabelGenerator``: round(RATE * n) samples
  get a label drawn from softmax(x W_y) over the other classes (W_y standard normal, seeded per class;
  x the [0, 1] pixels, where ODNL uses its normalised tensors).
- ``open:RATE``: open-set noise: round(RATE * n) images are replaced by out-of-distribution images
  (seeded smooth noise here; ODNL uses CIFAR-100 / 300K Random Images for CIFAR-10), labels kept.

Imbalance (training split only; n_max = the smallest class count of the data, so every target count
can be met):
- ``exp:RHO``: long-tailed, n_c = floor(n_max * RHO^(-c / (K - 1))) (Cao et al. 2019 / Cui et al. 2019);
  class 0 is the head, class K-1 the tail with n_max / RHO.
- ``step:RHO``: the first ceil(K/2) classes keep n_max, the other floor(K/2) (the minority half) get
  floor(n_max / RHO).
Samples kept per class are a seeded random subset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from harness.data.base import ImageDataset
from harness.errors import UsageError
from harness.rng import torch_generator

NOISE_KINDS = ("sym", "asym", "asym-super", "dep", "open")
NOISE_FORMS = "sym:RATE, asym:RATE, asym-super:RATE, dep:RATE or open:RATE with RATE in [0, 1], e.g. sym:0.4"
IMBALANCE_FORMS = "exp:RHO or step:RHO with RHO >= 1, e.g. exp:10"

_MNIST_PAIRS = {2: 7, 3: 8, 5: 6, 6: 5, 7: 1}
# CIFAR-10 class ids: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 7 horse, 9 truck.
_CIFAR10_PAIRS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
ASYM_PAIRS: dict[str, dict[int, int]] = {"digits": _MNIST_PAIRS, "mnist": _MNIST_PAIRS, "cifar10": _CIFAR10_PAIRS}


@dataclass
class ConditionedData:
    """The training set as trained on, its clean labels, and the record for the sidecar."""

    train: ImageDataset
    clean_labels: Tensor
    condition: dict[str, Any] = field(default_factory=dict)


def _parse(spec: str, kinds: tuple[str, ...], what: str, forms: str) -> tuple[str, float]:
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise UsageError(f"bad {what} spec {spec!r}", f"use {forms}")
    kind, _, value = spec.partition(":")
    kind = kind.strip().lower()
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"bad {what} spec {spec!r}: {value!r} is not a number", f"use {forms}") from None
    if kind not in kinds or not math.isfinite(number):
        raise UsageError(f"bad {what} spec {spec!r}", f"use {forms}")
    return kind, number


def parse_label_noise(spec: str) -> tuple[str, float]:
    """``"sym:0.4"`` -> ``("sym", 0.4)``; anything else is a UsageError naming the accepted forms."""
    kind, rate = _parse(spec, NOISE_KINDS, "label-noise", NOISE_FORMS)
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"bad label-noise spec {spec!r}: rate {rate} outside [0, 1]", f"use {NOISE_FORMS}")
    return kind, rate


def parse_imbalance(spec: str) -> tuple[str, float]:
    """``"exp:10"`` -> ``("exp", 10.0)``; anything else is a UsageError naming the accepted forms."""
    kind, rho = _parse(spec, ("exp", "step"), "imbalance", IMBALANCE_FORMS)
    if rho < 1.0:
        raise UsageError(f"bad imbalance spec {spec!r}: ratio {rho} < 1", f"use {IMBALANCE_FORMS}")
    return kind, rho


def asym_pairs(dataset: str, num_classes: int) -> dict[int, int]:
    """Source class -> flipped class for asymmetric noise (documented per dataset, else c -> c+1 mod K)."""
    pairs = ASYM_PAIRS.get(dataset)
    if pairs is not None and max(max(pairs), max(pairs.values())) < num_classes:
        return dict(pairs)
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def imbalance_counts(kind: str, rho: float, n_max: int, num_classes: int) -> list[int]:
    """Target sample count per class for an imbalance profile."""
    if kind == "exp":
        k1 = max(1, num_classes - 1)
        return [max(1, math.floor(n_max * rho ** (-c / k1) + 1e-9)) for c in range(num_classes)]
    if kind == "step":
        head = math.ceil(num_classes / 2)
        return [n_max if c < head else max(1, math.floor(n_max / rho + 1e-9)) for c in range(num_classes)]
    raise UsageError(f"unknown imbalance profile {kind!r}", f"use {IMBALANCE_FORMS}")


def _with(ds: ImageDataset, rows: Tensor | None = None, y: Tensor | None = None, **info: Any) -> ImageDataset:
    base = ds.subset(rows) if rows is not None else ds
    return ImageDataset(
        base.name,
        base.x,
        base.y if y is None else y,
        base.num_classes,
        base.split,
        base.class_names,
        base.ids,
        dict(base.eps_grid),
        dict(base.train_eps),
        {**base.info, **info},
    )


def apply_imbalance(ds: ImageDataset, spec: str, seed: int) -> tuple[ImageDataset, dict[str, Any]]:
    """A seeded class-imbalanced subset of ``ds`` following the profile of ``spec``."""
    kind, rho = parse_imbalance(spec)
    counts = ds.class_counts()
    present = counts[counts > 0]
    if len(present) == 0:
        raise UsageError("cannot apply class imbalance to an empty dataset")
    n_max = int(present.min())
    target = imbalance_counts(kind, rho, n_max, ds.num_classes)
    gen = torch_generator(seed, "imbalance", spec)
    keep = []
    for c in range(ds.num_classes):
        rows = (ds.y == c).nonzero().squeeze(1)
        keep.append(rows[torch.randperm(len(rows), generator=gen)[: target[c]]])
    rows = torch.sort(torch.cat(keep)).values
    out = _with(ds, rows, imbalance=spec)
    record = {
        "spec": spec,
        "profile": kind,
        "rho": rho,
        "n_max": n_max,
        "class_counts": [int(v) for v in out.class_counts()],
    }
    return out, record


def apply_label_noise(ds: ImageDataset, spec: str, seed: int) -> tuple[ImageDataset, dict[str, Any]]:
    """``ds`` with seeded noise of the `parse_label_noise` form (exact counts); ids unchanged.

    ``open`` replaces images (labels kept); every other kind changes labels only.
    """
    kind, rate = parse_label_noise(spec)
    y = ds.y.clone()
    k = ds.num_classes
    gen = torch_generator(seed, "label-noise", spec)
    record: dict[str, Any] = {"spec": spec, "kind": kind, "rate": rate}
    if kind in ("sym", "dep", "open"):
        if k < 2:
            raise UsageError(f"{kind} label noise needs at least 2 classes")
        m = round(rate * len(y))
        rows = torch.randperm(len(y), generator=gen)[:m]
        if kind == "sym":
            shift = torch.randint(1, k, (m,), generator=gen)  # uniform over the k - 1 wrong classes
            y[rows] = (ds.y[rows] + shift) % k
        elif kind == "dep":
            y[rows] = _dependent_labels(ds, rows, seed, spec)
        else:
            out = _with(ds, y=y, label_noise=spec)
            out.x = _open_images(ds, rows, seed, spec)
            record.update(n=len(y), replaced=m, actual_rate=m / max(1, len(y)), images="seeded smooth noise")
            return out, record
    else:
        if kind == "asym":
            pairs = asym_pairs(ds.name, k)
        else:
            pairs = superclass_pairs(ds)
        for c in sorted(pairs):
            src = (ds.y == c).nonzero().squeeze(1)
            m = round(rate * len(src))
            y[src[torch.randperm(len(src), generator=gen)[:m]]] = pairs[c]
        record["pairs"] = {str(a): b for a, b in sorted(pairs.items())}
    flipped = int((y != ds.y).sum())
    record.update(n=len(y), flipped=flipped, actual_rate=flipped / max(1, len(y)))
    return _with(ds, y=y, label_noise=spec), record


def superclass_pairs(ds: ImageDataset) -> dict[int, int]:
    """CIFAR-100's superclass-circular flips: each fine class -> the next fine class of its superclass.

    Within a superclass (fine classes sorted by id) the last wraps to the first. Needs the data's
    ``info["coarse_labels_of_fine"]`` (CIFAR-100 carries it).
    """
    coarse = ds.info.get("coarse_labels_of_fine")
    if not isinstance(coarse, (list, tuple)) or len(coarse) != ds.num_classes:
        raise UsageError(
            f"asym-super noise needs a class hierarchy; dataset {ds.name!r} has none",
            "use it on cifar100 (fine labels), or use asym:RATE",
        )
    pairs: dict[int, int] = {}
    for g in sorted(set(coarse)):
        members = [c for c in range(ds.num_classes) if coarse[c] == g]
        for i, c in enumerate(members):
            if len(members) > 1:
                pairs[c] = members[(i + 1) % len(members)]
    return pairs


def _dependent_labels(ds: ImageDataset, rows: Tensor, seed: int, spec: str) -> Tensor:
    """ODNL's feature-dependent flips (``DependentLabelGenerator``): for a chosen sample of class y, the
    new label ~ softmax(x W_y) over the other classes, W_y (D x K) standard normal, seeded per class."""
    x, y = ds.batch(rows)
    flat = x.flatten(1).float()
    out = torch.empty(len(rows), dtype=torch.int64)
    gen = torch_generator(seed, "dep-draw", spec)
    for c in torch.unique(y).tolist():  # one projection per class present: D x K memory, not K x D x K
        sel = (y == c).nonzero().squeeze(1)
        w = torch.randn(flat.shape[1], ds.num_classes, generator=torch_generator(seed, "dep-w", spec, c))
        a = flat[sel] @ w
        a[:, c] = -math.inf
        out[sel] = torch.multinomial(torch.softmax(a, 1), 1, generator=gen).squeeze(1)
    return out


def _open_images(ds: ImageDataset, rows: Tensor, seed: int, spec: str) -> Tensor:
    """The training images with ``rows`` replaced by out-of-distribution images, labels kept.

    The replacements are seeded smooth noise (uniform noise at 1/4 resolution, bilinearly upsampled):
    images of no class, of the data's shape. ODNL uses CIFAR-100 / 300K Random Images for CIFAR-10.
    """
    import torch.nn.functional as F

    from harness.rng import keyed_uniform, stream_seed

    x_all, _ = ds.batch(slice(None))
    x = x_all.clone()
    c, h, w = x.shape[1:]
    small = keyed_uniform(stream_seed(seed, "open", spec), ds.ids[rows], (c, max(1, h // 4), max(1, w // 4)))
    x[rows] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1).to(x.dtype)
    return x


def apply_conditions(
    ds: ImageDataset, *, label_noise: str | None = None, imbalance: str | None = None, seed: int = 0
) -> ConditionedData:
    """Imbalance then label noise on a training set; ``condition`` is empty when neither is given."""
    condition: dict[str, Any] = {}
    if imbalance:
        ds, condition["imbalance"] = apply_imbalance(ds, imbalance, seed)
    clean = ds.y.clone()
    if label_noise:
        ds, condition["label_noise"] = apply_label_noise(ds, label_noise, seed)
    if condition:
        condition["seed"] = seed
    return ConditionedData(ds, clean, condition)
