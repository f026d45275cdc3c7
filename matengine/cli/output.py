"""How commands print: a rich table for people, one JSON document with ``--json``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich ``Console`` made on first use, so that importing a command module (as
    ``matengine --help`` does for all of them) does not import rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


console = _LazyConsole(stderr=False)
err_console = _LazyConsole(stderr=True)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2) + "\n")


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str = "") -> None:
    from rich.table import Table

    table = Table(title=title or None)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in columns])
    console.print(table)


def print_fields(data: Mapping[str, Any]) -> None:
    """``key  value`` lines for people: one record (plain text, no rich import)."""
    width = max((len(k) for k in data), default=0)
    for k, v in data.items():
        sys.stdout.write(f"{k:<{width}}  {'' if v is None else v}\n")


def emit(data: Any, json_out: bool, human: Callable[[], None]) -> None:
    if json_out:
        print_json(data)
    else:
        human()


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)
