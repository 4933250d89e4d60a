"""Collects the gallery side file (`harness.records.gallery`) during the chunk loop.

The samples are the `POOL` sample ids with the smallest keyed hash of (seed, id), drawn over the
whole dataset before anything runs: the choice depends on neither the batch size, the chunk order,
a resume nor the number of ranks, and every rank computes the same one. The runners hand over the
points the engine has just scored (`attack`, `corruption`) and a smoothing entry gets one draw of its
noise (`smoothing`); `write` stores the chunk's part before the chunk itself is written. Nothing here
changes a record column or the random streams of the evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from harness.errors import HarnessError
from harness.logits import finite_rows
from harness.records.gallery import POOL, fits, to_uint8, write_part
from harness.records.kinds import entry_kind
from harness.rng import keyed_bits, keyed_normal, stream_seed
from harness.suites import Entry, group_entries


def choose(ids: Tensor, seed: int, size: int = POOL) -> np.ndarray:
    """The ``size`` ids with the smallest keyed hash of (seed, id), in that order (ties: smaller id first)."""
    ids64 = ids.to(torch.int64).cpu()
    key = keyed_bits(stream_seed(seed, "gallery"), ids64, 1)[:, 0].numpy()
    order = np.lexsort((ids64.numpy(), key))[:size]
    return ids64.numpy()[order]


class GalleryCollector:
    """The chosen samples' images of the current chunk; a no-op when off (``--no-gallery``, huge images)."""

    def __init__(self, ids: Tensor, seed: int, entries: list[Entry], shape: tuple[int, ...], enabled: bool) -> None:
        self.on = bool(enabled) and fits(tuple(shape)) and len(ids) > 0
        self.shape = tuple(shape)
        threat = [(g, m) for g, m in group_entries(entries) if entry_kind(entries[m[0]].kind).threat_model]
        self.groups = [g for g, _ in threat]
        self.group_of = {k: t for t, (_, members) in enumerate(threat) for k in members}
        self.pool = choose(ids, seed) if self.on else np.zeros(0, np.int64)
        self.order = {int(i): r for r, i in enumerate(self.pool)}
        self.begin(torch.zeros(0, dtype=torch.int64), torch.zeros(0, *self.shape))

    def begin(self, ids: Tensor, x: Tensor) -> None:
        """A new chunk: its sample ids and clean images (on the host)."""
        self.rows: dict[int, int] = {}  # chunk row -> place in this chunk's part
        self.adv: dict[tuple[int, int], tuple[int, np.ndarray]] = {}  # (threat model, place) -> (entry, point)
        self.corr: dict[int, np.ndarray] = {}
        self.noisy: dict[int, tuple[np.ndarray, int, float]] = {}
        self.ids, self.clean = np.zeros(0, np.int64), np.zeros((0, *self.shape), np.float32)
        if not self.on:
            return
        hit = np.nonzero(np.isin(ids.numpy(), self.pool))[0]
        self.rows = {int(r): m for m, r in enumerate(hit)}
        self.ids = ids.numpy()[hit].astype(np.int64)
        self.clean = x[hit].float().numpy().copy()

    def _here(self, batch: Any) -> list[tuple[int, int]]:
        """(position in the batch, place in the part) of the chosen samples in ``batch`` (no device sync)."""
        if not self.rows:
            return []
        start = batch.sl.start or 0
        return [(r - start, m) for r, m in self.rows.items() if start <= r < start + len(batch)]

    def _first(self, batch: Any) -> int | None:
        """The batch position of the first chosen sample (the one corruptions and noise are shown on)."""
        return next((p for p, m in self._here(batch) if self.order[int(self.ids[m])] == 0), None)

    def attack(self, k: int, batch: Any, act: Tensor, points: Tensor) -> None:
        """Attack k returned (and the engine scored) ``points`` for the batch positions ``act``."""
        here = self._here(batch)
        if not here or k not in self.group_of:
            return
        at = {int(p): j for j, p in enumerate(act.cpu().numpy())}  # a sync only in batches with a chosen sample
        for p, m in here:
            j = at.get(p)
            if j is not None:  # the last point scored for the sample: the one that broke it, if one did
                self.adv[(self.group_of[k], m)] = (k, points[j].detach().float().cpu().numpy())

    def corruption(self, k: int, batch: Any, points: Tensor) -> None:
        """Corruption k's images of the batch (``points``, scored by the engine)."""
        p = self._first(batch)
        if p is not None:
            self.corr[k] = to_uint8(points[p].detach().float().cpu().numpy())

    def smoothing(self, engine: Any, k: int, batch: Any) -> None:
        """One keyed draw of smoothing entry k's noise on the first chosen sample, and the base model on it."""
        p = self._first(batch)
        sigma = getattr(engine.attackers[k], "sigma", None)
        if p is None or not isinstance(sigma, int | float):
            return
        x = batch.x[p : p + 1]
        e = keyed_normal(stream_seed(engine.entry_seed(k), "gallery"), batch.ids[p : p + 1], tuple(x.shape[1:]))
        xn = x + float(sigma) * e.to(x.device, x.dtype)
        devices = [x.device] if x.device.type == "cuda" else []
        pred = -1
        # The extra forward must not move the random stream a randomised model draws from.
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            try:
                z = engine.verdict(xn)
                if bool(finite_rows(z)[0]):
                    pred = int(z.argmax(1)[0])
            except HarnessError:
                pass
        self.noisy[k] = (to_uint8(xn[0].float().cpu().numpy()), pred, float(sigma))

    def write(self, directory: str | Path, cid: int, config_hash: str) -> None:
        """The chunk's part (when it holds a chosen sample), written before the chunk."""
        if not self.on or not self.rows:
            return
        m = len(self.ids)
        adv = np.full((len(self.groups), m, *self.shape), np.nan, np.float32)
        adv_entry = np.full((len(self.groups), m), -1, np.int16)
        for (t, j), (k, img) in self.adv.items():
            adv[t, j], adv_entry[t, j] = img, k
        arrays = {
            "ids": self.ids,
            "order": np.array([self.order[int(i)] for i in self.ids], np.int16),
            "clean": self.clean,
            "adv": adv,
            "adv_entry": adv_entry,
        }
        if self.corr:
            ks = sorted(self.corr)
            arrays |= {"corr": np.stack([self.corr[k] for k in ks]), "corr_entry": np.array(ks, np.int16)}
        if self.noisy:
            ks = sorted(self.noisy)
            arrays |= {
                "noisy": np.stack([self.noisy[k][0] for k in ks]),
                "noisy_entry": np.array(ks, np.int16),
                "noisy_pred": np.array([self.noisy[k][1] for k in ks], np.int16),
                "noisy_sigma": np.array([self.noisy[k][2] for k in ks], np.float32),
            }
        write_part(directory, cid, arrays, {"config_hash": config_hash, "groups": self.groups})
