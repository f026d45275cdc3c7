"""Named queries on matengine's bookkeeping tables (schema ``matengine``), written once, in
SQLAlchemy Core on the tables of :mod:`matengine.db.metadata` (docs/design.md §10), so no
module spells the schema or these statements by hand.

Grouped by who needs them: the workflow engine's chunk markers and finish claim (§6), the run
record's JSON documents, a table's root times (§3, §5), and the aggregate reads behind
``/metrics``. Every value is a bound parameter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import (
    BigInteger,
    Connection,
    Float,
    Integer,
    Row,
    and_,
    bindparam,
    cast,
    column,
    exists,
    func,
    literal,
    select,
    table,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from matengine.db import metadata as m

ACTIVE_STATES = ("PENDING", "RUNNING")  # a run still going (``runs.ACTIVE``)


def _jsonb(value: Any) -> Any:
    """A bound JSON document, cast to jsonb in the statement."""
    return cast(literal(json.dumps(value, default=str)), JSONB)


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


# ---------------------------------------------------------------- the run record's documents


def merge_run_result(conn: Connection, run_id: int, values: dict[str, Any]) -> None:
    """``result = result || values``: merge entries into a run's result document."""
    r = m.workflow_runs
    conn.execute(update(r).where(r.c.id == run_id).values(result=r.c.result.op("||")(_jsonb(values))))


def add_to_run_count(conn: Connection, run_id: int, key: str, name: str, n: int) -> None:
    """``result[key][name] += n`` (from 0 when absent): a count that a step's chunks add to,
    each in its own transaction (so each chunk counts exactly once, with its marker)."""
    r = m.workflow_runs
    entry = func.coalesce(r.c.result.op("->", return_type=JSONB)(key), _jsonb({}))
    old = func.coalesce(cast(entry.op("->>")(name), BigInteger), 0)
    new = entry.op("||", return_type=JSONB)(func.jsonb_build_object(name, old + n))
    merged = r.c.result.op("||", return_type=JSONB)(func.jsonb_build_object(key, new))
    conn.execute(update(r).where(r.c.id == run_id).values(result=merged))


def append_run_errors(conn: Connection, run_id: int, entries: list[dict[str, Any]]) -> None:
    """``errors = errors || entries``: append to a run's error list (the run stays as it is)."""
    r = m.workflow_runs
    conn.execute(update(r).where(r.c.id == run_id).values(errors=r.c.errors.op("||")(_jsonb(entries))))


# ---------------------------------------------------------------- the engine's chunks (§6)


def store_chunk_specs(conn: Connection, run_id: int, step_index: int, plan: Sequence[Any]) -> None:
    """One ``run_chunk_specs`` row per chunk spec of a plan (chunk = position in the plan),
    from one JSON array in one statement, whatever the plan's length."""
    elements = (
        func.jsonb_array_elements(_jsonb(list(plan)))
        .table_valued("value", with_ordinality="n")
        .render_derived(name="e", with_types=False)
    )
    rows = select(
        literal(run_id, BigInteger), literal(step_index), cast(elements.c.n - 1, Integer), elements.c.value
    )
    c = m.run_chunk_specs.c
    conn.execute(insert(m.run_chunk_specs).from_select([c.run_id, c.step_index, c.chunk, c.spec], rows))


def stored_chunk_spec(conn: Connection, run_id: int, step_index: int, chunk: int) -> Any:
    """Chunk ``chunk``'s spec from the step's plan column (runs planned before specs had rows
    of their own)."""
    s = m.run_steps
    return conn.execute(
        select(s.c.plan.op("->", return_type=JSONB)(chunk)).where(
            s.c.run_id == run_id, s.c.step_index == step_index
        )
    ).scalar_one()


def mark_chunk(conn: Connection, run_id: int, step_index: int, chunk: int) -> Row[Any] | None:
    """Insert the chunk's marker (rows 0) if its run is still active; None if it was there
    already (a second delivery: it waits on the marker row, then skips) or the run has ended.
    The returned row's ``spec`` is the chunk's stored spec (None for a run planned before specs
    had rows of their own)."""
    c, r, sp = m.run_chunks, m.workflow_runs, m.run_chunk_specs
    active = exists().where(r.c.id == run_id, r.c.state.in_(ACTIVE_STATES))
    spec = (
        select(sp.c.spec)
        .where(sp.c.run_id == run_id, sp.c.step_index == step_index, sp.c.chunk == chunk)
        .scalar_subquery()
    )
    stmt = (
        insert(c)
        .from_select(
            [c.c.run_id, c.c.step_index, c.c.chunk, c.c.rows],
            select(literal(run_id, BigInteger), literal(step_index), literal(chunk), literal(0)).where(
                active
            ),
        )
        .on_conflict_do_nothing()
        .returning(spec.label("spec"))
    )
    return conn.execute(stmt).first()


