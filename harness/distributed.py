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

Faults. Every rank keeps a status file ``<run>/.ranks/rank-K.json`` (running / done / failed /
terminated). A rank that raises reports its error through the exchange and rank 0 names it; a rank
that dies outright (killed, segfault) never reports, torchrun then stops the others, and the
launcher (`launch`) or the surviving ranks read the status files to name the rank that vanished.
Finished chunks are kept, so running the same command again computes only the missing ones; under
``torchrun --max-restarts`` that happens automatically.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.atomic import write_json
from harness.errors import HarnessError, UsageError

# A rank waits for the slowest one at the final exchange: the timeout must cover a whole shard.
DEFAULT_TIMEOUT_S = 7 * 24 * 3600
STATUS_DIR = ".ranks"
LAUNCH_ENV = "HARNESS_LAUNCH_ID"


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


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device of this rank: ``auto`` picks cuda:LOCAL_RANK under torchrun when GPUs exist."""
    from harness import environment

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
    """
    _, world, local = env_world()
    if world == 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_available():
        raise UsageError("this PyTorch build has no torch.distributed", "run with one process")
    from harness import environment

    timeout = datetime.timedelta(seconds=environment.env("HARNESS_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=timeout)
        owns = True
    backend = dist.get_backend()
    group = None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return DistContext(dist.get_rank(), dist.get_world_size(), local, backend, owns, group)


# ---- rank status files -------------------------------------------------------------------------------
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
            "restart": os.environ.get("TORCHELASTIC_RESTART_COUNT"),
            **extra,
        },
    )


def read_statuses(run_dir: Path, world: int, launch_id: str | None = None) -> list[dict[str, Any] | None]:
    """Each rank's status (None when absent, unreadable, or written by another launch)."""
    out: list[dict[str, Any] | None] = []
    for r in range(world):
        try:
            d = json.loads(status_path(run_dir, r).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            d = None
        if not isinstance(d, dict) or (launch_id is not None and d.get("launch") != launch_id):
            d = None
        out.append(d)
    return out


def diagnose(run_dir: Path, world: int, launch_id: str | None = None, exclude: int | None = None) -> str | None:
    """A sentence naming the ranks that failed (their error) or vanished (no final status), if any.

    ``exclude`` is the asking rank, alive by definition.
    """
    sts = read_statuses(run_dir, world, launch_id)
    if exclude is not None:
        sts[exclude] = {"rank": exclude, "state": "asking"}
    if launch_id is not None and not any(sts):
        return None  # this launch never got past the start (its ranks printed why)
    parts = [f"rank {s['rank']} failed: {s.get('error', 'unknown error')}" for s in sts if s and s["state"] == "failed"]
    vanished = [r for r, s in enumerate(sts) if s is None or s.get("state") == "running"]
    if vanished:
        where = lambda r: f" (pid {sts[r]['pid']} on {sts[r]['host']})" if sts[r] else ""
        names = ", ".join(f"rank {r}{where(r)}" for r in vanished)
        parts.append(f"{names} stopped without reporting (killed or crashed)")
    return "; ".join(parts) or None


RERUN_HINT = "finished chunks are kept: run the same command again to compute only the missing ones"


@contextlib.contextmanager
def terminate_handler(run_dir: Path, ctx: DistContext) -> Iterator[None]:
    """While a distributed run works, SIGTERM (torchrun stopping survivors) names the failed rank."""
    if not ctx.active:
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        write_status(run_dir, ctx.rank, "terminated")
        cause = diagnose(run_dir, ctx.world_size, exclude=ctx.rank)
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
    """Run ``harness ARGS`` on ``nproc`` local ranks through torchrun; on failure name the rank."""
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, not {nproc}")
    if inside_torchrun():
        raise UsageError("--nproc given inside a torchrun job", "drop --nproc: torchrun already chose the ranks")
    launch_id = uuid.uuid4().hex
    env = {**os.environ, LAUNCH_ENV: launch_id}
    env.setdefault("OMP_NUM_THREADS", "1")
    rc = subprocess.call(torchrun_command(nproc, args, max_restarts=max_restarts), env=env)  # noqa: S603
    if rc != 0:
        cause = (
            diagnose(run_dir, nproc, launch_id) or f"torchrun exited with status {rc} (see the ranks' messages above)"
        )
        raise RankFailedError(f"distributed evaluation failed: {cause}", RERUN_HINT)
