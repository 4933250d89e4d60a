"""The evaluation engine: one suite over one (model, dataset), a streamed per-sample record, a Result.

Per sample and suite entry the record holds a status (1 robust, 0 broken by this entry, -1 not
attacked because already broken: wrong when clean, or broken by an earlier attack of the same
threat model), the margin at the returned point and the prediction, and for calibration the
max-softmax confidence, log p_y and sum p^2 at that point (``c{k}``, ``clean_cal``; raw then
temperature-scaled when the suite asks for it). Smoothing entries record the certified radius.
Worst-case robust accuracy of a threat model is the per-sample AND over its attacks. Every
adversarial batch is re-verified here (ball, box, finiteness) and scored with the engine's own
forward pass.

Work is done chunk by chunk (fixed ranges of dataset positions); each finished chunk is written
atomically, so an interrupted run resumes at the first missing chunk and, because every random
draw is keyed by (seed, global sample id, entry), gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness import distributed, environment
from harness.atomic import lock_file, remove_stale_temps, write_json, write_text
from harness.batching import CPU_CAP, BatchRunner, autotune_batch_size, is_oom
from harness.checks import EOT_AUTO_SAMPLES, check_logits, postcheck, precheck
from harness.data.base import ImageDataset, check_image_range
from harness.errors import HarnessError, UsageError
from harness.faults import kill_point
from harness.precision import PRECISIONS, SearchModel, frozen
from harness.results import Accuracy, Finding, GroupResult, Result
from harness.rng import stream_seed
from harness.suites import Entry, Suite, load_suite
from harness.threat import check_contract
from harness.ties import TIE_ULPS, decide, ieee_fp32

CHECK_LEVELS = ("basic", "full")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass
class EvalConfig:
    """How to run an evaluation (not what: that is the suite)."""

    # An int, or "auto" (None means the same): the largest batch a forward+backward fits, probed once.
    batch_size: int | str | None = 256
    chunk_size: int = 512
    seed: int = 0
    device: str = "auto"
    max_samples: int | None = None
    overwrite: bool = False
    progress: bool = True
    # Draws per gradient and per verdict for randomised models (EOT); None: 1, or
    # EOT_AUTO_SAMPLES when the precheck finds the model stochastic.
    eot_samples: int | None = None
    # "basic": the sanity checks; "full": also the unbounded-eps check and the attack unit test.
    checks: str = "basic"
    # Replaces the dataset's eps grid for suite entries with eps = "dataset", e.g. {"linf": (0.1,)}.
    eps: dict[str, tuple[float, ...]] | None = None
    # Attack search under bf16 autocast ("bf16") or fp32; verdicts are always fp32 (docs/performance.md).
    precision: str = "fp32"
    # torch.compile the model for the attack search only; verdicts use the eager model.
    compile: bool = False

    def __post_init__(self) -> None:
        self.batch_size = parse_batch_size(self.batch_size)
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}", f"use one of {', '.join(PRECISIONS)}")
        if self.checks not in CHECK_LEVELS:
            raise UsageError(f"unknown checks level {self.checks!r}", f"use one of {', '.join(CHECK_LEVELS)}")
        if self.eot_samples is not None and (not isinstance(self.eot_samples, int) or self.eot_samples < 1):
            raise UsageError(f"eot_samples must be a positive integer, not {self.eot_samples!r}")


def parse_batch_size(value: int | str | None) -> int | str:
    """A positive int, or "auto" (also for None): the batch-size forms EvalConfig and the CLI accept."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    try:
        n = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        n = None
    if n is None or n < 1:
        raise UsageError(f"batch size must be a positive integer or 'auto', not {value!r}", "e.g. --batch-size 256")
    return n


def check_run_name(name: str) -> str:
    """Run names are single path components: no separators, no '..', no absolute paths."""
    if not RUN_NAME.match(name) or ".." in name:
        raise UsageError(
            f"invalid run name {name!r}",
            "use letters, digits and . _ + - (no path separators or '..'); the run is created under the output root",
        )
    return name


