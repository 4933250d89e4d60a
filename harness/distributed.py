"""Data-parallel evaluation on `torch.distributed` (launched by torchrun), sharded by chunk.

The per-sample record is already split into chunks of fixed dataset positions, each written
atomically and verified on resume, so sharding is a matter of who computes which missing chunk:

1. rank 0 takes the run lock, checks the run directory and lists the missing chunks; it broadcasts
   that list (or the error it hit) to every rank, so all ranks agree on the work even while files
   change under them;
2. rank r computes ``missing[r::world]`` (balanced also on resume) and writes its chunks;
3. all ranks exchange their outcome (ok, or the error) with one ``all_gather_object``; rank 0 then
   verifies that no chunk is missing, aggregates the record, and writes result.json and the report.

Results do not depend on the number of ranks: every random draw is keyed by (seed, global sample
id, suite entry) and a chunk is computed the same way whichever rank computes it.

Results do not depend on the number of ranks at verdict level; the records are bit-identical
when every rank uses the kernel configuration of the single process (same CPU capability and
threads per process: `launch` gives each rank one thread unless OMP_NUM_THREADS says otherwise,
so a single process matches it with OMP_NUM_THREADS=1; docs/reliability.md).

Faults. Every rank keeps a status file ``<run>/.ranks/rank-K.json`` (running / done / failed /
terminated) stamped with its launch and its attempt (torchrun's restart count). A rank that raises
reports its error through the exchange and rank 0 names it; a rank that dies outright (killed,
segfault) never reports, torchrun then stops the others, and the launcher (`launch`) or the
surviving ranks read the status files of the current attempt to name the rank that vanished (a
status left by an earlier attempt names a process that no longer exists: it is waited on briefly,
then reported as not started). Finished chunks are kept, so running the same command again
computes only the missing ones; under ``torchrun --max-restarts`` that happens automatically.

`launch` keeps the ranks' and torchrun's stderr in a log and, when the job fails, prints one line:
the first error a rank reported (its exit code too: 2 for a user error, the internal-error code
for a bug), or the rank that vanished.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from harness import environment, errors
from harness.atomic import write_json
from harness.errors import HarnessError, UsageError

T = TypeVar("T")
# A rank waits for the slowest one at the final exchange: the timeout must cover a whole shard.
DEFAULT_TIMEOUT_S = 7 * 24 * 3600
STATUS_DIR = ".ranks"
LAUNCH_ENV = "HARNESS_LAUNCH_ID"
# Set by `launch`: the folder where each rank writes the error that stopped it (rank-K-aN.json).
ERRORS_ENV = "HARNESS_LAUNCH_ERRORS"
RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"
# How long a rank that reads another rank's status from an earlier attempt waits for the new one.
NEW_RANK_WAIT_S = 10.0


class RankFailedError(HarnessError):
    """One or more ranks of a distributed evaluation failed or vanished; finished chunks are kept."""


@dataclass
class DistContext:
    """Where this process stands in the job: rank, world size, local rank, and the control group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False
    group: Any = None  # gloo group used for the object exchanges (also under NCCL)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[int]) -> list[int]:
        """This rank's share of ``items``: every world_size-th element starting at its rank."""
        return list(items[self.rank :: self.world_size])

    # ---- collectives (identity with one process) ---------------------------------------------------
    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            with contextlib.suppress(Exception):
                dist.destroy_process_group()
            self.owns_group = False


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) outside torchrun."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise UsageError(
            f"malformed torchrun environment ({e})", "launch with torchrun or unset RANK/WORLD_SIZE"
        ) from e
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} does not fit WORLD_SIZE={world}", "launch with torchrun")
    return rank, world, local


def rank_device(device: str | torch.device | None) -> torch.device:
    """The device of this rank (`environment.resolve_device`, then ``auto`` picks cuda:LOCAL_RANK under
    torchrun when GPUs exist)."""
    dev = environment.resolve_device(device)
    _, world, local = env_world()
    if world > 1 and dev.type == "cuda" and dev.index is None:
        n = torch.cuda.device_count()
        dev = torch.device("cuda", local % max(1, n))
    return dev


