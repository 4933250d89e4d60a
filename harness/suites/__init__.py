"""Suites: ordered lists of threat models (attacks with eps, corruptions with severities).

Presets are TOML files shipped beside this module and registered in `SUITES` by file name; a user
suite is any TOML file of the same form (``--suite path/to/suite.toml``). Data, not code::

    summary = "one line"
    [[attack]]
    name = "pgd"           # a registered attack
    norm = "linf"
    eps = "dataset"        # a number, "8/255", a list of them, or "dataset" (the dataset's eps grid for that norm)
    params = { steps = 20, loss = "ce" }
    when = ["gradients"]   # optional: run only if the precheck raised one of these findings
    nested = false         # optional: attack every eps of the grid independently (default: a sample broken
                           # at a smaller eps of this norm keeps its adversarial point, harness/engine/nested.py)
    [[corruption]]
    name = "gaussian_noise"
    severity = [1, 2, 3, 4, 5]   # or "all"
    [[verify]]             # a verifier (harness list verifiers): proves robustness on the points the
    name = "crown"         # attacks of the same (norm, eps) left; robust accuracy becomes [verified, attacked]
    norm = "linf"
    eps = "dataset"
    params = { }
    [[smoothing]]          # randomized smoothing (Cohen et al. 2019): certify, then attack the smoothed model
    name = "smoothing-l2"  # a registered certifier (default)
    params = { sigma = 0.25, n0 = 100, n = 100000, alpha = 0.001, radii = [0.0, 0.25, 0.5] }
    [[radius]]             # per-sample radius interval [lower, upper] and the band over every eps (issue 22)
    norm = "linf"
    max_eps = "dataset"    # a number, "8/255", or "dataset" (the largest eps of the dataset's grid)
    attack = "fmn"         # a registered attack with a minimum-norm search (fmn, fab, fab-t, cw-l2)
    attack_params = { steps = 100 }
    verifier = "crown"     # ibp, crown, alpha-crown, milp (L-inf), or "none" (upper ends only)
    verifier_params = { }
    steps = 12             # bisection steps of the verifier's radius
    [calibration]          # optional: bootstrap resamples, bins, held-out split for temperature scaling
    bootstrap = 200
    temperature = "train"

Entries run in file order; put cheap attacks first, since samples they break are skipped later.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checks import PRECHECKS
from harness.errors import UsageError
from harness.labels import parse_eps
from harness.params import Param
from harness.records.kinds import entry_kind
from harness.registry import ATTACKS, CERTIFIERS, CORRUPTIONS, SUITES, VERIFIERS, Registry
from harness.suites.radius import RADIUS_FIELDS, RadiusSpec, radius_spec
from harness.threat import NORMS, ThreatModel, canonical_norm

PRESET_DIR = Path(__file__).parent
# [calibration]: bootstrap resamples, bins, and the held-out split temperature scaling is fitted on.
CALIBRATION_PARAMS = {
    "bootstrap": Param("bootstrap resamples of the confidence intervals", kind="int", ge=1, le=100_000),
    "bins": Param("confidence bins of the ECE", kind="int", ge=1, le=10_000),
    "temperature": Param("held-out split the softmax temperature is fitted on ('none': no scaling)", kind="str"),
}
CALIBRATION_KEYS = set(CALIBRATION_PARAMS)
# Stand-in radii for eps = "dataset" when a suite is checked before the dataset is known.
CHECK_EPS = {"linf": 8 / 255, "l2": 0.5}
# The fields of each kind of entry, and what each must hold (checked when the file is parsed).
ENTRY_FIELDS: dict[str, dict[str, str]] = {
    "attack": {
        "name": "name",
        "norm": "string",
        "eps": "eps",
        "params": "table",
        "label": "string",
        "when": "strings",
        "nested": "bool",
    },
    "corruption": {"name": "name", "severity": "severity", "params": "table"},
    "smoothing": {"name": "name", "params": "table", "label": "string"},
    "verify": {"name": "name", "norm": "string", "eps": "eps", "params": "table", "label": "string"},
    "radius": RADIUS_FIELDS,
}
# The kinds whose entries sit in a threat model (norm, eps) and the registry of each.
THREAT_REGISTRIES: dict[str, Registry[Any]] = {"attack": ATTACKS, "verify": VERIFIERS}
# What each field type accepts, in words (for the error message).
FIELD_TYPES = {
    "name": "a string (a registered name)",
    "string": "a string",
    "table": "a table, e.g. { steps = 20 }",
    "strings": "a string or a list of strings",
    "eps": "a positive number or fraction ('8/255'), a list of them, or 'dataset'",
    "severity": "an integer 1-5, a list of them, or 'all'",
    "bool": "true or false",
    "int": "an integer",
}
FIELD_EXAMPLES = {
    "name": '"pgd"',
    "string": '"pgd-margin"',
    "table": "{ steps = 20 }",
    "strings": '["gradients"]',
    "eps": '["4/255", "8/255"]',
    "severity": "[1, 2, 3]",
    "bool": "false",
    "int": "12",
}


@dataclass(frozen=True)
class Entry:
    """One resolved suite entry: an attack or a verifier at one (norm, eps), a corruption at one severity,
    or a certifier."""

    kind: str  # "attack" | "corruption" | "smoothing" | "verify" | "radius"
    name: str
    params: tuple[tuple[str, Any], ...] = ()
    norm: str | None = None
    eps: float | None = None
    severity: int | None = None
    label: str | None = None
    # Run only when the precheck raised one of these findings (e.g. a black-box attack on masking).
    when: tuple[str, ...] = ()
    # Nested eps (harness.engine.nested): a sample this entry breaks keeps its point for the larger eps of
    # the norm, and the entry takes the points found at smaller eps. False: every eps attacked independently.
    nested: bool = True

    @property
    def threat(self) -> ThreatModel | None:
        return ThreatModel(self.norm, self.eps) if self.kind in THREAT_REGISTRIES else None  # type: ignore[arg-type]

    @property
    def group(self) -> str:
        """Entries sharing a group are combined per sample (worst case) into one accuracy."""
        if self.kind in THREAT_REGISTRIES:
            return self.threat.key  # type: ignore[union-attr]
        if self.kind == "smoothing":
            return self.label or f"{self.name}-{dict(self.params).get('sigma', 'default')}"
        if self.kind == "radius":
            return self.label or f"radius-{self.norm}"
        return f"{self.name}-{self.severity}"

    @property
    def key(self) -> str:
        base = self.label or self.name
        return f"{base}@{self.group}" if self.kind in THREAT_REGISTRIES else self.group

    def build(self) -> Any:
        if self.kind in THREAT_REGISTRIES:
            return THREAT_REGISTRIES[self.kind].create(self.name, norm=self.norm, eps=self.eps, **dict(self.params))
        if self.kind == "smoothing":
            return CERTIFIERS.create(self.name, **dict(self.params))
        if self.kind == "radius":
            return RadiusSpec.of(str(self.norm), self.params).build()
        return CORRUPTIONS.create(self.name, **dict(self.params))

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "kind": self.kind, "name": self.name, "params": dict(self.params)}
        if self.kind in THREAT_REGISTRIES:
            d.update(norm=self.norm, eps=self.eps, group=self.group)
            if self.when:
                d["when"] = list(self.when)
            if not self.nested:  # only when not the default: config hashes of earlier suites stay the same
                d["nested"] = False
        elif self.kind == "smoothing":
            d.update(norm=self.norm, eps=None, group=self.group)
        elif self.kind == "radius":
            d["params"] = {k: _thaw(v) for k, v in self.params}
            d.update(norm=self.norm, eps=None, group=self.group)
        else:
            d.update(severity=self.severity, group=self.group)
        return d


@dataclass
class Suite:
    """A named list of entry specs; `resolve` fixes eps values for a dataset."""

    name: str
    summary: str = ""
    attacks: list[dict[str, Any]] = field(default_factory=list)
    corruptions: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    smoothing: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    verify: list[dict[str, Any]] = field(default_factory=list)
    radius: list[dict[str, Any]] = field(default_factory=list)

    def check(self) -> None:
        """Every entry's fields and declared parameters checked now, before a model or dataset is loaded.

        ``eps = "dataset"`` stands for any valid grid here; `resolve` checks the real values later.
        """
        self.resolve({n: (CHECK_EPS[n],) for n in NORMS}, unique=False)

    def resolve(self, eps_grid: dict[str, tuple[float, ...]] | None = None, *, unique: bool = True) -> list[Entry]:
        """The entries at the dataset's eps grid; ``unique=False`` skips the duplicate-key check."""
        eps_grid = eps_grid or {}
        entries: list[Entry] = []
        for i, spec in enumerate(self.attacks):
            entries += _threat_entries(self.name, "attack", i, spec, eps_grid)
        for i, spec in enumerate(self.corruptions):
            where = f"suite {self.name!r}, corruption #{i + 1}"
            _check_fields(spec, "corruption", where)
            name = _req(spec, "name", where)
            names = CORRUPTIONS.names() if name == "all" else [name]
            sev = spec.get("severity", "all")
            sevs = [1, 2, 3, 4, 5] if sev == "all" else ([sev] if _is_int(sev) else sev)
            if not isinstance(sevs, list) or not sevs or not all(_is_int(s) and 1 <= s <= 5 for s in sevs):
                raise UsageError(
                    f"{where}: field 'severity' must be {FIELD_TYPES['severity']}, not {sev!r}", "e.g. severity = 3"
                )
            params = _params(spec, where, reserved=("severity",))
            for n in names:
                CORRUPTIONS.get(n)
                for s in sevs:
                    _validate(CORRUPTIONS, n, where, {**params, "severity": s})
                    entries.append(Entry("corruption", n, tuple(sorted({**params, "severity": s}.items())), severity=s))
        for i, spec in enumerate(self.smoothing):
            where = f"suite {self.name!r}, smoothing #{i + 1}"
            _check_fields(spec, "smoothing", where)
            name = spec.get("name", "smoothing-l2")
            CERTIFIERS.get(name)
            params = _params(spec, where)
            _validate(CERTIFIERS, name, where, params)
            entries.append(Entry("smoothing", name, tuple(sorted(params.items())), norm="l2", label=spec.get("label")))
        for i, spec in enumerate(self.verify):
            entries += _threat_entries(self.name, "verify", i, spec, eps_grid)
        for i, spec in enumerate(self.radius):
            where = f"suite {self.name!r}, radius #{i + 1}"
            _check_fields(spec, "radius", where)
            r = radius_spec(spec, where, eps_grid)
            name, label = spec.get("name", "radius"), spec.get("label")
            entries.append(Entry("radius", name, r.params(), norm=r.norm, label=label))
        if unique:
            _check_verified_groups(self.name, entries)
        keys = [e.key for e in entries]
        dups = sorted({k for k in keys if keys.count(k) > 1})
        if dups and unique:
            raise UsageError(f"suite {self.name!r} has duplicate entries {dups}", "give them distinct 'label's")
        return entries

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "attacks": self.attacks,
            "corruptions": self.corruptions,
            "source": self.source,
            **({"smoothing": self.smoothing} if self.smoothing else {}),
            **({"calibration": self.calibration} if self.calibration else {}),
            **({"verify": self.verify} if self.verify else {}),
            **({"radius": self.radius} if self.radius else {}),
        }


