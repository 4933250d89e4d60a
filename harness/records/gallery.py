"""The gallery side file: the images behind a few samples of the record, for the report's galleries.

Beside the record, in ``records/gallery/``, one part per record chunk that holds a chosen sample:
``part-XXXXXX.npz`` (images) and ``part-XXXXXX.json`` (config hash, sha256 of the npz, what the
arrays hold), both written atomically, the json last, before the chunk itself, so a finished chunk
has its part. The part holds only images and which entry produced them; labels, predictions and
verdicts are read from the record, which stays the one source of every number. `read_gallery`
checks each part against the record (config hash, bytes, sample ids) and each adversarial image
against its threat model (finite, in [0, 1], inside the ε-ball): a part that fails is left out
with a note, never shown.

Arrays of a part holding ``m`` chosen samples (``T`` threat models, ``C`` corruption and ``S``
smoothing entries; images ``(channels, height, width)``):

- ``ids`` int64 (m,), ``order`` int16 (m,): the samples and their place in the keyed choice;
- ``clean`` float32 (m, ...): the clean images;
- ``adv`` float32 (T, m, ...): per threat model the last point the engine scored for the sample
  (the one that broke it, if one did; NaN where it was not attacked), ``adv_entry`` int16 (T, m)
  the entry that returned it (-1: none);
- ``corr`` uint8 (C, ...), ``noisy`` uint8 (S, ...), ``noisy_pred`` int16 (S,): in the part of the
  first chosen sample only, its corrupted images and one draw of each smoothing noise (clipped to
  [0, 1] and rounded to 8 bits: they are for display, their verdicts are in the record), with the
  base model's prediction on that draw (``noisy_pred``) and the noise's σ (``noisy_sigma``).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.atomic import sha256_bytes, write_bytes, write_json
from harness.errors import HarnessError
from harness.paths import regular_file, safe_join
from harness.records import schema as col
from harness.records.store import RecordStore, read_index
from harness.threat import ThreatModel, check_contract

GALLERY_DIR = "gallery"
GALLERY_SCHEMA = 1
# Samples shown per threat model, and the candidates stored (the report prefers broken ones).
SHOWN = 4
POOL = 16
# Images above this many values (3 x 224 x 224, an ImageNet image) or with other than 1 or 3
# channels get no gallery: the side file stays below POOL * (1 + threat models) * 600 KB.
MAX_IMAGE_ELEMENTS = 3 * 224 * 224
CHANNELS = (1, 3)
# A part larger than this is not read (a damaged or foreign file; real parts are far smaller).
MAX_PART_BYTES = 256 * 2**20


def fits(shape: tuple[int, ...]) -> bool:
    """Whether images of ``shape`` (C, H, W) get a gallery (`MAX_IMAGE_ELEMENTS`, `CHANNELS`)."""
    return len(shape) == 3 and shape[0] in CHANNELS and int(np.prod(shape)) <= MAX_IMAGE_ELEMENTS


def to_uint8(x: np.ndarray) -> np.ndarray:
    """An image for display only: clipped to [0, 1], 8 bits."""
    return np.round(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)


def _paths(directory: Path, cid: int) -> tuple[Path, Path]:
    return directory / f"part-{cid:06d}.npz", directory / f"part-{cid:06d}.json"


def write_part(directory: str | Path, cid: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Chunk ``cid``'s part: the npz, then its json (with the npz's sha256) last, both atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    dp, mp = _paths(Path(directory), cid)
    write_bytes(dp, data)
    write_json(mp, {"schema": GALLERY_SCHEMA, "chunk": cid, **meta, "sha256": sha256_bytes(data)})


@dataclass
class Shown:
    """One sample of a threat model's gallery: its images and what the record says of them."""

    id: int
    label: int
    clean: np.ndarray
    clean_pred: int
    adv: np.ndarray
    adv_pred: int
    broken: bool
    entry: str  # the key of the entry whose point this is


@dataclass
class Corrupted:
    key: str
    name: str
    severity: int
    image: np.ndarray  # uint8
    pred: int


