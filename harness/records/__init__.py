"""The per-sample record: its chunked store (`store`), its column schema (`schema`) and its one reader
of per-sample correctness (`outcome`). The store's names are importable from here as before."""

from harness.records.schema import RECORD_SCHEMA
from harness.records.store import (
    REPLACED,
    RERUN,
    RUN_OUTPUTS,
    RecordStore,
    check_result_matches_record,
    chunk_files,
    drop_set_aside,
    open_record,
    read_index,
    restore_set_aside,
    result_config_hash,
    set_aside_outputs,
)

__all__ = [
    "RECORD_SCHEMA",
    "REPLACED",
    "RERUN",
    "RUN_OUTPUTS",
    "RecordStore",
    "check_result_matches_record",
    "chunk_files",
    "drop_set_aside",
    "open_record",
    "read_index",
    "restore_set_aside",
    "result_config_hash",
    "set_aside_outputs",
]
