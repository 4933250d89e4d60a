"""`harness.schema.conform`: each shape accepts what it declares and names the first field that does not fit."""

from __future__ import annotations

import math

import pytest

from harness.schema import ANY, COUNT, FINITE, FRACTION, INT, NUMBER, STR, ListOf, MapOf, Obj, Opt, conform

SHAPE = Obj(
    {
        "name": STR,
        "n": COUNT,
        "ci": ListOf(FRACTION, length=2),
        "curve": ListOf(ListOf(FINITE, length=2), min_length=1),
        "meta": Opt(MapOf(ANY)),
        "bins": Obj({"edges": ListOf(NUMBER), "acc": ListOf(Opt(FRACTION))}, required=("edges", "acc"),
                    rule=(lambda d: len(d["edges"]) == len(d["acc"]) + 1, "edges must be one more than the bins")),
        "seed": INT,
    },
    required=("name", "n"),
)  # fmt: skip
GOOD = {
    "name": "x",
    "n": 3,
    "ci": [0.1, 0.9],
    "curve": [[0.0, 1.0]],
    "meta": None,
    "bins": {"edges": [0, 0.5, 1], "acc": [None, 1.0]},
    "seed": -4,
    "free": object(),  # keys the shape does not list are left alone
}

BAD = [
    ("required-missing", {"n": 3}, r"^r has no name$"),
    ("count-negative", {**GOOD, "n": -1}, r"^r\.n is -1, not an integer >= 0$"),
    ("bool-as-count", {**GOOD, "n": True}, r"^r\.n is True, not an integer >= 0$"),
    ("list-length", {**GOOD, "ci": [0.1]}, r"^r\.ci holds 1 items, not 2$"),
    ("fraction-inf", {**GOOD, "ci": [0.1, math.inf]}, r"^r\.ci\[1\] is inf, not a number in \[0, 1\]$"),
    ("list-too-short", {**GOOD, "curve": []}, r"^r\.curve holds 0 items, not at least 1$"),
    ("nested-nan", {**GOOD, "curve": [[0.0, math.nan]]}, r"^r\.curve\[0\]\[1\] is nan, not a finite number$"),
    ("not-an-object", {**GOOD, "meta": 5}, r"^r\.meta is 5, not an object$"),
    ("rule", {**GOOD, "bins": {"edges": [0, 1], "acc": []}}, r"^r\.bins: edges must be one more than the bins$"),
    ("float-as-int", {**GOOD, "seed": 1.5}, r"^r\.seed is 1\.5, not an integer$"),
    ("not-a-string", {**GOOD, "name": 7}, r"^r\.name is 7, not a string$"),
    # A long value is cut to 40 characters in the message.
    ("long-value-cut", {**GOOD, "n": list(range(30))}, r"^r\.n is \[0, 1, 2, [^]]{27}\.\.\., not an integer >= 0$"),
    ("top-not-object", [GOOD], r"^r is \[.*, not an object$"),
]


def test_a_document_of_the_declared_shape_passes() -> None:
    conform(GOOD, SHAPE, "r")
    conform({**GOOD, "ci": (0.0, 1.0), "meta": {"a": [1]}}, SHAPE, "r")  # a tuple is a list (in-memory results)


@pytest.mark.parametrize(("case", "doc", "message"), BAD, ids=[c for c, _, _ in BAD])
def test_the_first_misfit_is_named(case: str, doc: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        conform(doc, SHAPE, "r")
