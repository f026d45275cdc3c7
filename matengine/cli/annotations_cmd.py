"""``matengine annotations insert|update|delete|get``: rows of a live table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from matengine.cli.output import console, emit

app = typer.Typer(help="Rows of a live annotation table.", no_args_is_help=True, rich_markup_mode=None)


def _rows(source: str) -> list[dict]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    data = json.loads(text)
    if not isinstance(data, list):
        raise typer.BadParameter("expected a JSON list of rows")
    return data


def _ids(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated ids, got {value!r}") from None


@app.command()
def insert(
    datastack: str,
    table: str,
    rows: str = typer.Argument(..., help="JSON file with a list of rows, or - for stdin."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Insert rows (nested {"pt": {"position": [x,y,z]}} or flat pt_position; a
    derived_spatial_point table's at the top level: {"position": …, "dependent_chunk": …})."""
    from matengine import annotations as ann
    from matengine.db.connection import get_engine

    ids = ann.insert_annotations(get_engine(), datastack, table, _rows(rows))
    emit(ids, json_out, lambda: console.print(f"inserted {len(ids)} rows"))


@app.command()
def update(
    datastack: str,
    table: str,
    rows: str = typer.Argument(..., help="JSON rows, each with the id it replaces."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Supersede rows: new rows replace the given ids."""
    from matengine import annotations as ann
    from matengine.db.connection import get_engine

    mapping = ann.update_annotations(get_engine(), datastack, table, _rows(rows))
    data = {str(k): v for k, v in mapping.items()}
    emit(data, json_out, lambda: console.print(data))


@app.command()
def delete(
    datastack: str,
    table: str,
    ids: str = typer.Argument(..., help="Comma-separated ids."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Soft-delete rows."""
    from matengine import annotations as ann
    from matengine.db.connection import get_engine

    done = ann.delete_annotations(get_engine(), datastack, table, _ids(ids))
    emit(done, json_out, lambda: console.print(f"deleted {len(done)} rows"))


@app.command()
def get(
    datastack: str,
    table: str,
    ids: str = typer.Argument(..., help="Comma-separated ids."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Rows by id, deleted ones included."""
    from matengine import annotations as ann
    from matengine.db.connection import get_engine

    rows = ann.get_annotations(get_engine(), datastack, table, _ids(ids))
    emit(rows, json_out, lambda: console.print(rows))