def chunk_done(conn: Connection, run_id: int, step_index: int, chunk: int, rows: int) -> None:
    """Record the rows a chunk handled on its marker and beat the run's heartbeat, in one
    statement (progress is read from the markers)."""
    c, r = m.run_chunks, m.workflow_runs
    counted = (
        update(c)
        .where(c.c.run_id == run_id, c.c.step_index == step_index, c.c.chunk == chunk)
        .values(rows=rows)
        .cte("counted")
    )
    conn.execute(update(r).where(r.c.id == run_id).values(heartbeat=func.now()).add_cte(counted))


def claim_finish(conn: Connection, run_id: int, step_index: int) -> bool:
    """Move a PLANNED step to FINISHING once every chunk has its marker; True for exactly
    one caller (one atomic UPDATE)."""
    s, c = m.run_steps, m.run_chunks
    markers = (
        select(func.count())
        .select_from(c)
        .where(c.c.run_id == run_id, c.c.step_index == step_index)
        .scalar_subquery()
    )
    stmt = (
        update(s)
        .where(
            s.c.run_id == run_id,
            s.c.step_index == step_index,
            s.c.state == "PLANNED",
            markers >= s.c.chunks_total,
        )
        .values(state="FINISHING")
        .returning(literal(1))
    )
    return conn.execute(stmt).first() is not None


# ---------------------------------------------------------------- a table's root times (§3)


def _table_row(datastack: str, table: str) -> Any:
    t = m.annotation_tables
    return and_(t.c.datastack == datastack, t.c.table_name == table)


def lock_table_row(conn: Connection, datastack: str, table: str) -> None:
    """``FOR UPDATE`` on a table's catalog row until the transaction ends (before its root
    time moves)."""
    conn.execute(select(literal(1)).where(_table_row(datastack, table)).with_for_update())


def root_times_key_share(
    conn: Connection, datastack: str, table: str
) -> tuple[datetime | None, datetime | None]:
    """``(roots_last_updated, roots_updating_to)`` under ``FOR KEY SHARE`` on the table's row:
    a run moving the root time waits for this transaction, and annotation writes do not."""
    t = m.annotation_tables
    row = conn.execute(
        select(t.c.roots_last_updated, t.c.roots_updating_to)
        .where(_table_row(datastack, table))
        .with_for_update(key_share=True, read=True)
    ).one()
    return row[0], row[1]


def set_first_roots_time(conn: Connection, datastack: str, table: str, first: datetime) -> datetime:
    """Give a table with no root time ``first`` (one that has one keeps it); its root time."""
    t = m.annotation_tables
    return conn.execute(
        update(t)
        .where(_table_row(datastack, table))
        .values(roots_last_updated=func.coalesce(t.c.roots_last_updated, first))
        .returning(t.c.roots_last_updated)
    ).scalar_one()


# ---------------------------------------------------------------- aggregates for /metrics


def _rows(result: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in result]


def runs_by_kind_and_state(conn: Connection) -> list[tuple[Any, ...]]:
    """``(kind, state, runs)``."""
    r = m.workflow_runs
    return _rows(
        conn.execute(
            select(r.c.kind, r.c.state, func.count())
            .group_by(r.c.kind, r.c.state)
            .order_by(r.c.kind, r.c.state)
        )
    )


def rows_processed_by_kind(conn: Connection) -> list[tuple[Any, ...]]:
    """``(kind, rows)``: final counts of ended runs plus the chunk markers of active ones."""
    r, c = m.workflow_runs, m.run_chunks
    ended = select(r.c.kind, r.c.rows_done.label("n")).where(r.c.state.not_in(ACTIVE_STATES))
    going = (
        select(r.c.kind, c.c.rows)
        .select_from(c.join(r, r.c.id == c.c.run_id))
        .where(r.c.state.in_(ACTIVE_STATES))
    )
    x = union_all(ended, going).subquery("x")
    return _rows(conn.execute(select(x.c.kind, func.sum(x.c.n)).group_by(x.c.kind).order_by(x.c.kind)))


