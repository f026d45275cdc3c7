"""Exporting a version's views: each view is one more dataset, read through the query path.

A view is a definition (:mod:`matengine.views`), not a table: its rows are what querying it at
the version answers. So an export reads a view exactly as ``query_view`` at that version does
(:func:`matengine.query.views.view_query`, with the definition in force when the version was
made), with no row cap, and writes the batches as Parquet parts like a table's.

Order and cuts: the query path orders a view's rows by the id of its (first) table; the export
cuts them into disjoint ranges of that id of about ``chunk_rows`` rows of the table (a view's
filters or join may keep fewer, or a join more), one file per range.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Engine

from matengine.config import get_settings
from matengine.export.source import ExportLayout, plan_ranges, version_relation
from matengine.query import meta
from matengine.query.engine import QueryResult, restrict_ids
from matengine.query.views import view_columns, view_query
from matengine.views import View, get_view, list_views


def version_views(engine: Engine, datastack: str, version: int) -> list[View]:
    """The views of version ``version``: those in force when it was made."""
    info = meta.get_version(engine, datastack, version)
    return list_views(engine, datastack, at=info.created)


def view_at(engine: Engine, datastack: str, version: int, name: str) -> View:
    info = meta.get_version(engine, datastack, version)
    return get_view(engine, datastack, name, at=info.created)


def _query(engine: Engine, view: View, version: int) -> QueryResult:
    # every row: the deployment's row cap is for interactive queries, not for an export
    settings = get_settings().model_copy(update={"query_row_limit": None})
    return view_query(engine, view, {}, version=version, settings=settings)


def view_schema(engine: Engine, view: View, version: int) -> pa.Schema:
    """The Arrow schema of the view's rows (what ``query_view`` answers)."""
    return _query(engine, view, version).schema


def sort_column(engine: Engine, view: View) -> str | None:
    """The view's column holding its first table's id (what rows are ordered by), if selected."""
    first = view.tables[0]
    for c in view_columns(engine, view):
        if c.table == first and c.table_logical == "id":
            return c.name
    return None


def plan_view_ranges(conn: Connection, view: View, version: int, chunk_rows: int) -> list[list[int]]:
    """Disjoint inclusive ranges of the first table's id, about ``chunk_rows`` of its rows each."""
    first = view.tables[0]
    relation = version_relation(view.datastack, version, first)
    return plan_ranges(conn, relation, ExportLayout((), "id"), chunk_rows)


def view_part(
    engine: Engine, view: View, version: int, lo: int, hi: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The Arrow schema and, in order, the rows of the view at ``version`` whose first table's
    id is in ``[lo, hi]``: one query serves both."""
    result = restrict_ids(_query(engine, view, version), lo, hi)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from result.record_batches()
        finally:
            result.close()

    return result.schema, batches()


def view_rows(engine: Engine, view: View, version: int) -> int:
    """How many rows querying the view at ``version`` answers (one count in PostgreSQL)."""
    from matengine.query.counts import count_result

    return count_result(_query(engine, view, version))


def view_entry(engine: Engine, view: View, version: int) -> dict[str, Any]:
    """What the manifest says of a view besides its files."""
    key = sort_column(engine, view)
    return {
        "view_of": view.tables,
        "definition": view.definition,
        "defined": view.created.isoformat(),
        "sorted_by": [key] if key else [],
    }