@dataclass
class Noisy:
    key: str
    sigma: float
    image: np.ndarray  # uint8
    base_pred: int  # the base model on this draw
    pred: int  # the smoothed prediction (-1: abstained)
    radius: float  # certified L2 radius (NaN: none)


@dataclass
class Gallery:
    """What the side file shows, checked against the record."""

    threat: dict[str, list[Shown]] = field(default_factory=dict)  # group key -> samples, broken first
    threat_entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # group key -> first entry
    sample: tuple[int, int, np.ndarray, int] | None = None  # (id, label, clean, clean pred) of the next two
    corrupted: list[Corrupted] = field(default_factory=list)
    noisy: list[Noisy] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # parts left out, and why

    def __bool__(self) -> bool:
        return bool(self.threat or self.corrupted or self.noisy)


class _Bad(Exception):
    """A part that does not match the record: left out with this reason."""


def read_gallery(records: str | Path, config_hash: str | None = None) -> Gallery | None:
    """The gallery of the record in ``records`` (None: the run kept no side file).

    Parts that are torn, from another evaluation, or whose images break their threat model are left
    out and named in `Gallery.notes`.
    """
    rec = Path(records)
    gdir = safe_join(rec, GALLERY_DIR, what="gallery folder")
    if not gdir.is_dir():
        return None
    metas = sorted(gdir.glob("part-*.json"))
    if not metas:
        return None
    idx = read_index(rec)
    if config_hash is not None and idx["config_hash"] != config_hash:
        return Gallery(notes=["the gallery's record belongs to another evaluation: no gallery shown"])
    store = RecordStore(rec, idx["config_hash"], idx["chunk_size"], idx["n_total"])
    entries: list[dict[str, Any]] = idx.get("entries", [])
    out = Gallery()
    candidates: dict[str, list[tuple[int, int, Shown]]] = {}
    for mp in metas:
        try:
            _read_part(mp, store, entries, out, candidates)
        except _Bad as e:
            out.notes.append(f"gallery part {mp.name} left out: {e}")
    for gkey, items in candidates.items():
        # Broken samples first (what the attacks found), then robust ones, each in the keyed order.
        items.sort(key=lambda t: (t[0], t[1]))
        out.threat[gkey] = [s for _, _, s in items[:SHOWN]]
        first = next(e for e in entries if e.get("group") == gkey)
        out.threat_entries[gkey] = first
    out.threat = {g: out.threat[g] for g in dict.fromkeys(e["group"] for e in entries) if g in out.threat}
    return out


