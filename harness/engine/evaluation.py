"""The evaluation engine: one suite over one (model, dataset), a streamed per-sample record, a Result.

Per sample and suite entry the record holds a status (1 robust, 0 broken by this entry, -1 not
attacked because already broken: wrong when clean, or broken by an earlier attack of the same
threat model), the margin at the returned point and the prediction, and for calibration the
max-softmax confidence, log p_y and sum p^2 at that point (``c{k}``, ``clean_cal``; raw then
temperature-scaled when the suite asks for it). Smoothing entries record the certified radius.
Worst-case robust accuracy of a threat model is the per-sample AND over its attacks. Every
adversarial batch is re-verified here (ball, box, finiteness) and scored with the engine's own
forward pass; a row of non-finite logits is a wrong prediction (margin -inf, prediction
`harness.engine.verdicts.NO_PREDICTION`), reported per entry as a ``nonfinite-logits`` finding.

Hostile models (docs/checks.md): every model call goes through `harness.guard.ModelGuard`, so a
model that raises during an attack ends in one `ModelError` naming the entry. The input gradients
are probed on the first batch before anything is planned: without usable ones, gradient attacks
are skipped (none at all) or distrusted (zero), Square at the AutoAttack-standard budget joins every
threat model, and each threat model records what its number rests on (``attack_basis``). A
surrogate (`harness.surrogate`) gives gradient attacks BPDA or transfer gradients; verdicts stay
the model's.

Work is done chunk by chunk (fixed ranges of dataset positions); each finished chunk is written
atomically, so an interrupted run resumes at the first missing chunk and, because every random
draw is keyed by (seed, global sample id, entry), gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import __version__, distributed, environment, errors
from harness.analyses import ANALYSES, RunView
from harness.analyses.calibration import heldout_dataset
from harness.atomic import temporary_directory, write_json, write_text
from harness.batching import CPU_CAP, BatchRunner, autotune_batch_size, is_oom
from harness.calibration import fit_temperature, prob_stats, score_to_prob_of
from harness.checks import (
    AUTO_SQUARE_P_INIT,
    AUTO_SQUARE_QUERIES,
    EOT_AUTO_SAMPLES,
    GradientProbe,
    check_logits,
    gradient_probe,
    precheck,
)
from harness.data.base import ImageDataset, check_image_range
from harness.engine.aggregation import nonfinite_findings, tally, tie_findings
from harness.engine.config import EvalConfig, check_run_name, config_hash, model_hash, run_lock
from harness.engine.gallery import GalleryCollector
from harness.engine.nested import NestedPlan, Witnesses, evaluation_order
from harness.engine.runners import Batch, EntryRunner, runner_for
from harness.engine.verdicts import Scored, score_points
from harness.engine.verification import verification, verification_findings
from harness.errors import DataError, HarnessError, ModelError, UsageError
from harness.faults import kill_point
from harness.guard import ModelGuard, backward_error
from harness.logits import finite_rows
from harness.paths import safe_join
from harness.plan import entry_label
from harness.precision import SearchModel, frozen
from harness.progress import Quiet, evaluation_progress
from harness.records import RecordStore, drop_set_aside, restore_set_aside, result_config_hash, set_aside_outputs
from harness.records import schema as col
from harness.records.gallery import GALLERY_DIR
from harness.records.kinds import entry_kind
from harness.reporting.markdown import render_markdown
from harness.results import Accuracy, Finding, GroupResult, Result
from harness.rng import stream_seed
from harness.suites import Entry, Suite, load_suite
from harness.surrogate import BPDA, SurrogateSpec, build_surrogate
from harness.ties import TIE_ULPS, ieee_fp32

# Samples of the first batch the precheck and the gradient probe look at.
PRECHECK_SAMPLES = 64
# A surrogate that agrees with the model on fewer clean predictions than this is flagged.
SURROGATE_MIN_AGREEMENT = 0.5
OBFUSCATED_WHEN = ("obfuscated-gradients",)
# Label of the Square entries added when gradients are obfuscated (harness.checks.gradient_findings).
AUTO_SQUARE_LABEL = "square-auto"


class Evaluation:
    """One evaluation, bound to its run directory; `run` is resumable."""

    def __init__(
        self,
        model: nn.Module,
        dataset: ImageDataset,
        suite: str | Suite = "quick",
        *,
        out: str | Path | None = None,
        name: str | None = None,
        config: EvalConfig | None = None,
        model_info: dict[str, Any] | None = None,
        surrogate: SurrogateSpec | None = None,
    ) -> None:
        self.config = config or EvalConfig()
        self.device = distributed.rank_device(self.config.device)
        self.was_training = model.training
        self.model = model.to(self.device).eval()
        self.dataset = dataset
        if len(dataset) == 0:
            raise DataError(f"dataset {dataset.name!r} has no samples", "check the dataset spec (n=, offset=, size=)")
        if self.config.max_samples is not None and self.config.max_samples < len(dataset):
            self.dataset = dataset.subset(slice(0, self.config.max_samples))
        self.suite = load_suite(suite)
        grid = {**self.dataset.eps_grid, **(self.config.eps or {})}
        self.entries = self.suite.resolve(grid)
        self._shown: Quiet = Quiet()  # the progress display while `run` computes chunks
        for e in self.entries:
            if e.threat is not None:
                e.threat.validate_for(self.dataset.shape)
        K = self.dataset.num_classes
        # What the attacks call; the verdicts call self.model (eager, fp32) through self.verdict.
        self.search = SearchModel(self.model, self.config.precision, self.config.compile)
        # Every model call of attacks, corruptions and verdicts goes through a guard (harness.guard).
        self.guarded = ModelGuard(self.search, K)
        self.verdict = ModelGuard(self.model, K)
        self.surrogate: nn.Module | None = None
        self.surrogate_info: dict[str, Any] | None = None
        if surrogate is not None:
            sur, info = build_surrogate(surrogate, self.model)
            self.surrogate = sur.to(self.device).eval()
            self.surrogate_info = {**info, "mode": self.config.surrogate_mode, "sha256_state": model_hash(sur)}
        self._attack_models: dict[tuple[str, bool], nn.Module] = {}
        # Input gradients at the first batch decide, before anything is planned, whether gradient
        # attacks can run at all and whether Square joins every threat model (obfuscated gradients).
        self.probe = self._probe_gradients()
        self.attackers = [e.build() for e in self.entries]
        auto = self._auto_entries()
        self.entries += auto
        self.attackers += [e.build() for e in auto]
        self.runners: list[EntryRunner] = [runner_for(e.kind) for e in self.entries]
        # Nested eps (harness.engine.nested): groups of a norm run in ascending eps; the plan is redone
        # once the precheck knows the skipped entries.
        self.order = evaluation_order(self.entries)
        self.nesting = NestedPlan.of(self.entries)
        ds = self.dataset
        self.gallery = GalleryCollector(ds.ids, self.config.seed, self.entries, ds.shape, self.config.gallery)
        self.batch_size: int = self.config.batch_size if isinstance(self.config.batch_size, int) else 0
        self.autotuned: int | None = None  # probed once per Evaluation (one model, one device)
        # Entries whose ``when`` names no finding the precheck raised: not run (set by _precheck).
        self.skipped: dict[int, str] = {}
        self.model_info = dict(model_info or {})
        if "sha256_state" not in self.model_info:  # a caller evaluating one model many times passes it
            self.model_info["sha256_state"] = model_hash(self.model)
        self.name = check_run_name(name) if name else None
        self.dir = safe_join(out or "runs", self.name, what="run name") if self.name else (Path(out) if out else None)
        self.eot = self.config.eot_samples or 1
        self.cal = dict(self.suite.calibration)
        self.temperature: float | None = None
        self.temperature_split: dict[str, Any] | None = None  # {"split", "n"} once a temperature is fitted
        self.config_hash = self._config_hash()

    # ---- gradients: probe, gradient-free fallback, surrogate -------------------------------------
    def _first_batch(self) -> tuple[Tensor, Tensor]:
        x0, y0 = self.dataset.batch(slice(0, min(PRECHECK_SAMPLES, len(self.dataset))))
        check_image_range(x0, "dataset images")
        return x0, y0

    def _probe_gradients(self) -> GradientProbe:
        """`gradient_probe` on the first batch (halved on out-of-memory), seeded for randomised models.

        Seeded so that every rank and every resume of the same evaluation takes the same decision
        (the decision adds suite entries, so it is part of the config hash).
        """
        if len(self.dataset) == 0:
            return GradientProbe(True)
        x0, y0 = self._first_batch()
        n0 = len(x0)
        devices = [self.device] if self.device.type == "cuda" else []
        while True:
            try:
                with torch.random.fork_rng(devices=devices), frozen(self.model):
                    torch.manual_seed(0)
                    return gradient_probe(self.model, x0[:n0].to(self.device), y0[:n0].to(self.device))
            except Exception as e:
                if not is_oom(e) or n0 == 1:
                    raise
                n0 //= 2

    def _black_box(self, k: int) -> bool:
        return _is_black_box(self.attackers[k])

    def _auto_entries(self) -> list[Entry]:
        """Square at the reference budget for every threat model without one, when gradients are obfuscated.

        Each carries ``when = ["obfuscated-gradients"]`` (so result.json says why it is there) and the
        label `AUTO_SQUARE_LABEL`; it runs after the suite's own entries of its threat model.
        """
        if not self.probe.obfuscated:
            return []
        gradient_runs = self.probe.connected or self.surrogate is not None
        groups: dict[str, list[int]] = {}
        for k, e in enumerate(self.entries):
            if entry_kind(e.kind).threat_model:
                groups.setdefault(e.group, []).append(k)
        out = []
        for members in groups.values():
            if any(self._runs_reference_square(k, gradient_runs) for k in members):
                continue
            e0 = self.entries[members[0]]
            params = (("n_queries", AUTO_SQUARE_QUERIES), ("p_init", AUTO_SQUARE_P_INIT))
            out.append(
                Entry("attack", "square", params, e0.norm, e0.eps, label=AUTO_SQUARE_LABEL, when=OBFUSCATED_WHEN)
            )
        return out

    def _runs_reference_square(self, k: int, gradient_runs: bool) -> bool:
        """Entry k runs Square with at least the reference query budget once gradients are found obfuscated."""
        e, a = self.entries[k], self.attackers[k]
        if e.when and not set(e.when) & {"gradients", *OBFUSCATED_WHEN}:
            return False
        if e.name == "square":
            return int(getattr(a, "n_queries", 0)) >= AUTO_SQUARE_QUERIES
        components = getattr(a, "components", None) or []  # an ensemble (AutoAttack): a gradient attack
        queries = (getattr(a, "component_params", None) or {}).get("square", {}).get("n_queries", AUTO_SQUARE_QUERIES)
        return gradient_runs and "square" in components and int(queries) >= AUTO_SQUARE_QUERIES

    def _check_surrogate(self) -> list[Finding]:
        """The surrogate keeps the model contract and is differentiable; how often it agrees with the model."""
        assert self.surrogate is not None
        x0, y0 = self._first_batch()
        x0, y0 = x0.to(self.device), y0.to(self.device)
        K = self.dataset.num_classes
        who = f"the surrogate {self.surrogate_info['source'] if self.surrogate_info else ''}".strip()
        with frozen(self.surrogate):
            try:
                with torch.no_grad():
                    zs = ModelGuard(self.surrogate, K)(x0)
                check_logits(zs, len(x0), K)
            except ModelError as e:
                raise UsageError(f"{who}: {e.what}", e.hint) from e
            gp = gradient_probe(self.surrogate, x0, y0)
        if not gp.connected:
            raise UsageError(
                f"{who} gives no input gradient: {gp.reason}",
                "a surrogate exists to be differentiated: build it without torch.no_grad(), detach() or numpy",
            )
        with torch.no_grad():
            zf = self.verdict(x0)
        both = finite_rows(zs) & finite_rows(zf)
        agree = float((zs.argmax(1) == zf.argmax(1))[both].float().mean()) if bool(both.any()) else 0.0
        mode = self.config.surrogate_mode
        msg = (
            f"gradient attacks take their gradients from {who} ({mode}: "
            + ("real forward pass, surrogate backward pass" if mode == "bpda" else "attack the surrogate")
            + f"); verdicts come from the model. The surrogate's prediction agrees with the model's on "
            f"{100 * agree:.1f}% of the first {len(x0)} clean images"
        )
        weak = agree < SURROGATE_MIN_AGREEMENT or gp.obfuscated
        if gp.obfuscated:
            msg += f"; its own input gradient is zero or non-finite on {100 * gp.unusable:.0f}% of them"
        if weak:
            msg += ": a poor surrogate gives weak attacks, so the numbers may overestimate robustness"
        return [Finding("surrogate", "warning" if weak else "info", msg, data={"agreement": agree, "mode": mode})]

    def attack_model(self, k: int, eager: bool = False) -> nn.Module:
        """What attack k searches with: the guarded model, or with a surrogate BPDA / the surrogate."""
        kind = "model" if self.surrogate is None or self._black_box(k) else self.config.surrogate_mode
        key = (kind, eager)
        if key not in self._attack_models:
            base = self.model if eager else self.search
            K = self.dataset.num_classes
            if kind == "bpda":
                m: nn.Module = ModelGuard(BPDA(base, self.surrogate), K)  # type: ignore[arg-type]
            elif kind == "transfer":
                m = ModelGuard(self.surrogate, K)  # type: ignore[arg-type]
            else:
                m = self.verdict if eager else self.guarded
            self._attack_models[key] = m
        return self._attack_models[key]

    def gradient_source(self, k: int) -> str | None:
        """Where attack k's gradients come from: model, surrogate-bpda, surrogate-transfer, none (gradient-free)."""
        e = self.entries[k]
        if not entry_kind(e.kind).threat_model or entry_kind(e.kind).lower_bound:
            return None  # not an attack (a verifier reads the model's graph, no gradients)
        if self._black_box(k):
            return "none"
        return "model" if self.surrogate is None else f"surrogate-{self.config.surrogate_mode}"

    def _attack_basis(self, members: list[int]) -> str | None:
        """What a threat model's number rests on (docs/checks.md): white-box, surrogate, gradient-free, none."""
        if not entry_kind(self.entries[members[0]].kind).threat_model:
            return None
        ran = {self.gradient_source(k) for k in members if k not in self.skipped}
        if "model" in ran and not self.probe.obfuscated:
            return "white-box"
        if any(str(s).startswith("surrogate") for s in ran):
            return "surrogate"
        if "none" in ran:
            return "gradient-free"
        return "white-box" if "model" in ran else "none"

    def _config_hash(self) -> str:
        return config_hash(
            self.config,
            model_sha=self.model_info["sha256_state"],
            data_hash=self.dataset.content_hash(),
            entries=[e.describe() for e in self.entries],
            version=__version__,
            calibration=self.cal,
            surrogate=self.surrogate_info,
            nested=self.nesting.applies,
        )

    # ---- what the runners use (harness.engine.runners.Engine) ------------------------------------
    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def reduced_precision(self) -> bool:
        """The attack search runs below fp32 (its candidate points may be re-searched in fp32)."""
        return self.search.precision != "fp32"

    def entry_seed(self, k: int) -> int:
        """Entry k's random stream: keyed by (seed, entry key), then per sample by its global id."""
        return stream_seed(self.config.seed, self.entries[k].key)

    # ---- per-chunk work -------------------------------------------------------------------------
    def _chunk(self, start: int, stop: int, runner: BatchRunner, timing: dict[str, float]) -> dict[str, np.ndarray]:
        rows = torch.arange(start, stop)
        x_all, y_all = self.dataset.batch(rows)
        ids_all = self.dataset.ids[rows]  # type: ignore[index]
        self.gallery.begin(ids_all, x_all)
        n = stop - start
        cols: dict[str, np.ndarray] = {
            col.ID: ids_all.numpy(),
            col.LABEL: y_all.numpy(),
            col.CLEAN_PRED: np.zeros(n, np.int16),
            col.CLEAN_MARGIN: np.zeros(n, np.float32),
            col.CLEAN_CAL: np.zeros((n, self.cal_width), np.float32),
            col.CLEAN_TIE: np.zeros(n, np.int8),
            # The batch plan: the batch size in force when each sample was computed (it halves on OOM).
            col.BATCH: np.zeros(n, np.int32),
        }
        for k, r in enumerate(self.runners):
            cols.update(r.columns(self, k, n))
        if self.reduced_precision:
            # Per sample: entries whose low-precision search was redone in fp32 (kept in the record,
            # so the count survives a resume and a merge across ranks).
            cols[col.RERUNS] = np.zeros(n, np.int8)

        def work(sl: slice) -> None:
            x = x_all[sl].to(self.device)
            check_image_range(x, "dataset images")
            y = y_all[sl].to(self.device)
            ids = ids_all[sl].to(self.device)
            try:
                with torch.no_grad(), ieee_fp32():
                    logits = self.verdict(x)
            except ModelError as e:
                raise ModelError(f"on clean images: {e.what}", e.hint) from e
            # NaN/Inf rows are wrong predictions (the aggregate reports them); all-NaN was refused by the precheck.
            check_logits(logits, len(x), self.dataset.num_classes, some_finite=False)
            status0, margin0, pred, cal0, tie0 = self.score(x, y, logits)
            correct = status0.bool()
            cols[col.BATCH][sl] = runner.batch_size
            cols[col.CLEAN_TIE][sl] = tie0.cpu().numpy()
            cols[col.CLEAN_PRED][sl] = pred.cpu().numpy()
            cols[col.CLEAN_MARGIN][sl] = margin0.cpu().numpy()
            cols[col.CLEAN_CAL][sl] = cal0.cpu().numpy()
            witnesses = Witnesses(x)  # per batch: the record stays a function of its chunk and batch plan
            for _, members in self.order:
                batch = Batch(x, y, ids, sl, correct.clone(), cols, witnesses)
                for k in members:
                    self._shown.entry(entry_label(self.entries[k]), batch.alive, len(x))  # per batch, not per step
                    t0 = time.perf_counter()
                    try:
                        self.runners[k].run(self, k, batch)
                    except ModelError as e:
                        # A model that fails only on perturbed inputs: one line naming the entry.
                        raise ModelError(f"during {self.entries[k].key}: {e.what}", e.hint) from e
                    except Exception as e:
                        failure = backward_error(e, f"during {self.entries[k].key}")
                        if failure is None:
                            raise
                        raise failure from e
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    key = self.entries[k].key
                    timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0
                    kill_point("eval:attack")
            self._shown.batch_done(len(x))

        runner.map(work, n)
        return cols

    @property
    def cal_width(self) -> int:
        """Columns of the calibration statistics: 3 raw, 6 with a fitted temperature."""
        return 3 if self.temperature is None else 6

    def _cal(self, logits: Tensor, y: Tensor, draws: list[Tensor] | None = None) -> Tensor:
        """Calibration statistics (conf, log p_y, sum p^2), raw then temperature-scaled if fitted."""
        kind = score_to_prob_of(self.model_info)  # softmax, or the simplex coding of a square-loss model
        raw = prob_stats(logits, y, draws=draws, score_to_prob=kind)
        if self.temperature is None:
            return raw
        return torch.cat([raw, prob_stats(logits, y, self.temperature, draws=draws, score_to_prob=kind)], 1)

    def score(self, x_adv: Tensor, y: Tensor, logits: Tensor | None = None) -> Scored:
        """The engine's own fp32 verdict on candidate points (`harness.engine.verdicts.score_points`)."""
        return score_points(self.verdict, x_adv, y, eot=self.eot, stats=self._cal, logits=logits)

    # ---- the run ----------------------------------------------------------------------------------
    def run(self) -> Result:
        """Run (or resume) the evaluation; under torchrun every rank calls this and computes its shard."""
        ctx = distributed.setup(self.device)
        try:
            if self.dir is not None:
                return self._run(ctx)
            if ctx.active:
                raise UsageError("a distributed evaluation needs a run directory", "pass out= and name=")
            with temporary_directory("harness-eval-") as tmp:
                self.dir = tmp
                try:
                    return self._run(ctx)
                finally:
                    self.dir = None
        finally:
            ctx.close()

    def _run(self, ctx: distributed.DistContext) -> Result:
        """Plan on rank 0 (lock, foreign-record check, missing chunks), compute shards, merge on rank 0.

        With one process the collectives are identities, so this is also the single-process path.
        """
        assert self.dir is not None
        t_start = time.perf_counter()
        store = RecordStore(self.dir / "records", self.config_hash, self.config.chunk_size, len(self.dataset))
        with contextlib.ExitStack() as held:
            plan: tuple = ("ok", [])
            if ctx.is_main:
                try:
                    held.enter_context(run_lock(self.dir))
                    if self._holds_other_evaluation(store):
                        if not self.config.overwrite:
                            raise UsageError(
                                f"{self.dir} holds results of a different evaluation "
                                "(model, data, suite, seed or chunk size changed)",
                                "choose another --name, or pass --overwrite to replace them",
                            )
                        # Moved aside (not deleted) until the new evaluation has finished; moved
                        # back if this process fails before it wrote anything new.
                        set_aside_outputs(self.dir)
                        held.push(self._restore_on_failure(ctx))
                    plan = ("ok", store.missing())
                except HarnessError as e:
                    if not ctx.active:
                        raise
                    plan = ("error", type(e).__name__, e.what, e.hint)
            plan = ctx.broadcast(plan)
            if plan[0] == "error":
                raise _error_from(plan)
            todo: list[int] = plan[1]
            mine = ctx.shard(todo)
            held.enter_context(distributed.terminate_handler(self.dir, ctx))
            if ctx.active:
                distributed.write_status(self.dir, ctx.rank, "running", chunks=mine, world_size=ctx.world_size)
            runner = BatchRunner(self.batch_size or 1)
            timing: dict[str, float] = {}
            findings: list = []
            own_error: BaseException | None = None
            try:
                findings = self._precheck()
                if mine and self.config.batch_size == "auto":
                    runner.batch_size = self._autotune()
                progress = self.config.progress and ctx.is_main
                label = (self.name or "evaluate") + (f" rank 0/{ctx.world_size}" if ctx.active else "")
                total = len(self.dataset) if not ctx.active else sum(_rows(store, c) for c in mine)
                with evaluation_progress(progress, total, label, len(mine)) as self._shown:
                    if not ctx.active:
                        self._shown.advance(len(self.dataset) - sum(_rows(store, c) for c in todo))
                    for i, cid in enumerate(mine):
                        s, e = store.chunk_range(cid)
                        self._shown.start_chunk(i + 1, e - s)
                        cols = self._chunk(s, e, runner, timing)
                        self.gallery.write(store.dir / GALLERY_DIR, cid, self.config_hash)  # before its chunk
                        store.write(cid, cols)
                        kill_point("eval:chunk")
                        self._shown.advance(e - s)
                outcome: dict[str, Any] = {"rank": ctx.rank, "ok": True, "chunks": len(mine), "timing": timing}
            except BaseException as e:
                if not ctx.active or isinstance(e, SystemExit):  # SystemExit: stopped by the launcher
                    raise
                own_error = e
                why = f"{e.what}" if isinstance(e, HarnessError) else f"{type(e).__name__}: {e}"
                outcome = {"rank": ctx.rank, "ok": False, "error": why}
                distributed.write_status(self.dir, ctx.rank, "failed", error=why)
            try:
                outcomes = ctx.gather(outcome)
            except RuntimeError as e:  # a peer vanished during the exchange
                if own_error is None:
                    distributed.write_status(self.dir, ctx.rank, "terminated")
                cause = (
                    distributed.peer_failure(self.dir, ctx, wait_s=distributed.NEW_RANK_WAIT_S)
                    or f"the rank exchange failed ({e})"
                )
                raise distributed.RankFailedError(
                    f"distributed evaluation failed: {cause}", distributed.RERUN_HINT
                ) from e
            if own_error is not None:
                raise own_error
            bad = [o for o in outcomes if not o["ok"]]
            if bad:
                cause = "; ".join(f"rank {o['rank']} failed: {o['error']}" for o in bad)
                raise distributed.RankFailedError(f"distributed evaluation failed: {cause}", distributed.RERUN_HINT)
            if ctx.active:
                distributed.write_status(self.dir, ctx.rank, "done", chunks=mine)
            merged: dict[str, float] = {}
            for o in outcomes:
                for k, v in o["timing"].items():
                    merged[k] = merged.get(k, 0.0) + v
            done: tuple = ("ok",)
            result: Result | None = None
            if ctx.is_main:
                try:
                    result = self._finish(store, findings, merged, runner, t_start, ctx, outcomes)
                except HarnessError as e:
                    if not ctx.active:
                        raise
                    done = ("error", type(e).__name__, e.what, e.hint)
                    done_exc: BaseException = e
                except BaseException as e:
                    if not ctx.active:
                        raise
                    done = ("error", "HarnessError", f"rank 0 failed to merge: {type(e).__name__}: {e}", None)
                    done_exc = e
            done = ctx.broadcast(done)
            if done[0] == "error":
                if ctx.is_main:
                    raise done_exc
                raise _error_from(done)
            if result is None:
                result = Result.load(self.dir / "result.json")
            return result

    def _restore_on_failure(self, ctx: distributed.DistContext) -> Callable[..., bool]:
        """An exit callback (run under the lock) that undoes `set_aside_outputs` after an early failure."""
        run_dir = self.dir

        def restore(exc_type: Any, exc: Any, tb: Any) -> bool:
            if exc_type is not None and not ctx.active and run_dir is not None:
                restore_set_aside(run_dir)
            return False

        return restore

    def _holds_other_evaluation(self, store: Any) -> bool:
        """True when the run folder holds record chunks, a record index or a result of another config."""
        if store.foreign_chunks():
            return True
        written = [
            (self.dir / "records" / "index.json", lambda d: d.get("config_hash")),
            (self.dir / "result.json", result_config_hash),
        ]
        for path, of in written:
            try:
                d = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # absent or torn: rewritten when this evaluation finishes
            if isinstance(d, dict) and of(d) not in (None, self.config_hash):
                return True
        return False

    def _precheck(self) -> list:
        x0, y0 = self._first_batch()
        n0 = len(x0)
        while True:  # the precheck batch, too, halves on out-of-memory
            try:
                findings = precheck(
                    self.model,
                    x0[:n0].to(self.device),
                    y0[:n0].to(self.device),
                    self.dataset.num_classes,
                    self.was_training,
                    full=self.config.checks == "full",
                    eot_samples=self.config.eot_samples,
                    probe=self.probe,
                )
                break
            except Exception as e:
                if not is_oom(e) or n0 == 1:
                    raise
                n0 //= 2
        if self.surrogate is not None:
            findings += self._check_surrogate()
        for k, r in enumerate(self.runners):  # e.g. a verifier reads the model's graph before any attack runs
            r.prepare(self, k, x0[:n0].to(self.device))
        if self.probe.connected:
            self.search.warm_up(x0[:n0].to(self.device), y0[:n0].to(self.device))
        fired = {f.check for f in findings if f.severity in ("warning", "error")}
        self.skipped = {
            k: f"runs only on finding {' or '.join(e.when)}; none raised"
            for k, e in enumerate(self.entries)
            if e.when and not fired & set(e.when)
        }
        if not self.probe.connected and self.surrogate is None:
            why = "needs input gradients and the model gives none (obfuscated-gradients finding); "
            why += "pass a differentiable surrogate (--surrogate) for BPDA"
            for k in range(len(self.entries)):
                if self.gradient_source(k) not in (None, "none"):  # gradient attacks, not verifiers
                    self.skipped[k] = why
        self.nesting = NestedPlan.of(self.entries, self.skipped)
        self._setup_eot(findings)
        self._fit_temperature()
        return findings

    def _autotune(self) -> int:
        """The largest batch a forward+backward of the search model fits (cached: one model, one device).

        Capped by the chunk size (a batch never spans chunks), the dataset size and, on CPU, which
        gives no out-of-memory signal, by `CPU_CAP`.
        """
        if self.autotuned is None:
            cap = min(self.config.chunk_size, len(self.dataset))
            if self.device.type == "cpu":
                cap = min(cap, CPU_CAP)
            gen = torch.Generator().manual_seed(0)
            k = self.dataset.num_classes

            def step(n: int) -> None:
                x = torch.rand(n, *self.dataset.shape, generator=gen).to(self.device).requires_grad_(True)
                y = torch.randint(0, k, (n,), generator=gen).to(self.device)
                with torch.enable_grad():  # through the guard: a model without input gradient gets a zero one
                    try:
                        torch.autograd.grad(F.cross_entropy(self.guarded(x), y, reduction="sum"), x)
                    except Exception as e:
                        failure = backward_error(e, "while sizing batches (--batch-size auto)")
                        if failure is None:
                            raise
                        raise failure from e

            with frozen(self.model):
                self.autotuned = autotune_batch_size(step, cap)
        self.batch_size = self.autotuned
        return self.autotuned

    def _finish(
        self,
        store: Any,
        findings: list,
        timing: dict[str, float],
        runner: BatchRunner,
        t_start: float,
        ctx: distributed.DistContext,
        outcomes: list[dict[str, Any]],
    ) -> Result:
        """Rank 0: check the record is complete, aggregate it, run the post-checks, write the outputs."""
        assert self.dir is not None
        left = store.missing()
        if left:
            raise distributed.RankFailedError(
                f"{len(left)} chunk(s) of the record missing or corrupt after all ranks finished (first: {left[0]})",
                distributed.RERUN_HINT,
            )
        write_json(
            self.dir / "records" / "index.json",
            {
                "config_hash": self.config_hash,
                "chunk_size": store.chunk_size,
                "n_total": store.n_total,
                "entries": [e.describe() for e in self.entries],
            },
        )
        result = self._aggregate(store, findings, timing, runner)
        view = RunView(
            store=store,
            entries=tuple(self.entries),
            attackers=tuple(self.attackers),
            result=result,
            seed=self.config.seed,
            checks=self.config.checks,
            calibration=MappingProxyType(self.cal),
            temperature=self.temperature,
            temperature_split=None if self.temperature_split is None else MappingProxyType(self.temperature_split),
            # Without any input gradient, through the guard: the suite's gradient attacks then see zero
            # gradients (and the unit test says they are too weak) instead of failing inside autograd.
            model=self.model if self.probe.connected else self.verdict,
            dataset=self.dataset,
            suite=self.suite,
            device=self.device,
            eot_samples=self.eot,
            compile_fallback=self.search.fallback,
        )
        for analysis in ANALYSES.ordered():
            out = analysis.run(view)
            if out.section is not None:
                result.extra[analysis.name] = out.section
            result.findings += out.findings
        if ctx.active:
            result.extra["distributed"] = {
                "world_size": ctx.world_size,
                "backend": ctx.backend,
                "chunks_per_rank": [o["chunks"] for o in outcomes],
                "attack_s_per_rank": [round(sum(o["timing"].values()), 4) for o in outcomes],
            }
        result.timing["wall_s"] = time.perf_counter() - t_start
        result.save(self.dir / "result.json")
        write_text(self.dir / "report.md", render_markdown([result]))
        drop_set_aside(self.dir)
        return result

    def _fit_temperature(self) -> None:
        """Fit the softmax temperature on the suite's held-out split (never on the evaluated points)."""
        split = self.cal.get("temperature")
        if not split or split == "none":
            return
        held = heldout_dataset(self.dataset, str(split))
        logits, labels = [], []
        with torch.no_grad():
            bs = self.batch_size or 256
            for s in range(0, len(held), bs):
                xb, yb = held.batch(slice(s, min(len(held), s + bs)))
                logits.append(self.model(xb.to(self.device).float()).cpu())
                labels.append(yb)
        # Fitted on the probability map the model's scores use (softmax, or the simplex coding of square loss).
        self.temperature = fit_temperature(torch.cat(logits), torch.cat(labels), score_to_prob_of(self.model_info))
        self.temperature_split = {"split": str(split), "n": len(held)}

    def _setup_eot(self, findings: list) -> None:
        """Choose the EOT draw count (auto: EOT_AUTO_SAMPLES for a stochastic model) and pass it on."""
        stochastic = any(f.check == "stochastic" for f in findings)
        self.eot = self.config.eot_samples or (EOT_AUTO_SAMPLES if stochastic else 1)
        if self.eot == 1:
            return
        lacking = []
        for e, a in zip(self.entries, self.attackers):
            # The attack declares its EOT support (`Attack.set_eot`); corruptions have none to give.
            set_eot = getattr(a, "set_eot", None)
            single = set_eot(self.eot) if set_eot is not None else [e.name]
            kind = entry_kind(e.kind)
            if single and kind.threat_model and not kind.lower_bound:  # attacks, not verifiers
                whole = single == [e.name]
                lacking.append(e.key if whole else f"{e.key} ({', '.join(single)})")
        msg = (
            f"results use EOT: attack gradients averaged over {self.eot} forward passes, every verdict "
            f"(clean and adversarial) the majority over {self.eot} passes"
        )
        if lacking:
            msg += f"; attacks without EOT support (run on single draws): {', '.join(lacking)}"
        findings.append(Finding("eot", "warning" if lacking else "info", msg, data={"eot_samples": self.eot}))

    def _aggregate(self, store: Any, findings: list, timing: dict[str, float], runner: BatchRunner) -> Result:
        t = tally(store, self.entries, self.dataset.num_classes)
        v = verification(store, self.entries)  # the verified end of each interval (verify entries only)
        n, groups = t.n, t.groups
        tie_groups = t.tie_groups()
        out_groups = []
        for gi, (gkey, members) in enumerate(groups):
            first = self.entries[members[0]]
            out_groups.append(
                GroupResult(
                    key=gkey,
                    kind=first.kind,
                    accuracy=Accuracy.of(t.g_correct[gi], n),
                    verified=v.accuracy(gkey),
                    norm=first.norm,
                    eps=first.eps,
                    severity=first.severity,
                    **self.runners[members[0]].group_fields(self, first),
                    entries=[
                        {
                            **self.entries[k].describe(),
                            "config": _config_of(self.attackers[k]),
                            "cumulative": asdict(Accuracy.of(t.e_cum[k], n)),
                            # Attacked: run on (a verdict inherited from a smaller eps was not attacked).
                            "attacked": 0 if k in self.skipped else int(t.e_tried[k] - t.e_inherited[k]),
                            **({"skipped": self.skipped[k]} if k in self.skipped else {}),
                            "broken_first": int(t.e_first[k]),
                            "black_box": _is_black_box(self.attackers[k]),
                            **_below_reference(self.attackers[k]),
                            **self.runners[k].entry_fields(self, k),
                            **v.entry_fields(k),
                            **({"nonfinite": int(t.e_nonfinite[k])} if t.e_nonfinite[k] else {}),
                            **({"inherited": int(t.e_inherited[k])} if k in self.nesting.takers else {}),
                            "seconds": round(timing.get(self.entries[k].key, 0.0), 4),
                        }
                        for k in members
                    ],
                    per_class=t.per_class(t.g_class[gi]),
                    attack_basis=self._attack_basis(members),
                )
            )
        findings = list(findings) + nonfinite_findings(self.entries, t.clean_nonfinite, t.e_nonfinite, n)
        findings += tie_findings(t.clean_ties, tie_groups)
        findings += verification_findings(v, self.entries)
        return Result(
            name=self.name or "evaluation",
            model=self.model_info,
            dataset=self.dataset.describe(),
            suite=self.suite.describe(),
            config={
                **asdict(self.config),
                "config_hash": self.config_hash,
                "device": str(self.device),
                "final_batch_size": runner.batch_size,
                "autotuned_batch_size": self.autotuned,
                **self.search.describe(),
                "oom_backoffs": runner.backoffs,
                # Bitwise-identical records need the same batch plan and kernel configuration (docs/reliability.md).
                "batch_plan": {
                    "batch_size": self.config.batch_size,
                    "used": t.used_batch_sizes,
                    "per_chunk": t.plan,
                },
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
                "eot_samples_used": self.eot,
                "precision_reruns": t.reruns,
                **({"surrogate": self.surrogate_info} if self.surrogate_info else {}),
            },
            environment=environment.describe(self.device),
            clean=Accuracy.of(t.clean_correct, n),
            groups=out_groups,
            per_class_clean=t.per_class(t.class_clean),
            findings=findings,
            record={
                "path": "records",
                "chunks": store.n_chunks,
                "config_hash": self.config_hash,
                "entries": [e.key for e in self.entries],
            },
            timing={"attack_s": round(sum(timing.values()), 4)},
            extra={
                "class_counts": t.class_n.tolist(),
                "ties": {
                    "tolerance_ulps": TIE_ULPS,
                    "clean": t.clean_ties,
                    "groups": tie_groups,
                    "entries": {self.entries[k].key: int(t.e_ties[k]) for k in range(len(self.entries))},
                },
            },
        )