def run_durations(conn: Connection, buckets: Sequence[float]) -> list[tuple[Any, ...]]:
    """``(kind, state, runs, total seconds, runs at most b seconds for each b of buckets)`` of
    ended runs."""
    r = m.workflow_runs
    d = func.extract("epoch", r.c.finished - r.c.started).label("d")
    x = (
        select(r.c.kind, r.c.state, d)
        .where(r.c.finished.is_not(None), r.c.started.is_not(None))
        .subquery("x")
    )
    within = [func.count().filter(x.c.d <= cast(literal(b), Float)) for b in buckets]
    return _rows(
        conn.execute(
            select(x.c.kind, x.c.state, func.count(), func.sum(x.c.d), *within)
            .group_by(x.c.kind, x.c.state)
            .order_by(x.c.kind, x.c.state)
        )
    )


def active_run_progress(conn: Connection) -> list[tuple[Any, ...]]:
    """``(run id, kind, datastack or '', chunks planned, chunks done, rows done)`` of active
    runs, by id."""
    r, s, c = m.workflow_runs, m.run_steps, m.run_chunks
    planned = select(func.coalesce(func.sum(s.c.chunks_total), 0)).where(s.c.run_id == r.c.id)
    done = select(func.count()).select_from(c).where(c.c.run_id == r.c.id)
    rows = select(func.coalesce(func.sum(c.c.rows), 0)).where(c.c.run_id == r.c.id)
    return _rows(
        conn.execute(
            select(
                r.c.id,
                r.c.kind,
                func.coalesce(r.c.datastack, ""),
                planned.scalar_subquery(),
                done.scalar_subquery(),
                rows.scalar_subquery(),
            )
            .where(r.c.state.in_(ACTIVE_STATES))
            .order_by(r.c.id)
        )
    )


def active_runs(conn: Connection) -> dict[int, tuple[str, str]]:
    """``{run id: (kind, datastack or '')}`` of active runs."""
    r = m.workflow_runs
    rows = conn.execute(
        select(r.c.id, r.c.kind, func.coalesce(r.c.datastack, "")).where(r.c.state.in_(ACTIVE_STATES))
    )
    return {int(i): (kind, ds) for i, kind, ds in rows}


def live_workers_by_queue(conn: Connection, dead_after: float) -> list[tuple[Any, ...]]:
    """``(queue or 'in-process', workers)`` of workers that beat within ``dead_after`` s."""
    w = m.workers
    queue = func.coalesce(w.c.queue, "in-process")
    return _rows(
        conn.execute(
            select(queue, func.count())
            # make_interval(years, months, weeks, days, hours, mins, secs)
            .where(w.c.heartbeat > func.now() - func.make_interval(0, 0, 0, 0, 0, 0, float(dead_after)))
            .group_by(queue)
            .order_by(queue)
        )
    )


def versions_by_status(conn: Connection) -> list[tuple[Any, ...]]:
    """``(datastack, status, versions)``."""
    v = m.versions
    return _rows(
        conn.execute(
            select(v.c.datastack, v.c.status, func.count())
            .group_by(v.c.datastack, v.c.status)
            .order_by(v.c.datastack, v.c.status)
        )
    )


def latest_valid_versions(conn: Connection) -> list[tuple[Any, ...]]:
    """``(datastack, version, T as Unix seconds, rows)`` of each datastack's newest valid
    version."""
    v, t = m.versions, m.version_tables
    rows = select(func.coalesce(func.sum(t.c.row_count), 0)).where(
        t.c.datastack == v.c.datastack, t.c.version == v.c.version
    )
    valid = and_(v.c.valid, v.c.status == "AVAILABLE")
    newer = v.alias("newer")
    newest = ~exists().where(
        newer.c.datastack == v.c.datastack,
        newer.c.version > v.c.version,
        newer.c.valid,
        newer.c.status == "AVAILABLE",
    )
    return _rows(
        conn.execute(
            select(v.c.datastack, v.c.version, func.extract("epoch", v.c.time_stamp), rows.scalar_subquery())
            .where(valid, newest)
            .order_by(v.c.datastack)
        )
    )


