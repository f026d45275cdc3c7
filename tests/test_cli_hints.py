"""Every command a message or docstring tells the user to run exists in the CLI (a hint that
names a command that does not exist, e.g. ``matengine runs cancel 6``, sends users astray)."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

import matengine
from matengine.cli import app

HINT = re.compile(r"`matengine ([^`]*)`")
# where the command path ends: an argument, a placeholder or an option
ARGUMENT = re.compile(r"^(\{.*|[A-Z0-9].*|-.*|…|\[.*|<.*)$")


def hinted_commands() -> set[tuple[str, ...]]:
    found = set()
    for path in Path(matengine.__file__).parent.rglob("*.py"):
        for hint in HINT.findall(path.read_text()):
            words = []
            for word in hint.split():
                if ARGUMENT.match(word):
                    break
                words.append(word)
            for alternative in _alternatives(words):
                found.add(tuple(alternative))
    return found


def _alternatives(words: list[str]) -> list[list[str]]:
    """``db status|start|stop`` names three commands."""
    if not words or "|" not in words[-1]:
        return [words]
    return [[*words[:-1], w] for w in words[-1].split("|")]


def resolves(words: tuple[str, ...]) -> bool:
    command = typer.main.get_command(app)
    for word in words:
        group = getattr(command, "get_command", None)  # only groups have subcommands
        if group is None:
            return False
        sub = group(None, word)
        if sub is None:
            return False
        command = sub
    return True


def test_the_hints_are_found():
    hints = hinted_commands()
    assert ("cancel",) in hints and ("worker",) in hints and ("resume",) in hints


def test_every_hinted_command_exists():
    missing = sorted(" ".join(w) for w in hinted_commands() if not resolves(w))
    assert missing == [], f"hints name commands the CLI does not have: {missing}"


def test_a_command_that_does_not_exist_is_caught():
    assert not resolves(("runs", "cancel"))
    assert resolves(("cancel",)) and resolves(("db", "status"))