def _rows(store: Any, cid: int) -> int:
    s, e = store.chunk_range(cid)
    return e - s


def _error_from(msg: tuple) -> HarnessError:
    """Rebuild on this rank the error another rank broadcast as (kind, class name, what, hint)."""
    cls = getattr(errors, msg[1], None) or getattr(distributed, msg[1], None)
    if not (isinstance(cls, type) and issubclass(cls, HarnessError)):
        cls = HarnessError
    return cls(msg[2], msg[3])


def _is_black_box(attacker: Any) -> bool:
    """The attack's declared `Attack.black_box` (capabilities are data, never attack names)."""
    return bool(getattr(attacker, "black_box", False))


def _below_reference(attacker: Any) -> dict[str, Any]:
    """``{"below_reference": [...]}`` for an attack run below its declared reference budget, else {}."""
    fn = getattr(attacker, "reference_shortfalls", None)
    shortfalls = fn() if callable(fn) else []
    return {"below_reference": shortfalls} if shortfalls else {}


def _config_of(obj: Any) -> dict[str, Any]:
    cfg = getattr(obj, "config", None)
    return cfg() if callable(cfg) else {}


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    suite: str | Suite = "quick",
    *,
    out: str | Path | None = None,
    name: str | None = None,
    config: EvalConfig | None = None,
    model_info: dict[str, Any] | None = None,
    surrogate: SurrogateSpec | None = None,
) -> Result:
    """Evaluate ``model`` on ``dataset`` with ``suite``; writes ``out/name/`` when a name is given.

    ``surrogate`` (an nn.Module, a callable ``f(model) -> nn.Module`` or ``"module.path:factory"``)
    gives gradient attacks a differentiable stand-in (`harness.surrogate`); verdicts stay the model's.
    """
    return Evaluation(
        model, dataset, suite, out=out, name=name, config=config, model_info=model_info, surrogate=surrogate
    ).run()