def table_root_times_and_sizes(conn: Connection) -> list[tuple[Any, ...]]:
    """``(datastack, table, roots_last_updated as Unix seconds, planner's row estimate)`` of
    live tables, by name (the estimate is ``pg_class.reltuples``; None if absent)."""
    a = m.annotation_tables
    estimate = (
        select(_pg_class.c.reltuples)
        .select_from(_pg_class.join(_pg_namespace, _pg_namespace.c.oid == _pg_class.c.relnamespace))
        .where(_pg_namespace.c.nspname == a.c.datastack, _pg_class.c.relname == a.c.table_name)
        .scalar_subquery()
    )
    return _rows(
        conn.execute(
            select(a.c.datastack, a.c.table_name, func.extract("epoch", a.c.roots_last_updated), estimate)
            .where(a.c.deleted.is_(None))
            .order_by(a.c.datastack, a.c.table_name)
        )
    )


_pg_class = table("pg_class", column("oid"), column("relname"), column("relnamespace"), column("reltuples"))
_pg_namespace = table("pg_namespace", column("oid"), column("nspname"))


# ------------------------------------------------------------------ workers and leases
def _seconds_ago(seconds: float) -> Any:
    """``now() - <seconds>``; make_interval(years, months, weeks, days, hours, mins, secs)."""
    return func.now() - func.make_interval(0, 0, 0, 0, 0, 0, float(seconds))


def _beat_within(w: Any, seconds: float) -> Any:
    """Worker row ``w`` beat within the last ``seconds`` (docs/recovery.md: alive)."""
    return w.c.heartbeat > _seconds_ago(seconds)


def forget_old_workers(conn: Connection, older_than_s: float = 86_400) -> None:
    """Rows of workers silent for a day only clutter "last seen" (one per in-process run)."""
    conn.execute(m.workers.delete().where(m.workers.c.heartbeat < _seconds_ago(older_than_s)))


def take_dead_leases(conn: Connection, queue: str, dead_after: float) -> list[Any]:
    """Delete and return the leases on ``queue`` whose worker is dead: silent for
    ``dead_after`` s, unknown, or restarted since it took the lease (same name, later
    ``started``). Rows locked by another reaper are skipped, so two reapers never take one
    lease. Each row: ``task_id, task, args, worker, run_state`` (None if the run is gone)."""
    lease, x, w, r = m.task_leases, m.task_leases.alias("x"), m.workers, m.workflow_runs
    alive = exists().where(w.c.name == x.c.worker, _beat_within(w, dead_after), w.c.started <= x.c.received)
    doomed = (
        select(x.c.task_id)
        .where(x.c.queue == queue, x.c.received < _seconds_ago(dead_after), ~alive)
        .with_for_update(skip_locked=True)
        .subquery("doomed")
    )
    run_state = select(r.c.state).where(r.c.id == lease.c.run_id).scalar_subquery()
    return list(
        conn.execute(
            lease.delete()
            .where(lease.c.task_id == doomed.c.task_id)
            .returning(
                lease.c.task_id, lease.c.task, lease.c.args, lease.c.worker, run_state.label("run_state")
            )
        ).all()
    )


def run_liveness(conn: Connection, run_ids: Sequence[int], dead_after: float) -> list[Any]:
    """For each active run of ``run_ids``: ``id, queue, progress`` (its last heartbeat, else
    start, else creation), ``last_seen`` (the newest heartbeat of a worker that can move it:
    one on its queue, or its own in-process runner), ``live`` (such a worker beats within
    ``dead_after`` s) and ``idle`` (no progress for ``dead_after`` s)."""
    r, w = m.workflow_runs, m.workers
    serves = ((r.c.queue.is_not(None)) & (w.c.queue == r.c.queue)) | (
        (r.c.queue.is_(None)) & (w.c.run_id == r.c.id)
    )
    progress = func.coalesce(r.c.heartbeat, r.c.started, r.c.created)
    return list(
        conn.execute(
            select(
                r.c.id,
                r.c.queue,
                progress.label("progress"),
                select(func.max(w.c.heartbeat)).where(serves).scalar_subquery().label("last_seen"),
                exists().where(serves, _beat_within(w, dead_after)).label("live"),
                (progress < _seconds_ago(dead_after)).label("idle"),
            ).where(r.c.id.in_([int(i) for i in run_ids]), r.c.state.in_(ACTIVE_STATES))
        ).all()
    )


def live_worker_names(conn: Connection, queue: str, dead_after: float) -> list[str]:
    """Names of the workers on ``queue`` that beat within ``dead_after`` s."""
    w = m.workers
    return list(
        conn.execute(
            select(w.c.name).where(w.c.queue == queue, _beat_within(w, dead_after)).order_by(w.c.name)
        ).scalars()
    )
