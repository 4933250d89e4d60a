"""bench/claims.py's multi-seed summary: mean ± sd, the verdict over seeds, and a seed loaded from an earlier JSON."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def claims():
    spec = importlib.util.spec_from_file_location("bench_claims", ROOT / "bench" / "claims.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_claims"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_mean_sd_and_the_verdict_over_seeds(claims):
    m, sd = claims.mean_sd([0.01, 0.02, 0.03])
    assert m == pytest.approx(0.02) and sd == pytest.approx(0.01)  # sample sd: sqrt(2e-4 / 2)
    assert math.isnan(claims.mean_sd([0.5])[1])
    # mean 0.02, half-width 4.303 * 0.01 / sqrt(3) = 0.0248 > 0.02: the interval includes 0.
    assert claims.seed_verdict([0.01, 0.02, 0.03]) == "not established"
    assert claims.seed_verdict([0.019, 0.02, 0.021]) == "holds"  # half-width 0.0025
    assert claims.seed_verdict([0.05, -0.02, -0.04]) == "does not hold"
    assert claims.seed_verdict([0.05]) == "not established"  # one seed cannot hold


def test_claims_combine_over_seeds_with_a_seed_from_an_earlier_json(claims, tmp_path):
    def rows(hcot, cot):
        base = {"objective": "x", "condition": None, "fgsm": 0.5, "pgd": 0.5, "train_seconds": 1.0}
        return {"cot": {**base, "clean": cot}, "hcot": {**base, "clean": hcot}}

    meta = {"model": "mlp", "epochs": 20, "eps": claims.EPS, "test_samples": 539}
    earlier = tmp_path / "s0.json"
    earlier.write_text(json.dumps({"meta": {**meta, "seed": 0}, "runs": rows(0.974, 0.972)}))
    seed, loaded, per0 = claims.load_seed(earlier, meta)
    assert seed == 0 and loaded["hcot"]["n_test"] == 539
    per_seed = {0: per0}
    for s, (h, c) in {1: (0.972, 0.976), 2: (0.978, 0.978)}.items():
        per_seed[s] = claims.check_claims({k: {**v, "n_test": 539} for k, v in rows(h, c).items()})
    out = {c["claim"]: c for c in claims.combine_claims(per_seed)}
    hc = out["HCOT > COT on clean accuracy (digits hierarchy)"]
    assert hc["margins"] == pytest.approx([0.002, -0.004, 0.0])
    assert hc["status"] == "does not hold"  # mean margin -0.00067
    assert hc["per_seed"] == {"0": "not established", "1": "does not hold", "2": "does not hold"}
    assert hc["values_mean_sd"]["hcot"][0] == pytest.approx(0.9747, abs=1e-4)
    assert out["GAIRAT > PGD-AT under PGD-20"]["status"] == "skipped"
    md = claims.markdown_seeds({s: rows(0.97, 0.97) for s in (0, 1, 2)}, list(out.values()), {**meta, "seed": [0]})
    assert "| HCOT > COT on clean accuracy (digits hierarchy) | does not hold | -0.1 ± 0.3 |" in md
    with pytest.raises(SystemExit, match="epochs"):
        claims.load_seed(earlier, {**meta, "epochs": 15})
