"""The one reader's rule on hand-built chunks: robust = clean right AND every entry of the group left it
robust; corruption groups stand alone; a record of another schema version is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import DataError
from harness.records import RecordStore
from harness.records.outcome import group_bits, members_by_group
from harness.records.schema import RECORD_SCHEMA, check_schema


def _chunk() -> dict[str, np.ndarray]:
    # 4 samples: clean right, right, wrong, right; two attacks and one corruption entry.
    return {
        "id": np.arange(4),
        "label": np.array([0, 1, 2, 3]),
        "clean_pred": np.array([0, 1, 0, 3], np.int16),
        "s0": np.array([1, 0, -1, 1], np.int8),  # first attack broke sample 1
        "s1": np.array([1, -1, -1, 0], np.int8),  # second attack broke sample 3
        "s2": np.array([1, 0, 1, 0], np.int8),  # corruption: sample 2 right although clean-wrong
    }


def test_group_bits_worst_case_over_the_group() -> None:
    c = _chunk()
    assert group_bits(c, "attack", [0, 1]).tolist() == [True, False, False, False]
    assert group_bits(c, "attack", [0]).tolist() == [True, False, False, True]
    assert group_bits(c, "corruption", [2]).tolist() == [True, False, True, False]


def test_members_by_group_keeps_suite_order() -> None:
    entries = [{"group": "linf-0.1"}, {"group": "l2-0.5"}, {"group": "linf-0.1"}]
    assert members_by_group(entries) == {"linf-0.1": [0, 2], "l2-0.5": [1]}


def test_other_schema_is_refused_in_one_line(tmp_path) -> None:
    check_schema(RECORD_SCHEMA, "here")
    with pytest.raises(DataError, match="schema 1; this harness reads schema"):
        check_schema(1, "chunk-000000.json")
    store = RecordStore(tmp_path, "h", 4, 4)
    store.write(0, _chunk())
    meta = tmp_path / "chunk-000000.json"
    meta.write_text(meta.read_text().replace(f'"schema": {RECORD_SCHEMA}', '"schema": 1'))
    with pytest.raises(DataError, match="again"):
        store.check_schema()
