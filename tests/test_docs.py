"""The docs say what the code does: every Python snippet, `harness.x.y` name and CLI line in them works.

README.md and docs/*.md are scanned. Python blocks must compile and their imports must succeed;
every dotted ``harness.…`` name must resolve from a plain ``import harness`` (as the README uses
it: ``import harness; harness.api.train(...)``); every ``harness SUBCOMMAND …`` line in a shell
block must parse with the real command-line parser (options exist, values have the right type),
without running anything. Running the snippets themselves would need models and data the docs
refer to (checkpoints, CIFAR folders) and minutes of training, so they are checked this far.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^( *)```(\w*)[^\n]*\n(.*?)^\1```", re.S | re.M)
NAME = re.compile(r"(?<![\w/.-])harness(?:\.[A-Za-z_]\w*)+")


def _blocks(lang: set[str]) -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for i, (indent, kind, body) in enumerate(BLOCK.findall(path.read_text())):
            if kind in lang:
                text = "\n".join(line[len(indent) :] for line in body.splitlines())
                out.append((f"{path.name}#{i}", text))
    return out


PYTHON = _blocks({"python"})
SHELL = _blocks({"", "bash", "sh", "console"})


def test_the_docs_have_snippets() -> None:
    assert len(PYTHON) >= 4 and len(SHELL) >= 10


@pytest.mark.parametrize("where, code", PYTHON, ids=[w for w, _ in PYTHON])
def test_python_snippet_compiles_and_its_imports_work(where: str, code: str) -> None:
    tree = ast.parse(code, filename=where)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert imports, f"{where}: a snippet should show its imports"
    exec(compile(ast.Module(body=imports, type_ignores=[]), where, "exec"), {})  # our own docs


def _names() -> list[str]:
    found = set()
    for path in DOCS:
        found |= set(NAME.findall(path.read_text()))
    return sorted(found)


@pytest.mark.parametrize("dotted", _names())
def test_every_harness_name_in_the_docs_resolves_from_import_harness(dotted: str) -> None:
    import harness

    obj: object = harness
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part)  # AttributeError: the docs name something that is not there


def _cli_lines() -> list[tuple[str, list[str]]]:
    """``harness SUB …`` commands of the shell blocks (continuations joined, comments and pipes cut)."""
    out = []
    for where, text in SHELL:
        for line in text.replace("\\\n", " ").splitlines():
            if not re.match(r"\s*(python -m )?harness\s", line):
                continue
            words = shlex.split(re.split(r"\s(?:\|\||&&|\||>|2>)\s", line)[0], comments=True)
            if words[:3] == ["python", "-m", "harness"]:
                words = words[2:]
            if len(words) >= 2 and words[0] == "harness" and not words[1].startswith("<"):
                out.append((where, words[1:]))
    return out


CLI = _cli_lines()


def test_the_docs_show_cli_commands() -> None:
    assert len(CLI) >= 20


@pytest.mark.parametrize("where, args", CLI, ids=[f"{w}:{' '.join(a)[:60]}" for w, a in CLI])
def test_cli_line_in_the_docs_parses(where: str, args: list[str]) -> None:
    """The documented options exist and take the documented values (parsed, not run)."""
    import typer

    from harness.cli import app
    from harness.registry import import_submodules

    import_submodules("harness.cli")
    group = typer.main.get_command(app)
    with group.make_context("harness", list(args), resilient_parsing=False) as ctx:
        pending = [*getattr(ctx, "protected_args", getattr(ctx, "_protected_args", [])), *ctx.args]
        name, sub, rest = group.resolve_command(ctx, pending)
        assert sub is not None, f"{where}: no subcommand {name!r}"
        sub.make_context(name, rest, parent=ctx)