@contextlib.contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on a run directory; a second writer gets `RunLockedError`."""
    directory.mkdir(parents=True, exist_ok=True)
    with lock_file(directory / ".lock", f"another process is writing to {directory}"):
        remove_stale_temps(directory)
        remove_stale_temps(directory / "records")
        yield


def model_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _groups(entries: list[Entry]) -> list[tuple[str, list[int]]]:
    order: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        order.setdefault(e.group, []).append(i)
    return list(order.items())


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
    ) -> None:
        self.config = config or EvalConfig()
        self.device = distributed.resolve_device(self.config.device)
        self.was_training = model.training
        self.model = model.to(self.device).eval()
        self.dataset = dataset
        if self.config.max_samples is not None and self.config.max_samples < len(dataset):
            self.dataset = dataset.subset(slice(0, self.config.max_samples))
        self.suite = load_suite(suite)
        grid = {**self.dataset.eps_grid, **(self.config.eps or {})}
        self.entries = self.suite.resolve(grid)
        for e in self.entries:
            if e.threat is not None:
                e.threat.validate_for(self.dataset.shape)
        self.attackers = [e.build() for e in self.entries]
        # What the attacks call; the verdicts call self.model (eager, fp32).
        self.search = SearchModel(self.model, self.config.precision, self.config.compile)
        self.batch_size: int = self.config.batch_size if isinstance(self.config.batch_size, int) else 0
        self.autotuned: int | None = None  # probed once per Evaluation (one model, one device)
        # Entries whose ``when`` names no finding the precheck raised: not run (set by _precheck).
        self.skipped: dict[int, str] = {}
        self.model_info = dict(model_info or {})
        if "sha256_state" not in self.model_info:  # a caller evaluating one model many times passes it
            self.model_info["sha256_state"] = model_hash(self.model)
        self.name = check_run_name(name) if name else None
        self.dir = (Path(out or "runs") / self.name) if self.name else (Path(out) if out else None)
        self.eot = self.config.eot_samples or 1
        self.cal = dict(self.suite.calibration)
        self.temperature: float | None = None
        self.config_hash = self._config_hash()

    def _config_hash(self) -> str:
        from harness import __version__

        blob = json.dumps(
            {
                "model": self.model_info["sha256_state"],
                "data": self.dataset.content_hash(),
                "entries": [e.describe() for e in self.entries],
                "seed": self.config.seed,
                "chunk": self.config.chunk_size,
                "eot": self.config.eot_samples,
                # Only when not the default, so the hashes (and resumability) of fp32 eager runs stay as they were.
                **({"precision": self.config.precision} if self.config.precision != "fp32" else {}),
                **({"compile": True} if self.config.compile else {}),
                "version": __version__,
                **({"calibration": self.cal} if self.cal else {}),
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ---- per-chunk work -------------------------------------------------------------------------
    def _chunk(self, start: int, stop: int, runner: BatchRunner, timing: dict[str, float]) -> dict[str, np.ndarray]:
        rows = torch.arange(start, stop)
        x_all, y_all = self.dataset.batch(rows)
        ids_all = self.dataset.ids[rows]  # type: ignore[index]
        n = stop - start
        cols: dict[str, np.ndarray] = {
            "id": ids_all.numpy(),
            "label": y_all.numpy(),
            "clean_pred": np.zeros(n, np.int16),
            "clean_margin": np.zeros(n, np.float32),
            "clean_cal": np.zeros((n, self._cal_width), np.float32),
            "clean_tie": np.zeros(n, np.int8),
            # The batch plan: the batch size in force when each sample was computed (it halves on OOM).
            "batch": np.zeros(n, np.int32),
        }
        for k in range(len(self.entries)):
            cols[f"s{k}"] = np.full(n, -1, np.int8)
            cols[f"m{k}"] = np.full(n, np.nan, np.float32)
            cols[f"p{k}"] = np.full(n, -1, np.int16)
            cols[f"t{k}"] = np.zeros(n, np.int8)  # 1: the verdict rests on a float-level tie (harness/ties.py)
            if self.entries[k].kind == "smoothing":
                R = len(self.attackers[k].radii)
                cols[f"e{k}"], cols[f"v{k}"] = np.zeros((n, R), np.int8), np.zeros((n, R), np.int8)
                cols[f"a{k}"] = np.zeros(n, np.float32)
            else:
                cols[f"c{k}"] = np.full((n, self._cal_width), np.nan, np.float32)
        if self.search.precision != "fp32":
            # Per sample: entries whose low-precision search was redone in fp32 (kept in the record,
            # so the count survives a resume and a merge across ranks).
            cols["reruns"] = np.zeros(n, np.int8)

        def work(sl: slice) -> None:
            x = x_all[sl].to(self.device)
            check_image_range(x, "dataset images")
            y = y_all[sl].to(self.device)
            ids = ids_all[sl].to(self.device)
            with torch.no_grad(), ieee_fp32():
                logits = self.model(x)
            check_logits(logits, len(x), self.dataset.num_classes)
            status0, margin0, pred, cal0, tie0 = self._score(x, y, logits)
            correct = status0.bool()
            cols["batch"][sl] = runner.batch_size
            cols["clean_tie"][sl] = tie0.cpu().numpy()
            cols["clean_pred"][sl] = pred.cpu().numpy()
            cols["clean_margin"][sl] = margin0.cpu().numpy()
            cols["clean_cal"][sl] = cal0.cpu().numpy()
            for _, members in _groups(self.entries):
                alive = correct.clone()
                for k in members:
                    entry, attacker = self.entries[k], self.attackers[k]
                    t0 = time.perf_counter()
                    seed = stream_seed(self.config.seed, entry.key)
                    if entry.kind == "smoothing":
                        res = attacker.run(self.model, x, y, index=ids, seed=seed, num_classes=self.dataset.num_classes)
                        cols[f"s{k}"][sl] = (res["pred"] == y.cpu().numpy()).astype(np.int8)
                        cols[f"m{k}"][sl], cols[f"p{k}"][sl] = res["radius"], res["pred"]
                        cols[f"a{k}"][sl], cols[f"e{k}"][sl], cols[f"v{k}"][sl] = (
                            res["pa_lower"],
                            res["emp"],
                            res["viol"],
                        )
                    elif entry.kind == "corruption":
                        xc = attacker(x, index=ids, seed=seed)
                        status, m, p, cal, tie = self._score(xc, y)
                        cols[f"s{k}"][sl] = status.cpu().numpy()
                        cols[f"t{k}"][sl] = tie.cpu().numpy()
                        cols[f"m{k}"][sl] = m.cpu().numpy()
                        cols[f"p{k}"][sl] = p.cpu().numpy()
                        cols[f"c{k}"][sl] = cal.cpu().numpy()
                    elif k in self.skipped:
                        cols[f"s{k}"][sl] = np.where(alive.cpu().numpy(), 1, -1)  # not attacked: as robust as before
                    else:
                        act = alive.nonzero().squeeze(1)
                        if len(act):
                            xa = attacker(self.search, x[act], y[act], index=ids[act], seed=seed)
                            check_contract(x[act], xa, entry.threat, who=entry.key)  # type: ignore[arg-type]
                            status, m, p, cal, tie = self._score(xa, y[act])
                            if self.search.precision != "fp32":
                                redo = self._rerun_fp32(
                                    attacker, entry, x[act], y[act], ids[act], seed, xa, (status, m, p, cal, tie)
                                )
                                cols["reruns"][sl][act[redo].cpu().numpy()] += 1
                            alive[act] = status.bool()
                            s_np = np.full(len(x), -1, np.int8)
                            m_np = np.full(len(x), np.nan, np.float32)
                            p_np = np.full(len(x), -1, np.int16)
                            c_np = np.full((len(x), self._cal_width), np.nan, np.float32)
                            a_np = act.cpu().numpy()
                            s_np[a_np], m_np[a_np], p_np[a_np] = status.cpu().numpy(), m.cpu().numpy(), p.cpu().numpy()
                            c_np[a_np] = cal.cpu().numpy()
                            t_np = np.zeros(len(x), np.int8)
                            t_np[a_np] = tie.cpu().numpy()
                            cols[f"s{k}"][sl], cols[f"m{k}"][sl], cols[f"p{k}"][sl] = s_np, m_np, p_np
                            cols[f"t{k}"][sl] = t_np
                            cols[f"c{k}"][sl] = c_np
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    timing[entry.key] = timing.get(entry.key, 0.0) + time.perf_counter() - t0
                    kill_point("eval:attack")

        runner.map(work, n)
        return cols

    def _rerun_fp32(
        self,
        attacker: Any,
        entry: Entry,
        x: Tensor,
        y: Tensor,
        ids: Tensor,
        seed: int,
        xa: Tensor,
        scored: tuple[Tensor, Tensor, Tensor, Tensor, Tensor],
    ) -> Tensor:
        """Re-attack in fp32 the samples whose low-precision search ended on a point only it calls misclassified.

        Such a sample is robust by the fp32 verdict already; the rerun makes sure a rounding artefact
        did not also stop its search early (attacks drop samples they think broken). Updates ``scored``
        and returns the positions re-attacked.
        """
        status, m, p, cal, tie = scored
        with torch.no_grad():
            low_wrong = self.search(xa).argmax(1) != y
        redo = (low_wrong & status.bool()).nonzero().squeeze(1)  # one sync per attacked batch
        if len(redo) == 0:
            return redo
        xr = attacker(self.model, x[redo], y[redo], index=ids[redo], seed=seed)
        check_contract(x[redo], xr, entry.threat, who=entry.key)  # type: ignore[arg-type]
        s2, m2, p2, c2, t2 = self._score(xr, y[redo])
        status[redo], m[redo], p[redo], cal[redo], tie[redo] = s2, m2, p2, c2, t2
        return redo

    @property
    def _cal_width(self) -> int:
        return 3 if self.temperature is None else 6

    def _cal(self, logits: Tensor, y: Tensor, draws: list[Tensor] | None = None) -> Tensor:
        """Calibration statistics (conf, log p_y, sum p^2), raw then temperature-scaled if fitted."""
        from harness.calibration import prob_stats

        raw = prob_stats(logits, y, draws=draws)
        if self.temperature is None:
            return raw
        return torch.cat([raw, prob_stats(logits, y, self.temperature, draws=draws)], 1)

    def _score(
        self, x_adv: Tensor, y: Tensor, logits: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The engine's own fp32 verdict on candidate points: (status 1/0, margin, prediction, calibration stats, tie).

        A point is robust only when the true class wins by more than the float-level tie tolerance
        (harness/ties.py), so the verdict does not depend on the kernel path; ``tie`` marks the
        points whose |margin| is within it. With EOT the verdict is the majority over ``eot`` draws
        (robust when at least half are), the prediction the most frequent class, the margin the
        mean over draws and ``tie`` set when any draw is a tie; the calibration statistics use the
        mean softmax over draws.
        """
        with torch.no_grad(), ieee_fp32():
            if self.eot == 1:
                logits = self.model(x_adv.float()) if logits is None else logits
                ok, m, tie = decide(logits, y)
                pred = logits.argmax(1).to(torch.int16)
                return ok.to(torch.int8), m, pred, self._cal(logits, y), tie.to(torch.int8)
            draws = [self.model(x_adv.float()) for _ in range(self.eot)]
        decided = [decide(d, y) for d in draws]
        preds = torch.stack([d.argmax(1) for d in draws])
        ok = torch.stack([r for r, _, _ in decided]).float().mean(0) >= 0.5
        m = torch.stack([mm for _, mm, _ in decided]).mean(0)
        tie = torch.stack([t for _, _, t in decided]).any(0)
        pred = preds.mode(0).values.to(torch.int16)
        return ok.to(torch.int8), m, pred, self._cal(draws[0], y, draws), tie.to(torch.int8)

    # ---- the run ----------------------------------------------------------------------------------
    def run(self) -> Result:
        """Run (or resume) the evaluation; under torchrun every rank calls this and computes its shard."""
        ctx = distributed.setup(self.device)
        try:
            if self.dir is not None:
                return self._run(ctx)
            if ctx.active:
                raise UsageError("a distributed evaluation needs a run directory", "pass out= and name=")
            import tempfile

            with tempfile.TemporaryDirectory(prefix="harness-eval-") as tmp:
                self.dir = Path(tmp)
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
        from harness.records import RecordStore

        assert self.dir is not None
        t_start = time.perf_counter()
        store = RecordStore(self.dir / "records", self.config_hash, self.config.chunk_size, len(self.dataset))
        with contextlib.ExitStack() as held:
            plan: tuple = ("ok", [])
            if ctx.is_main:
                try:
                    held.enter_context(run_lock(self.dir))
                    if store.foreign_chunks() and not self.config.overwrite:
                        raise UsageError(
                            f"{self.dir} holds results of a different evaluation (model, data, suite or seed changed)",
                            "choose another --name, or pass --overwrite to replace them",
                        )
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
                with _progress(progress, total, label) as advance:
                    if not ctx.active:
                        advance(len(self.dataset) - sum(_rows(store, c) for c in todo))
                    for cid in mine:
                        s, e = store.chunk_range(cid)
                        store.write(cid, self._chunk(s, e, runner, timing))
                        kill_point("eval:chunk")
                        advance(e - s)
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

    def _precheck(self) -> list:
        x0, y0 = self.dataset.batch(slice(0, min(64, len(self.dataset))))
        check_image_range(x0, "dataset images")
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
                )
                break
            except Exception as e:
                if not is_oom(e) or n0 == 1:
                    raise
                n0 //= 2
        self.search.warm_up(x0[:n0].to(self.device), y0[:n0].to(self.device))
        fired = {f.check for f in findings if f.severity in ("warning", "error")}
        self.skipped = {
            k: f"runs only on finding {' or '.join(e.when)}; none raised"
            for k, e in enumerate(self.entries)
            if e.when and not fired & set(e.when)
        }
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
                with torch.enable_grad():
                    torch.autograd.grad(F.cross_entropy(self.search(x), y, reduction="sum"), x)

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
        from harness.calibration import aggregate_calibration
        from harness.certify import aggregate_certified

        result.extra["calibration"] = aggregate_calibration(self, store)
        cert, cert_findings = aggregate_certified(self, store)
        if cert:
            result.extra["certified"] = cert
            result.findings += cert_findings
        result.findings += postcheck(result)
        if self.search.fallback:
            result.findings.append(
                Finding(
                    "compile",
                    "warning",
                    f"--compile was asked for but torch.compile failed, so the attack search ran eagerly "
                    f"(the numbers are unaffected, only the speed): {self.search.fallback}",
                    data={"error": self.search.fallback},
                )
            )
        if self.config.checks == "full":
            from harness.unit_test import attack_unit_test

            ut = attack_unit_test(
                self.model, self.dataset, self.suite, seed=self.config.seed, device=self.device, eot_samples=self.eot
            )
            result.extra["unit_test"] = ut.to_dict()
            result.findings += ut.findings()
        from harness.corruption_metrics import attach

        attach(result)
        if ctx.active:
            result.extra["distributed"] = {
                "world_size": ctx.world_size,
                "backend": ctx.backend,
                "chunks_per_rank": [o["chunks"] for o in outcomes],
                "attack_s_per_rank": [round(sum(o["timing"].values()), 4) for o in outcomes],
            }
        result.timing["wall_s"] = time.perf_counter() - t_start
        result.save(self.dir / "result.json")
        from harness.report import render_markdown

        write_text(self.dir / "report.md", render_markdown([result]))
        return result

    def _fit_temperature(self) -> None:
        """Fit the softmax temperature on the suite's held-out split (never on the evaluated points)."""
        split = self.cal.get("temperature")
        if not split or split == "none":
            return
        from harness.calibration import fit_temperature, heldout_dataset

        held = heldout_dataset(self.dataset, str(split))
        logits, labels = [], []
        with torch.no_grad():
            bs = self.batch_size or 256
            for s in range(0, len(held), bs):
                xb, yb = held.batch(slice(s, min(len(held), s + bs)))
                logits.append(self.model(xb.to(self.device).float()).cpu())
                labels.append(yb)
        self.temperature = fit_temperature(torch.cat(logits), torch.cat(labels))
        self.temperature_split = {"split": str(split), "n": len(held)}

    def _setup_eot(self, findings: list) -> None:
        """Choose the EOT draw count (auto: EOT_AUTO_SAMPLES for a stochastic model) and pass it on."""
        stochastic = any(f.check == "stochastic" for f in findings)
        self.eot = self.config.eot_samples or (EOT_AUTO_SAMPLES if stochastic else 1)
        if self.eot == 1:
            return
        lacking = []
        for e, a in zip(self.entries, self.attackers):
            if hasattr(a, "eot_samples"):
                a.eot_samples = self.eot
            elif e.kind == "attack":
                lacking.append(e.key)
        msg = (
            f"results use EOT: attack gradients averaged over {self.eot} forward passes, every verdict "
            f"(clean and adversarial) the majority over {self.eot} passes"
        )
        if lacking:
            msg += f"; attacks without EOT support (run on single draws): {', '.join(lacking)}"
        findings.append(Finding("eot", "warning" if lacking else "info", msg, data={"eot_samples": self.eot}))

    def _aggregate(self, store: Any, findings: list, timing: dict[str, float], runner: BatchRunner) -> Result:
        K = self.dataset.num_classes
        groups = _groups(self.entries)
        clean_c = 0
        class_n = np.zeros(K, np.int64)
        class_clean = np.zeros(K, np.int64)
        g_correct = np.zeros(len(groups), np.int64)
        g_class = np.zeros((len(groups), K), np.int64)
        e_cum = np.zeros(len(self.entries), np.int64)
        e_first = np.zeros(len(self.entries), np.int64)  # broken by this entry and no earlier one
        e_tried = np.zeros(len(self.entries), np.int64)
        e_ties = np.zeros(len(self.entries), np.int64)  # broken at a float-level tie (harness/ties.py)
        g_ties = np.zeros(len(groups), np.int64)  # group verdicts that rest on a tie
        clean_ties = 0
        plan: list[Any] = []  # per chunk: the batch size used, or the sizes in order after an OOM back-off
        n = reruns = 0
        for chunk in store.iter_chunks():
            reruns += int(chunk["reruns"].sum()) if "reruns" in chunk else 0
            if "batch" in chunk:
                sizes = [int(b) for b, _ in itertools.groupby(chunk["batch"].tolist())]
                plan.append(sizes[0] if len(sizes) == 1 else sizes)
            lab = chunk["label"]
            ok = chunk["clean_pred"] == lab
            tie0 = chunk["clean_tie"].astype(bool) if "clean_tie" in chunk else np.zeros(len(lab), bool)
            clean_ties += int(tie0.sum())
            n += len(lab)
            clean_c += int(ok.sum())
            class_n += np.bincount(lab, minlength=K)
            class_clean += np.bincount(lab[ok], minlength=K)
            for gi, (_, members) in enumerate(groups):
                attack = self.entries[members[0]].kind == "attack"
                alive = ok.copy() if attack else np.ones(len(lab), bool)
                on_tie = ok & tie0 if attack else np.zeros(len(lab), bool)
                for k in members:
                    s_k = chunk[f"s{k}"]
                    t_k = (chunk[f"t{k}"] == 1) & (s_k == 0) if f"t{k}" in chunk else np.zeros(len(lab), bool)
                    e_first[k] += int((s_k == 0).sum())
                    e_tried[k] += int((s_k >= 0).sum())
                    e_ties[k] += int(t_k.sum())
                    on_tie |= alive & t_k  # broken first by this entry, at a tie
                    alive &= s_k == 1
                    e_cum[k] += int(alive.sum())
                g_correct[gi] += int(alive.sum())
                g_ties[gi] += int(on_tie.sum())
                g_class[gi] += np.bincount(lab[alive], minlength=K)
        per_class = lambda c: [float(a / b) if b else float("nan") for a, b in zip(c, class_n)]
        tie_groups = {gkey: int(g_ties[gi]) for gi, (gkey, _) in enumerate(groups)}
        out_groups = []
        for gi, (gkey, members) in enumerate(groups):
            first = self.entries[members[0]]
            out_groups.append(
                GroupResult(
                    key=gkey,
                    kind=first.kind,
                    accuracy=Accuracy.of(g_correct[gi], n),
                    norm=first.norm,
                    eps=first.eps,
                    corruption=first.name if first.kind == "corruption" else None,
                    severity=first.severity,
                    entries=[
                        {
                            **self.entries[k].describe(),
                            "config": _config_of(self.attackers[k]),
                            "cumulative": asdict(Accuracy.of(e_cum[k], n)),
                            "attacked": 0 if k in self.skipped else int(e_tried[k]),
                            **({"skipped": self.skipped[k]} if k in self.skipped else {}),
                            "broken_first": int(e_first[k]),
                            "black_box": _is_black_box(self.entries[k].name, self.attackers[k]),
                            "seconds": round(timing.get(self.entries[k].key, 0.0), 4),
                        }
                        for k in members
                    ],
                    per_class=per_class(g_class[gi]),
                )
            )
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
                    "used": sorted({b for c in plan for b in (c if isinstance(c, list) else [c])}, reverse=True),
                    "per_chunk": plan,
                },
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
                "eot_samples_used": self.eot,
                "precision_reruns": reruns,
            },
            environment=environment.describe(self.device),
            clean=Accuracy.of(clean_c, n),
            groups=out_groups,
            per_class_clean=per_class(class_clean),
            findings=findings + _tie_findings(clean_ties, tie_groups),
            record={
                "path": "records",
                "chunks": store.n_chunks,
                "config_hash": self.config_hash,
                "entries": [e.key for e in self.entries],
            },
            timing={"attack_s": round(sum(timing.values()), 4)},
            extra={
                "class_counts": class_n.tolist(),
                "ties": {
                    "tolerance_ulps": TIE_ULPS,
                    "clean": clean_ties,
                    "groups": tie_groups,
                    "entries": {self.entries[k].key: int(e_ties[k]) for k in range(len(self.entries))},
                },
            },
        )