def _read_part(
    mp: Path,
    store: RecordStore,
    entries: list[dict[str, Any]],
    out: Gallery,
    candidates: dict[str, list[tuple[int, int, Shown]]],
) -> None:
    dp = mp.with_suffix(".npz")
    try:
        for p in (mp, dp):  # never open a pipe, a device or a folder named like a part
            regular_file(p, "gallery part")
    except HarnessError as e:
        raise _Bad(e.what) from None
    try:
        meta = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _Bad(f"unreadable metadata ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("schema") != GALLERY_SCHEMA:
        raise _Bad("unknown side-file schema")
    if meta.get("config_hash") != store.config_hash:
        raise _Bad("written by another evaluation")
    cid = meta.get("chunk")
    if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid < store.n_chunks:
        raise _Bad(f"chunk {cid!r} is not a chunk of the record")
    try:
        if dp.stat().st_size > MAX_PART_BYTES:
            raise _Bad(f"larger than {MAX_PART_BYTES} bytes")
        data = dp.read_bytes()
    except OSError as e:
        raise _Bad(f"its images are unreadable ({e.strerror or e})") from None
    if sha256_bytes(data) != meta.get("sha256"):
        raise _Bad("its images do not match its metadata (torn or edited)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _Bad(f"not a readable npz ({e})") from None
    try:
        chunk = store.read(cid)
    except HarnessError as e:
        raise _Bad(f"its record chunk is unreadable: {e.what}") from None
    row_of = {int(i): r for r, i in enumerate(chunk[col.ID])}
    ids, order, clean = a.get("ids"), a.get("order"), a.get("clean")
    if ids is None or order is None or clean is None or clean.ndim != 4 or len(ids) != len(clean):
        raise _Bad("ids, order or clean images missing or misshapen")
    if clean.dtype != np.float32 or not np.isfinite(clean).all() or clean.min() < 0 or clean.max() > 1:
        raise _Bad("clean images are not float32 in [0, 1]")
    rows = [row_of.get(int(i)) for i in ids]
    if any(r is None for r in rows):
        raise _Bad("it names samples its record chunk does not hold")
    keys = [e["key"] for e in entries]
    groups = meta.get("groups", [])
    adv, adv_entry = a.get("adv"), a.get("adv_entry")
    if not isinstance(groups, list) or adv is None or adv_entry is None or adv.shape[:2] != (len(groups), len(ids)):
        raise _Bad("adversarial images missing or misshapen")
    label, cpred = chunk[col.LABEL], chunk[col.CLEAN_PRED]
    for t, gkey in enumerate(groups):
        for j, r in enumerate(rows):
            k = int(adv_entry[t, j])
            if k < 0:
                continue
            if k >= len(entries) or entries[k].get("group") != gkey or entries[k].get("kind") != "attack":
                raise _Bad(f"entry {k} is not an attack of {gkey}")
            status, pred = int(chunk[col.status(k)][r]), int(chunk[col.pred(k)][r])
            if status not in (0, 1):
                raise _Bad(f"the record did not attack sample {int(ids[j])} with {keys[k]}")
            e = entries[k]
            try:
                check_contract(
                    torch.from_numpy(clean[j : j + 1]),
                    torch.from_numpy(adv[t, j : j + 1]),
                    ThreatModel(e["norm"], float(e["eps"])),
                    who=f"the gallery image of sample {int(ids[j])} under {keys[k]}",
                )
            except HarnessError as err:
                raise _Bad(err.what) from None
            shown = Shown(int(ids[j]), int(label[r]), clean[j], int(cpred[r]), adv[t, j], pred, status == 0, keys[k])
            candidates.setdefault(str(gkey), []).append((status, int(order[j]), shown))
    first = np.nonzero(order == 0)[0]
    if not len(first):
        return
    j, r = int(first[0]), rows[int(first[0])]
    out.sample = (int(ids[j]), int(label[r]), clean[j], int(cpred[r]))
    corr, corr_entry = a.get("corr"), a.get("corr_entry")
    if corr is not None and corr_entry is not None and len(corr) == len(corr_entry):
        for img, k in zip(corr, corr_entry):
            e = entries[int(k)] if 0 <= int(k) < len(entries) else {}
            if e.get("kind") != "corruption" or img.dtype != np.uint8:
                raise _Bad(f"entry {int(k)} is not a corruption")
            sev = e.get("severity")
            out.corrupted.append(Corrupted(e["key"], e["name"], int(sev or 0), img, int(chunk[col.pred(int(k))][r])))
    noisy, noisy_entry = a.get("noisy"), a.get("noisy_entry")
    noisy_pred, noisy_sigma = a.get("noisy_pred"), a.get("noisy_sigma")
    if noisy is not None and noisy_entry is not None and noisy_pred is not None and noisy_sigma is not None:
        for img, k, bp, sigma in zip(noisy, noisy_entry, noisy_pred, noisy_sigma):
            e = entries[int(k)] if 0 <= int(k) < len(entries) else {}
            if e.get("kind") != "smoothing" or img.dtype != np.uint8:
                raise _Bad(f"entry {int(k)} is not a smoothing entry")
            out.noisy.append(
                Noisy(
                    e["key"],
                    float(sigma),
                    img,
                    int(bp),
                    int(chunk[col.pred(int(k))][r]),
                    float(chunk[col.margin(int(k))][r]),
                )
            )
