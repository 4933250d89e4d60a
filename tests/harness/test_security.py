"""Security: bandit rules clean, nothing unpickles user input, writes stay under the output root."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["harness", "attacks", "defenses"]


def test_ruff_bandit_rules_are_clean_in_package_code():
    p = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--select", "S", "--ignore", "S101", "--no-cache", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(f.value, "id", getattr(f.value, "attr", "")) if isinstance(f, ast.Attribute) else ""
            yield node, owner, name


TRUSTED_JIT_LOADER = "harness/models/external.py"


def test_no_eval_exec_or_unsafe_unpickling_in_package_code():
    bad = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node, owner, name in _calls(ast.parse(path.read_text())):
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if isinstance(node.func, ast.Name) and name in ("eval", "exec", "compile", "__import__"):
                    bad.append(f"{where} {name}()")
                if owner in ("pickle", "marshal", "shelve", "dill") and name in ("load", "loads", "open"):
                    bad.append(f"{where} {owner}.{name}()")
                # The one TorchScript loader refuses unless trusted explicitly (tested in test_model_loading).
                if owner == "jit" and name == "load" and path.relative_to(ROOT).as_posix() != TRUSTED_JIT_LOADER:
                    bad.append(f"{where} torch.jit.load()")
                if owner == "torch" and name == "load":
                    kw = {k.arg: k.value for k in node.keywords}
                    if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                        bad.append(f"{where} torch.load without weights_only=True")
    assert not bad, bad


def _tree(d: Path) -> set[Path]:
    return {p for p in d.rglob("*")}


def test_runs_and_checkpoints_are_created_only_under_the_output_root(tmp_path, monkeypatch):
    from harness.api import evaluate, train
    from harness.reporting import build_report

    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _tree(tmp_path)
    data = "synthetic:channels=1,size=8,n=32"
    res = train("ce", "mlp", data, out=root / "models" / "m", epochs=1, eval_samples=0, progress=False, device="cpu")
    evaluate(res.checkpoint, data, out=root / "evals", name="e", device="cpu", progress=False)
    build_report([root / "evals" / "e"], root / "report")
    new = _tree(tmp_path) - before
    assert new and all(p == root or root in p.parents for p in new), sorted(p for p in new if root not in p.parents)
    assert not any(cwd.iterdir()), "something was written to the working directory"


def test_report_escapes_user_supplied_strings(tmp_path):
    """A model named like a script tag shows as text in report.html and report.md."""
    from harness.api import evaluate
    from harness.reporting import build_report

    evil = "<script>alert(1)</script>"
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    res = evaluate(model, "synthetic:channels=1,size=8,n=32", device="cpu", progress=False)
    res.model["name"] = evil
    res.name = evil
    report = build_report([res], tmp_path, title=evil)
    html = report.html.read_text()
    assert evil not in html and "&lt;script&gt;" in html