def _thaw(v: Any) -> Any:
    """A frozen table (sorted pairs, `harness.suites.radius.freeze`) back to a dict; a tuple of names to a list."""
    if isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in v):
        return {k: _thaw(x) for k, x in v}
    if isinstance(v, tuple):
        return list(v)
    return v


def group_entries(entries: list[Entry]) -> list[tuple[str, list[int]]]:
    """Entries by group (threat model or corruption x severity) in suite order: (group key, entry indices).

    Within a group, verifiers (`EntryKind.lower_bound`) come after every other member: they run on
    the points the group's attacks left, whatever the order of the entry list.
    """
    order: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        order.setdefault(e.group, []).append(i)
    last = lambda k: entry_kind(entries[k].kind).lower_bound
    return [(g, sorted(ks, key=last)) for g, ks in order.items()]


def _threat_entries(suite: str, kind: str, i: int, spec: Any, eps_grid: dict[str, tuple[float, ...]]) -> list[Entry]:
    """The entries of one [[attack]] or [[verify]] table: one per eps, every parameter checked."""
    registry = THREAT_REGISTRIES[kind]
    where = f"suite {suite!r}, {kind} #{i + 1}"
    _check_fields(spec, kind, where)
    name = _req(spec, "name", where)
    if name not in registry:
        registry.get(name)  # raises with suggestions
    try:
        norm = canonical_norm(str(spec.get("norm", "linf")))
    except UsageError as e:
        raise UsageError(f"{where}: {e.what}", e.hint) from None
    eps_spec = spec.get("eps", "dataset")
    if eps_spec == "dataset":
        if norm not in eps_grid:
            raise UsageError(
                f"{where}: eps = 'dataset' but the dataset defines no {norm} eps grid",
                "give eps explicitly in the suite",
            )
        eps_list = list(eps_grid[norm])
    elif _is_eps(eps_spec):
        eps_list = [_eps_value(eps_spec, where)]
    elif isinstance(eps_spec, list) and eps_spec and all(map(_is_eps, eps_spec)):
        eps_list = [_eps_value(e, where) for e in eps_spec]
    else:
        raise UsageError(f"{where}: field 'eps' must be {FIELD_TYPES['eps']}, not {eps_spec!r}", "e.g. eps = 0.1")
    params = _params(spec, where, reserved=("norm", "eps"))
    when = _when(spec.get("when", []), where) if kind == "attack" else ()
    nested = bool(spec.get("nested", True)) if kind == "attack" else True  # nested eps: attacks only
    entries = []
    for eps in eps_list:
        try:
            ThreatModel(norm, eps)
        except UsageError as e:
            raise UsageError(f"{where}: {e.what}", e.hint) from None
        _validate(registry, name, where, {"norm": norm, "eps": eps, **params})
        entries.append(
            Entry(
                kind, name, tuple(sorted(params.items())), norm, eps, label=spec.get("label"), when=when, nested=nested
            )
        )
    return entries


