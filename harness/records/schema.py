"""The per-sample record's columns: names, dtypes and meaning, in one place (schema version RECORD_SCHEMA).

Every reader and the engine's writer name columns through this module. Per-sample columns are one
value (or one row) per sample; entry ``k`` of the suite (in `Entry` order, see ``records/index.json``)
owns the columns ``status(k)``, ``margin(k)``, ``pred(k)``, ``tie(k)`` and, by kind, ``calib(k)`` or
the smoothing columns. A record of another schema version is recomputed by `harness evaluate` and
refused by the readers (`check_schema`), never read as if it were this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import DataError

# 2: calibration columns (clean_cal, c{k}) and smoothing columns. The verify entries' proof column q{k}
# (issue 22) is new to entries of a new kind: a schema-2 record of an older harness holds none, so it is
# never misread and the version stays 2. So are the radius entries' r{k}, u{k}, f{k}.
# The nested-eps column h{k} did not
# bump it: a record without it is one of independent attacks per eps, which is how a reader takes a
# missing h{k} (and the config hash of a nested evaluation differs, so the two never share a record).
RECORD_SCHEMA = 2

ID, LABEL = "id", "label"
CLEAN_PRED, CLEAN_MARGIN, CLEAN_CAL, CLEAN_TIE = "clean_pred", "clean_margin", "clean_cal", "clean_tie"
BATCH, RERUNS = "batch", "reruns"

# Values of status(k).
BROKEN, ROBUST, NOT_RUN = 0, 1, -1
# Values of proof(k), a verify entry's outcome per sample (NOT_RUN: not verified here — broken by an
# attack, wrong when clean, or already proven by an earlier verifier of the threat model).
PROOF_OPEN, PROOF_VERIFIED, PROOF_TIMEOUT, PROOF_UNCONFIRMED, PROOF_BROKEN = 0, 1, 2, 3, 4
PROOF_NAMES = {
    PROOF_OPEN: "open",
    PROOF_VERIFIED: "verified",
    PROOF_TIMEOUT: "timeout",
    PROOF_UNCONFIRMED: "unconfirmed",
    PROOF_BROKEN: "broken",
}


# Bits of a radius entry's flag column f{k}: the attack's point was not confirmed by the fp32 verdict
# (upper = +inf), the verifier ran out of time (lower is what it proved by then), lower > upper (a
# soundness bug, reported, never fixed).
RADIUS_UNCONFIRMED, RADIUS_TIMEOUT, RADIUS_VIOLATION = 1, 2, 4


@dataclass(frozen=True)
class Column:
    """One record column: its name (``{k}`` for an entry's), numpy dtype, and what it holds."""

    name: str
    dtype: str
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column(ID, "int64", "the sample's global dataset id (the RNG key)"),
    Column(LABEL, "int64", "the true class"),
    Column(CLEAN_PRED, "int16", "the clean prediction (fp32 verdict pass)"),
    Column(CLEAN_MARGIN, "float32", "clean logit margin z_y - max_{j!=y} z_j (-inf: non-finite logits)"),
    Column(CLEAN_CAL, "float32", "clean calibration stats (n, 3): confidence, log p_y, sum p^2; 6 with a temperature"),
    Column(CLEAN_TIE, "int8", "1: the clean verdict rests on a float-level tie (harness/ties.py)"),
    Column(BATCH, "int32", "the batch size in force when the sample was computed (halves on OOM)"),
    Column(RERUNS, "int8", "entries whose low-precision search was redone in fp32 (non-fp32 runs only)"),
    Column(
        "s{k}",
        "int8",
        "entry k: 1 robust/correct (verify: not broken), 0 broken, -1 not run (already broken or clean-wrong)",
    ),
    Column(
        "m{k}",
        "float32",
        "entry k: margin at the returned point (smoothing: certified radius; verify: certified lower bound "
        "on the margin, or the margin at a confirmed counterexample)",
    ),
    Column("p{k}", "int16", "entry k: prediction at the returned point (-1: not run)"),
    Column("t{k}", "int8", "entry k: 1 when its verdict rests on a float-level tie"),
    Column(
        "h{k}",
        "int32",
        "attack entry k, where nested eps applies: index of the entry whose adversarial point (found at a "
        "smaller eps of the norm) is this sample's verdict here, re-checked at this eps; -1: not inherited",
    ),
    Column("c{k}", "float32", "attack/corruption entry k: calibration stats at its point, as clean_cal"),
    Column("e{k}", "int8", "smoothing entry k: (n, radii) empirical robustness per radius"),
    Column("v{k}", "int8", "smoothing entry k: (n, radii) certificate violated per radius"),
    Column("a{k}", "float32", "smoothing entry k: lower confidence bound on p_A"),
    Column(
        "q{k}",
        "int8",
        "verify entry k: 1 verified, 0 open, 2 open (time limit), 3 open (a counterexample the fp32 verdict "
        "did not confirm), 4 broken (a confirmed counterexample), -1 not run",
    ),
    Column(
        "r{k}",
        "float64",
        "radius entry k: lower end of the sample's radius interval, the largest radius the verifier proves "
        "(0: wrong when clean, or none proven)",
    ),
    Column(
        "u{k}",
        "float64",
        "radius entry k: upper end, the engine's norm of the attack's smallest confirmed adversarial point "
        "(0: wrong when clean; +inf: none found or not confirmed)",
    ),
    Column("f{k}", "int8", "radius entry k: flags, RADIUS_UNCONFIRMED | RADIUS_TIMEOUT | RADIUS_VIOLATION"),
)


def status(k: int) -> str:
    return f"s{k}"


def margin(k: int) -> str:
    return f"m{k}"


def pred(k: int) -> str:
    return f"p{k}"


def tie(k: int) -> str:
    return f"t{k}"


def calib(k: int) -> str:
    return f"c{k}"


def proof(k: int) -> str:
    """A verify entry's per-sample outcome (PROOF_*)."""
    return f"q{k}"


def inherited(k: int) -> str:
    """Attack entry k's nested-eps source column (``h{k}``, harness.engine.nested)."""
    return f"h{k}"


def smoothing_columns(k: int) -> tuple[str, str, str]:
    """(empirical per radius, violated per radius, p_A lower bound) of smoothing entry k."""
    return f"e{k}", f"v{k}", f"a{k}"


def radius_columns(k: int) -> tuple[str, str, str]:
    """(lower radius, upper radius, flags) of radius entry k."""
    return f"r{k}", f"u{k}", f"f{k}"


def check_schema(version: object, where: str) -> None:
    """Refuse a record chunk of another schema version with one clear line (no migration exists yet)."""
    if version != RECORD_SCHEMA:
        raise DataError(
            f"{where} holds a record of schema {version!r}; this harness reads schema {RECORD_SCHEMA}",
            "run the same `harness evaluate` command again: it recomputes records of an older schema",
        )
