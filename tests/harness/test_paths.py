"""`harness.paths`: paths built from data stay under their root; files are checked before they are opened."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.errors import DataError, UsageError
from harness.paths import regular_file, safe_join

REFUSED_PARTS = [
    ("..", "is not a single folder"),
    (".", "is not a single folder"),
    ("", "is not a single folder"),
    ("../../etc", "is not a single folder"),
    ("a/b", "is not a single folder"),
    ("a\\b", "is not a single folder"),
    ("/etc/passwd", "is not a single folder"),
    ("x\0y", "is not a single folder"),
]


@pytest.mark.parametrize(("part", "match"), REFUSED_PARTS, ids=[repr(p) for p, _ in REFUSED_PARTS])
def test_safe_join_refuses_parts_that_could_leave_the_root(tmp_path: Path, part: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        safe_join(tmp_path, "ok", part, what="name")
    assert sorted(tmp_path.iterdir()) == []  # nothing created


def test_safe_join_follows_links_only_inside_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    os.symlink(root / "real", root / "inner")  # a link that stays inside: allowed
    os.symlink(outside, root / "out")  # a link leading out: refused, also for paths below it
    assert safe_join(root, "a..b", "c.json") == root / "a..b" / "c.json"  # dots inside a name are fine
    assert safe_join(root, "inner", "x") == root / "inner" / "x"
    for parts in (("out",), ("out", "x", "y.json")):
        with pytest.raises(UsageError, match=r"leads outside .* through a symbolic link"):
            safe_join(root, *parts)
    os.symlink(root / "loop", root / "loop")
    with pytest.raises(UsageError):
        safe_join(root, "loop", "x")


def test_regular_file_says_what_a_path_is_without_opening_it(tmp_path: Path) -> None:
    f = tmp_path / "f.npy"
    f.write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    os.symlink(f, tmp_path / "link")
    assert regular_file(f) == f and regular_file(tmp_path / "link") == tmp_path / "link"
    cases = {
        tmp_path / "pipe": "is a named pipe, not a regular file",
        tmp_path: "is a directory",
        tmp_path / "dangling": "is a dangling symbolic link",
        tmp_path / "missing": "no such file",
        Path("/dev/null"): "is a device",
    }
    for path, match in cases.items():
        with pytest.raises(DataError, match=match):
            regular_file(path)


def test_sweep_manifest_cell_names_stay_under_the_sweep(tmp_path: Path) -> None:
    """Cell names are read from OUT/sweep.json: a name leading out of OUT is refused, not followed."""
    from harness.reporting.runs import sweep_cells

    for name in ("../x", "/abs", "a/b"):
        (tmp_path / "sweep.json").write_text(json.dumps({"cells": [{"name": name}]}))
        with pytest.raises(UsageError, match=r"sweep\.json is unreadable|not a single folder"):
            sweep_cells(tmp_path)


def test_report_figure_names_from_model_names_stay_in_the_report_folder(tmp_path: Path) -> None:
    """Figure file names are built from model names (user data): a hostile name gives a file inside --out."""
    from harness.reporting import build_report
    from harness.results import Accuracy, GroupResult, Result

    r = Result(
        name="../../../escape",
        model={"name": "../../../escape"},
        dataset={"name": "../../x", "split": "test", "n": 10},
        suite={"name": "s"},
        config={},
        environment={},
        clean=Accuracy.of(8, 10),
        groups=[GroupResult("linf-0.1", "attack", Accuracy.of(5, 10), "linf", 0.1)],
        per_class_clean=[0.8] * 2,
    )
    rep = build_report([r], tmp_path / "out")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to((tmp_path / "out").resolve()) for p in written)
    assert rep.html.parent == tmp_path / "out"
