"""``matengine query``: the REST query engine, in-process, to JSON, Arrow or CSV.

Without ``--version`` or ``--timestamp`` the latest available version is read. Results are
written batch by batch, so a file of any size is produced with bounded memory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from matengine.cli.output import err_console

if TYPE_CHECKING:
    from matengine.query import QueryResult


def _pair(text: str, option: str) -> tuple[str, str]:
    col, sep, value = text.partition("=")
    if not sep or not col:
        raise typer.BadParameter(f"expected COLUMN=VALUE, got {text!r}", param_hint=option)
    return col.strip(), value


def _numbers(text: str, n: int, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n:
        raise typer.BadParameter(f"expected {n} comma-separated numbers, got {text!r}", param_hint=option)
    return values


def build_body(
    table: str,
    filter_in: list[str],
    filter_notin: list[str],
    filter_equal: list[str],
    bbox: str | None,
    bbox_column: str | None,
    select: str | None,
    limit: int | None,
    offset: int | None,
    desired_resolution: str | None,
) -> dict[str, Any]:
    """The request body the REST routes take, from command-line options."""
    body: dict[str, Any] = {}
    for key, items, option in (
        ("filter_in_dict", filter_in, "--filter-in"),
        ("filter_notin_dict", filter_notin, "--filter-notin"),
    ):
        conds: dict[str, list[str]] = {}
        for item in items:
            col, values = _pair(item, option)
            conds.setdefault(col, []).extend(v for v in values.split(",") if v != "")
        if conds:
            body[key] = {table: conds}
    if filter_equal:
        body["filter_equal_dict"] = {table: dict(_pair(i, "--filter-equal") for i in filter_equal)}
    if bbox is not None:
        if not bbox_column:
            raise typer.BadParameter("give --bbox-column (e.g. pre_pt_position)", param_hint="--bbox")
        v = _numbers(bbox, 6, "--bbox")
        body["filter_spatial_dict"] = {table: {bbox_column: [v[:3], v[3:]]}}
    if select:
        body["select_columns"] = [c.strip() for c in select.split(",") if c.strip()]
    if limit is not None:
        body["limit"] = limit
    if offset:
        body["offset"] = offset
    if desired_resolution:
        body["desired_resolution"] = _numbers(desired_resolution, 3, "--desired-resolution")
    return body


def _write(chunks: Any, path: Path | None) -> None:
    out = sys.stdout.buffer if path is None else path.open("wb")
    try:
        for chunk in chunks:
            out.write(chunk)
    finally:
        if path is not None:
            out.close()
        else:
            out.flush()


def _write_arrow(result: QueryResult, path: Path) -> int:
    import pyarrow as pa

    rows = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, result.schema) as writer:
        for batch in result.record_batches():
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def query(
    datastack: str = typer.Argument(..., help="Datastack name."),
    table: str = typer.Argument(..., help="Annotation table name."),
    version: int = typer.Option(None, "--version", help="Version to read (default: latest)."),
    timestamp: str = typer.Option(None, "--timestamp", help="Read the live tables at this ISO time instead."),
    filter_in: list[str] = typer.Option([], "--filter-in", help="COL=V1,V2,… (repeatable)."),
    filter_notin: list[str] = typer.Option([], "--filter-notin", help="COL=V1,V2,…"),
    filter_equal: list[str] = typer.Option([], "--filter-equal", help="COL=V (repeatable)."),
    bbox: str = typer.Option(None, "--bbox", help="x0,y0,z0,x1,y1,z1 (table voxels, inclusive)."),
    bbox_column: str = typer.Option(None, "--bbox-column", help="Position column, e.g. pt_position."),
    select: str = typer.Option(None, "--select", help="Columns to return, comma-separated."),
    limit: int = typer.Option(None, "--limit", min=1, help="At most N rows."),
    offset: int = typer.Option(None, "--offset", min=0, help="Skip N rows."),
    desired_resolution: str = typer.Option(
        None, "--desired-resolution", help="X,Y,Z nm per unit of returned positions."
    ),
    allow_missing_lookups: bool = typer.Option(
        False, "--allow-missing-lookups", help="With --timestamp: return rows not ingested yet."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON records to stdout."),
    arrow: Path = typer.Option(None, "--arrow", help="Write an Arrow IPC file."),
    csv: Path = typer.Option(None, "--csv", help="Write CSV."),
) -> None:
    """Query a version table, or the live tables at a timestamp."""
    from matengine.config import get_settings
    from matengine.db.connection import get_engine
    from matengine.errors import InvalidInput
    from matengine.query import live_query, meta, version_query
    from matengine.query.output import csv_stream, json_records

    if sum([json_out, arrow is not None, csv is not None]) != 1:
        raise typer.BadParameter("choose one output: --json, --arrow FILE or --csv FILE")
    if version is not None and timestamp is not None:
        raise typer.BadParameter("give --version or --timestamp, not both")
    body = build_body(
        table,
        filter_in,
        filter_notin,
        filter_equal,
        bbox,
        bbox_column,
        select,
        limit,
        offset,
        desired_resolution,
    )
    engine, settings = get_engine(), get_settings()
    if timestamp is not None:
        result = live_query(
            engine,
            datastack,
            table,
            timestamp,
            body,
            settings=settings,
            allow_missing_lookups=allow_missing_lookups,
        )
    else:
        if version is None:
            versions = meta.list_versions(engine, datastack)
            if not versions:
                raise InvalidInput(f"{datastack!r} has no available version; use --timestamp")
            version = versions[-1].version
        result = version_query(engine, datastack, version, table, body, settings=settings)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    if json_out:
        _write(json_records(result), None)
        sys.stdout.write("\n")
    elif arrow is not None:
        rows = _write_arrow(result, arrow)
        err_console.print(f"wrote {rows} rows to {arrow}")
    else:
        _write(csv_stream(result), csv)
        err_console.print(f"wrote {csv}")
