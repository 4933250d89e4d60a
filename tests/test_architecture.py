"""The architecture holds: the import-linter contracts (layers, attacks/defenses independence) are kept,
and no module imports another module's private name (docs/architecture.md)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "attacks", "defenses")


def test_import_contracts_are_kept() -> None:
    # The contracts are in pyproject.toml ([tool.importlinter]); lint-imports reads them from the repo root.
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def _private_imports(path: Path) -> list[str]:
    """``from x import _name`` and ``x._name`` where x is another harness/attacks/defenses module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
            for a in node.names:
                if ours and a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{path.name}:{node.lineno}: from {node.module} import {a.name}")
                if ours:
                    modules.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in PACKAGES:
                    modules.add((a.asname or a.name).split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            out.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return out


def test_no_private_names_across_modules() -> None:
    found = [hit for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py")) for hit in _private_imports(p)]
    assert not found, "private names used across modules (make them public or move them):\n" + "\n".join(found)


def test_private_import_scan_finds_planted_ones(tmp_path: Path) -> None:
    p = tmp_path / "planted.py"
    p.write_text("from attacks.pgd import _hidden\nfrom harness import engine\nimport torch\nengine._x\ntorch._C\n")
    assert _private_imports(p) == ["planted.py:1: from attacks.pgd import _hidden", "planted.py:4: engine._x"]


def test_renamed_check_concepts_keep_their_former_public_names():
    """The word "check" names the sanity checks only; the gate's metric decisions and the attack contract have
    their own words (docs/architecture.md, vocabulary), with the former public names kept as aliases."""
    from harness import gate, threat
    from harness.gate.decide import GateReport

    assert gate.MetricCheck is gate.MetricDecision
    assert threat.check_contract is threat.enforce_contract
    d = gate.MetricDecision("linf-0.1", "attack", 10, 0.5)
    assert GateReport([d], 0.01, 0.05, 10, 0, "m").checks == [d]