def _check_verified_groups(suite: str, entries: list[Entry]) -> None:
    """Every verifier's threat model has an attack: it verifies the points the attacks leave (issue 22)."""
    attacked = {e.group for e in entries if e.kind == "attack"}
    for e in entries:
        if e.kind == "verify" and e.group not in attacked:
            raise UsageError(
                f"suite {suite!r}: verify entry {e.key} has no [[attack]] at its threat model ({e.group})",
                "a verifier runs on the points the attacks leave: add an attack with the same norm and eps",
            )


def parse_eps_grid(items: list[str] | None) -> dict[str, tuple[float, ...]] | None:
    """``["linf=8/255,0.1", "l2=1"]`` -> ``{"linf": (0.0313725..., 0.1), "l2": (1.0,)}`` (None when empty).

    Each value is a positive number or fraction (`parse_eps`); L-inf values are at most 1.
    """
    if not items:
        return None
    out: dict[str, tuple[float, ...]] = {}
    for item in items:
        norm, sep, values = item.partition("=")
        texts = [v for v in values.split(",") if v.strip()]
        if not sep or not texts:
            raise UsageError(f"--eps {item!r} is not NORM=V[,V...]", "e.g. --eps linf=4/255,8/255 --eps l2=0.5")
        key = canonical_norm(norm)
        out[key] = tuple(parse_eps(v, norm=key, what=f"--eps {key}") for v in texts)
    return out