def setup(device: torch.device) -> DistContext:
    """Join the job described by torchrun's environment (no-op with one process).

    Uses an existing default process group when the caller made one; otherwise initialises one
    (NCCL on GPU, gloo on CPU) and destroys it in `DistContext.close`. Object exchanges always go
    through a gloo group, which needs no device and works beside NCCL.

    The group's keys in the rendezvous store are prefixed with the attempt (torchrun's restart
    count): torchrun serves every attempt from the same agent store, so without the prefix the
    ranks of a restarted job read the addresses the killed attempt published and fail to connect.
    """
    _, world, local = env_world()
    if world == 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed", "run with one process")

    timeout = datetime.timedelta(seconds=environment.env("HARNESS_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
        store = dist.PrefixStore(f"harness/attempt-{current_attempt()}/", store)
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=size, timeout=timeout)
        owns = True
    backend = dist.get_backend()
    group = None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, backend, owns, group)


# ---- rank status files -------------------------------------------------------------------------------
def current_attempt() -> int:
    """This process's attempt: torchrun's restart count (0 for the first attempt and outside torchrun)."""
    try:
        return max(0, int(os.environ.get(RESTART_ENV, "0")))
    except ValueError:
        return 0


def status_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / STATUS_DIR / f"rank-{rank}.json"


def write_status(run_dir: Path, rank: int, state: str, **extra: Any) -> None:
    write_json(
        status_path(run_dir, rank),
        {
            "rank": rank,
            "state": state,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "launch": os.environ.get(LAUNCH_ENV),
            "restart": os.environ.get(RESTART_ENV),
            "attempt": current_attempt(),
            **extra,
        },
    )


def _attempt_of(status: dict[str, Any]) -> int:
    try:
        return int(status.get("attempt", status.get("restart") or 0))
    except (TypeError, ValueError):
        return 0


def _belongs(status: dict[str, Any], launch_id: str | None, attempt: int | None) -> bool:
    """True when ``status`` was written by ``launch_id`` (any, if None) in ``attempt`` (any, if None)."""
    if launch_id is not None and status.get("launch") != launch_id:
        return False
    return attempt is None or _attempt_of(status) == attempt