def _rows(store: Any, cid: int) -> int:
    s, e = store.chunk_range(cid)
    return e - s


def _error_from(msg: tuple) -> HarnessError:
    """Rebuild on this rank the error another rank broadcast as (kind, class name, what, hint)."""
    import harness.errors as errors

    cls = getattr(errors, msg[1], None) or getattr(distributed, msg[1], None)
    if not (isinstance(cls, type) and issubclass(cls, HarnessError)):
        cls = HarnessError
    return cls(msg[2], msg[3])


def _tie_findings(clean: int, groups: dict[str, int]) -> list[Finding]:
    """An info finding when some verdicts rest on a float-level tie (decided by the tie rule, harness/ties.py)."""
    tied = {g: n for g, n in groups.items() if n}
    if not clean and not tied:
        return []
    parts = [f"{n} at {g}" for g, n in tied.items()] + ([f"{clean} clean"] if clean else [])
    return [
        Finding(
            "ties",
            "info",
            f"verdicts at a float-level tie (|margin| within {TIE_ULPS} float32 ulps of the logit scale), "
            f"counted as not robust: {', '.join(parts)}; on other hardware their argmax could go either way",
            data={"clean": clean, "groups": tied, "tolerance_ulps": TIE_ULPS},
        )
    ]


def _is_black_box(name: str, attacker: Any) -> bool:
    return name == "square" or bool(getattr(attacker, "black_box", False))


def _config_of(obj: Any) -> dict[str, Any]:
    cfg = getattr(obj, "config", None)
    return cfg() if callable(cfg) else {}


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda k: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as prog:
        task = prog.add_task(f"evaluate {label}", total=total)
        yield lambda k: prog.advance(task, k)


def evaluate(
    model: nn.Module,
    dataset: ImageDataset,
    suite: str | Suite = "quick",
    *,
    out: str | Path | None = None,
    name: str | None = None,
    config: EvalConfig | None = None,
    model_info: dict[str, Any] | None = None,
) -> Result:
    """Evaluate ``model`` on ``dataset`` with ``suite``; writes ``out/name/`` when a name is given."""
    return Evaluation(model, dataset, suite, out=out, name=name, config=config, model_info=model_info).run()