def _when(value: Any, where: str) -> tuple[str, ...]:
    """An attack's ``when``: precheck finding names (a string or a list of them)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n in PRECHECKS for n in names):
        raise UsageError(f"{where}: when must name precheck findings, not {value!r}", f"use {', '.join(PRECHECKS)}")
    return tuple(names)


def _req(spec: dict[str, Any], key: str, where: str) -> Any:
    if key not in spec:
        raise UsageError(f"{where}: missing field {key!r}", f"add {key} = ... to the entry")
    return spec[key]


def _is_number(v: Any) -> bool:
    """A TOML number; a boolean is not one (``eps = true`` must not become eps 1.0)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_eps(v: Any) -> bool:
    """An eps as a suite may write it: a number or text such as "8/255" (`parse_eps` checks the value)."""
    return _is_number(v) or (isinstance(v, str) and v != "dataset")


def _eps_value(v: Any, where: str) -> float:
    """A number as it is (`ThreatModel` checks its range, with the usual messages); text such as "8/255"
    through `parse_eps` (a malformed fraction is one line naming the entry)."""
    return float(v) if _is_number(v) else parse_eps(v, what=f"{where}: eps")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fits(value: Any, field_type: str) -> bool:
    if field_type in ("name", "string"):
        return isinstance(value, str)
    if field_type == "table":
        return isinstance(value, dict)
    if field_type == "bool":
        return isinstance(value, bool)
    if field_type == "int":
        return _is_int(value)
    if field_type == "strings":
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    if field_type == "eps":
        return value == "dataset" or _is_eps(value) or (isinstance(value, list) and all(map(_is_eps, value)))
    if field_type == "severity":
        return value == "all" or _is_int(value) or (isinstance(value, list) and all(map(_is_int, value)))
    raise AssertionError(field_type)