def read_statuses(
    run_dir: Path, world: int, launch_id: str | None = None, attempt: int | None = None
) -> list[dict[str, Any] | None]:
    """Each rank's status (None when absent, unreadable, or written by another launch or attempt)."""
    out: list[dict[str, Any] | None] = []
    for r in range(world):
        try:
            d = json.loads(status_path(run_dir, r).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            d = None
        if not isinstance(d, dict) or not _belongs(d, launch_id, attempt):
            d = None
        out.append(d)
    return out


def last_attempt(run_dir: Path, world: int, launch_id: str | None) -> int:
    """The latest attempt of ``launch_id`` any rank wrote a status for (0 when none did)."""
    return max((_attempt_of(s) for s in read_statuses(run_dir, world, launch_id) if s), default=0)


def diagnose(
    run_dir: Path,
    world: int,
    launch_id: str | None = None,
    exclude: int | None = None,
    attempt: int | None = None,
    wait_s: float = 0.0,
) -> str | None:
    """A sentence naming the ranks that failed (their error) or vanished (no final status), if any.

    Only statuses of ``attempt`` count (default: the latest attempt of the launch): a status left
    by an earlier attempt names a process torchrun already replaced. A rank without a status of
    this attempt is waited on for up to ``wait_s`` seconds (it may be starting), then reported as
    not started. ``exclude`` is the asking rank, alive by definition.
    """
    if attempt is None:
        attempt = last_attempt(run_dir, world, launch_id)
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        sts = read_statuses(run_dir, world, launch_id, attempt)
        if exclude is not None:
            sts[exclude] = {"rank": exclude, "state": "asking"}
        if all(sts) or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if launch_id is not None and not any(sts):
        return None  # this launch never got past the start (its ranks printed why)
    parts = [f"rank {s['rank']} failed: {s.get('error', 'unknown error')}" for s in sts if s and s["state"] == "failed"]
    vanished = [r for r, s in enumerate(sts) if s is not None and s.get("state") == "running"]
    if vanished:
        names = ", ".join(f"rank {r} (pid {sts[r]['pid']} on {sts[r]['host']})" for r in vanished)  # type: ignore[index]
        parts.append(f"{names} stopped without reporting (killed or crashed)")
    absent = [r for r, s in enumerate(sts) if s is None]
    if absent:
        which = f" of attempt {attempt}" if attempt else ""
        names = ", ".join(f"rank {r}" for r in absent)
        parts.append(f"{names} never reported{which} (did not start, or was killed while starting)")
    return "; ".join(parts) or None


RERUN_HINT = "finished chunks are kept: run the same command again to compute only the missing ones"


def peer_failure(run_dir: Path, ctx: DistContext, wait_s: float = 0.0) -> str | None:
    """From inside a rank: which other ranks of this launch and attempt failed or vanished."""
    return diagnose(
        run_dir,
        ctx.world_size,
        os.environ.get(LAUNCH_ENV),
        exclude=ctx.rank,
        attempt=current_attempt(),
        wait_s=wait_s,
    )


@contextlib.contextmanager
def terminate_handler(run_dir: Path, ctx: DistContext) -> Iterator[None]:
    """While a distributed run works, SIGTERM (torchrun stopping survivors) names the failed rank."""
    if not ctx.active:
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        write_status(run_dir, ctx.rank, "terminated")
        cause = peer_failure(run_dir, ctx)
        msg = f"rank {ctx.rank} stopped by the launcher" + (f" because {cause}" if cause else "")
        print(f"error: {msg}; {RERUN_HINT}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---- launching ------------------------------------------------------------------------------------------
def inside_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def torchrun_command(nproc: int, args: Sequence[str], *, max_restarts: int = 0) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m harness ARGS``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "harness",
        *args,
    ]


def launch(nproc: int, args: Sequence[str], run_dir: Path, *, max_restarts: int = 0) -> None:
    """Run ``harness ARGS`` on ``nproc`` local ranks through torchrun; on failure raise one clear error.

    The ranks' stdout (progress, the results table) passes through; their stderr and torchrun's go
    to a log, replayed on success. On failure the error is the first one a rank reported (with its
    exit code: 2 for a user error, the internal-error code for a bug), else the rank that vanished.
    """
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, not {nproc}")
    if inside_torchrun():
        raise UsageError("--nproc given inside a torchrun job", "drop --nproc: torchrun already chose the ranks")
    launch_id = uuid.uuid4().hex
    work = Path(tempfile.mkdtemp(prefix="harness-launch-"))
    errors_dir = work / "errors"
    errors_dir.mkdir()
    env = {**os.environ, LAUNCH_ENV: launch_id, ERRORS_ENV: str(errors_dir)}
    # One thread per rank: ranks share the cores. A single process matches the ranks' records bit
    # for bit with the same OMP_NUM_THREADS (docs/reliability.md).
    env.setdefault("OMP_NUM_THREADS", "1")
    log = work / "stderr.log"
    try:
        with open(log, "wb") as err:
            rc = subprocess.call(torchrun_command(nproc, args, max_restarts=max_restarts), env=env, stderr=err)  # noqa: S603
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if rc == 0:
        _replay(log)
        shutil.rmtree(work, ignore_errors=True)
        return
    error = launch_error(errors_dir, run_dir, nproc, launch_id, rc, log)
    if error.exit_code == int(UsageError.exit_code) and not isinstance(error, RankFailedError):
        shutil.rmtree(work, ignore_errors=True)  # a user error: the one line says everything
    raise error


def _replay(log: Path) -> None:
    """Copy what the ranks wrote to stderr (warnings) to this process's stderr."""
    try:
        data = log.read_bytes()
    except OSError:
        return
    if data:
        sys.stderr.write(data.decode(errors="replace"))
        sys.stderr.flush()


# ---- errors reported by the ranks of a launch -------------------------------------------------------------
def internal_exit_code() -> int:
    """The exit code of an unexpected (non-`HarnessError`) failure, as the CLI gives it."""

    code = getattr(getattr(errors, "ExitCode", None), "INTERNAL", None)
    return int(code) if code is not None else 1


@contextlib.contextmanager
def reporting_errors() -> Iterator[None]:
    """On a rank started by `launch`: record the exception that stops this rank for the launcher, then re-raise.

    A no-op elsewhere. The record holds what, hint, exit code and time, so the launcher can print
    the first failure as one line with the rank's own exit code.
    """
    folder = os.environ.get(ERRORS_ENV)
    try:
        yield
    except BaseException as e:
        if folder and not isinstance(e, (SystemExit, KeyboardInterrupt)):
            with contextlib.suppress(Exception):
                write_error_report(Path(folder), e)
        raise


def reporting(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` run under `reporting_errors` (for a one-line change at a rank's entry point)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        with reporting_errors():
            return fn(*args, **kwargs)

    return run


def write_error_report(folder: Path, e: BaseException) -> None:
    """Write ``e`` as this rank's error report for the current attempt (what, hint, exit code, time)."""
    rank = int(os.environ.get("RANK", "0") or 0)
    internal = not isinstance(e, HarnessError)
    if isinstance(e, HarnessError):
        what, hint, code = e.what, e.hint, int(e.exit_code)
    else:
        lines = str(e).strip().splitlines()
        what, hint, code = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__, None, internal_exit_code()
    write_json(
        folder / f"rank-{rank}-a{current_attempt()}.json",
        {
            "rank": rank,
            "attempt": current_attempt(),
            "time": time.time(),
            "kind": type(e).__name__,
            "what": what,
            "hint": hint,
            "exit_code": code,
            "internal": internal,
        },
    )


def read_error_reports(folder: Path) -> list[dict[str, Any]]:
    """The ranks' error reports, earliest first (unreadable ones skipped)."""
    out = []
    for p in Path(folder).glob("rank-*-a*.json"):
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(d, dict) and isinstance(d.get("what"), str) and isinstance(d.get("exit_code"), int):
            out.append(d)
    return sorted(out, key=lambda d: (float(d.get("time") or 0), int(d.get("rank") or 0)))


def launch_error(errors_dir: Path, run_dir: Path, nproc: int, launch_id: str, rc: int, log: Path) -> HarnessError:
    """The one error a failed launch raises: the first rank error of the last attempt, or the vanished rank."""
    reports = read_error_reports(errors_dir)
    attempt = max([last_attempt(run_dir, nproc, launch_id)] + [int(r.get("attempt") or 0) for r in reports])
    # A rank's own error first; RankFailedError is rank 0 (or a peer) relaying that error.
    mine = sorted(
        (r for r in reports if int(r.get("attempt") or 0) == attempt),
        key=lambda r: r.get("kind") == RankFailedError.__name__,
    )
    if mine:
        first = mine[0]
        same = all(r["what"] == first["what"] for r in mine) and len(mine) == nproc
        where = "" if same else f"rank {first['rank']}: "
        if first.get("internal"):
            err: HarnessError = RankFailedError(
                f"internal error on rank {first['rank']}: {first['what']}",
                f"this is a bug in harness, not in your input; the ranks' output is in {log}; please report it",
            )
        else:
            cls = _error_class(str(first.get("kind")))
            err = cls(f"{where}{first['what']}", first.get("hint"))
        err.exit_code = int(first["exit_code"])
        return err
    cause = diagnose(run_dir, nproc, launch_id, attempt=attempt)
    if cause is None:
        line = _first_error_line(log)
        if line is not None:  # a rank stopped before its entry point, with the CLI's one-line message
            err = HarnessError(*line[1])
            err.exit_code = line[0]
            return err
        cause = f"torchrun exited with status {rc} before any rank reported"
    return RankFailedError(f"distributed evaluation failed: {cause}", f"{RERUN_HINT}; the ranks' output is in {log}")


def _first_error_line(log: Path) -> tuple[int, tuple[str, str | None]] | None:
    """(exit code, (what, hint)) of the first ``error: ...`` / ``internal error: ...`` line a rank printed."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        for prefix, code in (("error: ", int(UsageError.exit_code)), ("internal error: ", internal_exit_code())):
            if line.startswith(prefix):
                what, _, hint = line[len(prefix) :].partition(" — hint: ")
                return code, (what.strip(), hint.strip() or None)
    return None


def _error_class(name: str) -> type[HarnessError]:
    import harness.errors as errors

    cls = getattr(errors, name, None) or globals().get(name)
    return cls if isinstance(cls, type) and issubclass(cls, HarnessError) else HarnessError
