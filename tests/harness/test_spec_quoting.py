"""``key=value`` lists: commas inside quotes stay in the value (dataset specs as objective parameters)."""

from harness.spec import parse_kv


def test_quoted_value_keeps_commas():
    assert parse_kv(["aux='synthetic:channels=1,size=8',aux_batch=32"]) == {
        "aux": "synthetic:channels=1,size=8",
        "aux_batch": 32,
    }
    assert parse_kv(['a="x,y"', "b=[1,2],c=z"]) == {"a": "x,y", "b": [1, 2], "c": "z"}