def _check_fields(spec: Any, kind: str, where: str) -> None:
    """Every field of one entry holds the type its kind allows (one line naming the field otherwise)."""
    if not isinstance(spec, dict):
        raise UsageError(f"{where} must be a table ([[{kind}]]), not {spec!r}", f"write each entry as [[{kind}]]")
    for key, value in spec.items():
        ftype = ENTRY_FIELDS[kind].get(key)
        if ftype is not None and not _fits(value, ftype):
            raise UsageError(
                f"{where}: field {key!r} must be {FIELD_TYPES[ftype]}, not {value!r}",
                f"e.g. {key} = {FIELD_EXAMPLES[ftype]} (the suite format: docs/attacks.md, 'Suites')",
            )


def _params(spec: dict[str, Any], where: str, reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    params = spec.get("params", {})
    if not isinstance(params, dict):
        raise UsageError(f"{where}: field 'params' must be {FIELD_TYPES['table']}, not {params!r}")
    clash = [k for k in reserved if k in params]
    if clash:
        raise UsageError(
            f"{where}: {clash[0]!r} is a field of the entry, not a parameter",
            f"write {clash[0]} = ... beside name, outside params",
        )
    return params


def _validate(registry: Registry[Any], name: str, where: str, params: dict[str, Any]) -> None:
    """The entry's parameters checked against their declarations now, before any work is done."""
    try:
        registry.validate(name, **params)
    except UsageError as e:
        raise UsageError(f"{where}: {e.what}", e.hint) from None


def parse_suite(text: str, name: str, source: str = "") -> Suite:
    """Parse suite TOML; syntax errors name the line and column, schema errors the field."""
    what = f"suite {source or name}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{what}: malformed TOML: {e}", "fix the file and run again") from e
    tables = {"summary", "attack", "corruption", "smoothing", "calibration", "verify", "radius", "name"}
    unknown = sorted(set(data) - tables)
    if unknown:
        raise UsageError(
            f"{what}: unknown field(s) {unknown}",
            "allowed: summary, attack, corruption, smoothing, verify, radius, calibration",
        )
    for key in ("name", "summary"):
        if key in data and not isinstance(data[key], str):
            raise UsageError(f"{what}: field {key!r} must be a string, not {data[key]!r}", f'e.g. {key} = "..."')
    attacks, corruptions = data.get("attack", []), data.get("corruption", [])
    smoothing, calibration = data.get("smoothing", []), data.get("calibration", {})
    verify, radius = data.get("verify", []), data.get("radius", [])
    if not isinstance(calibration, dict) or sorted(set(calibration) - CALIBRATION_KEYS):
        raise UsageError(
            f"{what}: [calibration] must be a table with fields from {sorted(CALIBRATION_KEYS)}",
            "e.g. [calibration] bootstrap = 200",
        )
    for key, value in calibration.items():
        CALIBRATION_PARAMS[key].check(value, key, f"{what}: [calibration]")
    for label, items in (
        ("attack", attacks),
        ("corruption", corruptions),
        ("smoothing", smoothing),
        ("verify", verify),
        ("radius", radius),
    ):
        allowed = set(ENTRY_FIELDS[label])
        if not isinstance(items, list):
            raise UsageError(
                f"{what}: '{label}' must be an array of tables ([[{label}]]), not {items!r}",
                f"write each entry under its own [[{label}]] header",
            )
        for i, spec in enumerate(items):
            _check_fields(spec, label, f"{what}: {label} #{i + 1}")
            bad = sorted(set(spec) - allowed)
            if bad:
                line = _field_line(text, label, i, bad[0])
                at = what + (f" line {line}" if line else "")
                raise UsageError(
                    f"{at}: {label} #{i + 1} has unknown field(s) {bad}",
                    f"allowed: {', '.join(sorted(allowed))}",
                )
    return Suite(
        data.get("name", name),
        data.get("summary", ""),
        attacks,
        corruptions,
        source,
        smoothing,
        calibration,
        verify,
        radius,
    )


