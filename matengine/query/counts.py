"""Counts of a query and distinct string values of a table, computed where the rows are.

:func:`count_result` counts the rows a checked query (:func:`version_query` or
:func:`live_query`) matches, as MaterializationEngine's ``count=True`` does: filters
apply, ``limit`` and ``offset`` do not. The count is one ``SELECT count(*)`` in
PostgreSQL, except for root-id filters of a live query: stored roots may be stale at T,
so those rows are counted on the server after the exact root correction, reading only
their id, supervoxel and root columns (nothing is sent to the client but the number).

:func:`unique_string_values` answers caveclient's ``get_unique_string_values``: for each
string column of a table, its distinct non-null values among the current rows, sorted.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import Engine

from matengine import catalog
from matengine.config import get_settings
from matengine.db.connection import driver_connection
from matengine.db.identifiers import quote
from matengine.errors import MatengineError
from matengine.query.columns import ColKind, table_columns
from matengine.query.engine import QueryResult, _count, _scalar
from matengine.query.sqlbuild import Binder, select_tail

MAX_UNIQUE_VALUES = 100_000


class TooManyValues(MatengineError):
    status_code = 413


def count_result(result: QueryResult) -> int:
    from matengine.query.live_join import LiveJoinResult

    result = getattr(result, "inner", None) or result  # a view: count what it stands for
    if isinstance(result, LiveJoinResult):  # two tables' roots corrected: counted after that
        return result.count()
    plan = replace(result.plan, limit=None, spec=replace(result.plan.spec, offset=0))
    if plan.post_filters:
        return _count(plan, None)
    binder = Binder()
    source = plan.make_source(binder)
    where = [w(source, binder) for w in plan.where]
    tail = select_tail(source, where, binder, order=False)
    # one statement, bounded by the query timeout like every query step
    return int(_scalar(plan.engine, f"SELECT count(*) {tail}", binder.params, plan.guard.timeout) or 0)


def unique_string_values(engine: Engine, datastack: str, table: str) -> dict[str, list[str]]:
    tbl = catalog.get_table(engine, datastack, table)
    text_cols = [c for c in table_columns(tbl.schema).columns if c.kind is ColKind.TEXT and c.source == "a"]
    out: dict[str, list[str]] = {}
    raw = engine.raw_connection()
    try:
        conn = driver_connection(raw)
        seconds = get_settings().query_timeout
        if seconds and seconds > 0:  # bounded like every query step
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(seconds * 1000)}ms",))
        for c in text_cols:
            col = quote(c.db_column)
            rows = conn.execute(
                f"SELECT DISTINCT {col} FROM {tbl.names.live_q} "
                f"WHERE deleted IS NULL AND {col} IS NOT NULL ORDER BY {col} LIMIT %(n)s",
                {"n": MAX_UNIQUE_VALUES + 1},
            ).fetchall()
            if len(rows) > MAX_UNIQUE_VALUES:
                raise TooManyValues(f"column {c.name!r} has more than {MAX_UNIQUE_VALUES} distinct values")
            out[c.name] = [r[0] for r in rows]
    finally:
        raw.rollback()
        raw.close()
    return out
