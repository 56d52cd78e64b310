"""Every `localq ...` command that a hint, error, notice or the README names exists, with its options.

The strings are read from localq's source with ``ast`` (every string constant and
the literal parts of every f-string; a ``{...}`` placeholder stands for a value),
so a new hint is checked without being listed here. Each backticked ``localq ...``
is walked down the real click command tree: every command word must be a
command or subcommand, and every ``--option`` must belong to that command.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
import pytest

import localq
from localq.cli import cli

ROOT = Path(localq.__file__).parent
README = ROOT.parent / "README.md"
COMMAND_RE = re.compile(r"`(localq(?: [a-z-][^`]*)?)`")   # not `localq ─ Models` (a title)
PLACEHOLDER = "VALUE"


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else PLACEHOLDER for v in node.values), node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value, node.lineno


def named_commands() -> list[tuple[str, str]]:
    """(where, command text) for every backticked `localq ...` in the package and the README."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for text, line in _strings(ast.parse(path.read_text())):
            found += [(f"{path.relative_to(ROOT.parent)}:{line}", m) for m in COMMAND_RE.findall(text)]
    if README.exists():
        found += [("README.md", m) for m in COMMAND_RE.findall(README.read_text())]
    return found


def check_command(text: str) -> str | None:
    """None when ``text`` names a real command with real options, else what is wrong."""
    try:
        words = shlex.split(text)[1:]
    except ValueError:
        words = text.split()[1:]
    command: click.Command = cli
    while words and isinstance(command, click.Group) and not words[0].startswith("-"):
        word = words[0]
        if word.isupper() or word == PLACEHOLDER:   # MODEL, ID: a placeholder argument
            break
        sub = command.commands.get(word)
        if sub is None:
            if command is cli or not command.params or not any(isinstance(p, click.Argument) for p in command.params):
                return f"no command {word!r} under {command.name!r}"
            break
        command, words = sub, words[1:]
    options = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts + p.secondary_opts}
    options |= {"--help"}
    for word in words:
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            if name not in options:
                return f"{command.name!r} has no option {name}"
    return None


COMMANDS = named_commands()


def test_the_walk_finds_the_hints():
    # a sanity floor: the hints localq prints today name at least these
    texts = {t for _, t in COMMANDS}
    assert any(t.startswith("localq pull") for t in texts) and any(t.startswith("localq recommend") for t in texts)


@pytest.mark.parametrize("where, text", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_named_command_exists(where, text):
    problem = check_command(text)
    assert problem is None, f"{where}: `{text}`: {problem}"


@pytest.mark.parametrize("text, problem", [
    ("localq frobnicate smollm2:135m --to q4_k_m", "no command 'frobnicate'"),
    ("localq pull MODEL --no-such-flag", "'pull' has no option --no-such-flag"),
    ("localq history export 3 --format json", None),
    ("localq run smollm2:135m --temperature 0", None),
])
def test_the_checker_tells_real_commands_from_invented_ones(text, problem):
    found = check_command(text)
    assert (found is None) if problem is None else (problem in found)