def _field_line(text: str, table: str, index: int, key: str) -> int | None:
    """The line of ``key`` inside the ``index``-th ``[[table]]`` block, for error messages."""
    seen, inside = -1, False
    for ln, line in enumerate(text.splitlines(), 1):
        st = line.strip()
        if st.startswith("["):
            if st.replace(" ", "") == f"[[{table}]]":
                seen += 1
                inside = seen == index
            else:
                inside = False
        elif inside and st.split("=", 1)[0].strip().strip('"') == key:
            return ln
    return None


def load_suite(spec: str | os.PathLike[str] | Suite) -> Suite:
    """A preset name or a path to a TOML file."""
    if isinstance(spec, Suite):
        return spec
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise UsageError(f"a suite is a preset name or a .toml path, not {spec!r}", "run `harness list suites`")
    p = Path(spec)
    if p.suffix == ".toml":
        if not p.is_file():
            raise UsageError(f"suite file {p} not found", "check the path, or name a preset (harness list suites)")
        return parse_suite(read_suite_text(p), p.stem, str(p))
    return SUITES.create(spec)


def read_suite_text(path: Path) -> str:
    """The file's text; a file that is not UTF-8 (as TOML requires) is one clear error."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(
            f"suite file {path} cannot be read: {e.strerror or e}", "check the path and its permissions"
        ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"suite {path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})",
            "TOML files are UTF-8: save the file as UTF-8",
        ) from None


def _register_presets() -> None:
    for path in sorted(PRESET_DIR.glob("*.toml")):
        text = path.read_text()

        def factory(_text: str = text, _name: str = path.stem) -> Suite:
            return parse_suite(_text, _name, f"preset {_name}")

        factory.__doc__ = parse_suite(text, path.stem).summary
        SUITES.add(path.stem, factory)


_register_presets()
