"""The evaluation engine: `config` (how to run: EvalConfig, run names, locks, model hash) and
`evaluation` (the resumable, shardable per-chunk loop, verdicts, aggregation and post-run analyses).
Everything the rest of the harness uses is importable from ``harness.engine`` as before."""

from harness.engine.config import (
    CHECK_LEVELS,
    SEED_MAX,
    EvalConfig,
    check_run_name,
    config_hash,
    model_hash,
    parse_batch_size,
    run_lock,
)
from harness.engine.evaluation import EOT_AUTO_SAMPLES, Evaluation, evaluate

__all__ = [
    "CHECK_LEVELS",
    "EOT_AUTO_SAMPLES",
    "SEED_MAX",
    "EvalConfig",
    "Evaluation",
    "check_run_name",
    "config_hash",
    "evaluate",
    "model_hash",
    "parse_batch_size",
    "run_lock",
]
