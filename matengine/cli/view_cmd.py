"""``matengine view define|list|drop``: views of a datastack (see :mod:`matengine.views`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from matengine.cli.output import console, emit, print_table
from matengine.errors import InvalidInput

app = typer.Typer(help="Views: named queries over a datastack's tables.", no_args_is_help=True)


@app.command("define")
def define(
    datastack: str,
    name: str,
    definition: Path = typer.Option(..., help="JSON file with the view definition."),
    description: str = typer.Option("", help="Free text shown to users."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Define a view (or replace its definition; versions keep the one they were made with)."""
    from matengine import views

    try:
        body = json.loads(definition.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{definition}: not a readable JSON file ({exc})") from exc
    view = views.define_view(_engine(), datastack, name, body, description)
    emit(
        view.to_dict(),
        json_out,
        lambda: console.print(f"defined view {view.name} on {', '.join(view.tables)}"),
    )


@app.command("list")
def list_(datastack: str, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Views in force now."""
    from matengine import views

    rows = [v.to_dict() for v in views.list_views(_engine(), datastack)]
    emit(rows, json_out, lambda: print_table(rows, ["name", "description", "created"]))


@app.command("drop")
def drop(datastack: str, name: str) -> None:
    """Drop a view (versions made while it existed still answer it)."""
    from matengine import views

    views.drop_view(_engine(), datastack, name)
    console.print(f"dropped view {name}")


def _engine():  # imported on use: ``matengine --help`` must not load the database stack
    from matengine.db.connection import get_engine

    return get_engine()
