"""Named queries on matengine's bookkeeping tables (schema ``matengine``), written once, in
SQLAlchemy Core on the tables of :mod:`matengine.db.metadata` (docs/design.md §10), so no
module spells the schema or these statements by hand.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import Connection, and_, bindparam, func, select
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from matengine.db import metadata as m


def chunk_rows(
    conn: Connection, run_id: int, *, step_index: int | None = None, step_key: str | None = None
) -> int:
    """Rows the finished chunks of a run wrote: all of them, one step's (by index), or the
    step with key ``step_key``'s (``merge:syn``)."""
    c, s = m.run_chunks, m.run_steps
    stmt = select(func.coalesce(func.sum(c.c.rows), 0)).where(c.c.run_id == run_id)
    if step_index is not None:
        stmt = stmt.where(c.c.step_index == step_index)
    if step_key is not None:
        joined = c.join(s, and_(s.c.run_id == c.c.run_id, s.c.step_index == c.c.step_index))
        stmt = stmt.select_from(joined).where(s.c.key == step_key)
    return int(conn.execute(stmt).scalar_one())


def run_result(conn: Connection, run_id: int, key: str) -> Any:
    """One entry of a run's ``result`` document (None if absent)."""
    r = m.workflow_runs
    return conn.execute(select(r.c.result[key]).where(r.c.id == run_id)).scalar_one()


_t = m.annotation_tables
# for the query engine, which reads on the psycopg connection of its snapshot
_ROOT_TIMES = str(
    select(_t.c.roots_last_updated, _t.c.roots_updating_to)
    .where(_t.c.datastack == bindparam("datastack"), _t.c.table_name == bindparam("table"))
    .compile(dialect=psycopg_dialect.dialect())
)


def root_times(
    conn: psycopg.Connection, datastack: str, table: str
) -> tuple[datetime | None, datetime | None] | None:
    """``(roots_last_updated, roots_updating_to)`` of a table, read on a psycopg connection
    (in its transaction); None if the table is unknown."""
    row = conn.execute(_ROOT_TIMES, {"datastack": datastack, "table": table}).fetchone()
    return None if row is None else (row[0], row[1])
