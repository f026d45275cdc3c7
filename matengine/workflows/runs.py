"""Workflow runs as rows in PostgreSQL: parameters, state, steps, chunk markers, locks, errors.

Progress is derived from the chunk markers (``run_chunks``), which chunk tasks write in the same
transaction as their data: a chunk is done exactly when its rows are committed, so a killed
chunk is simply redone and progress survives any restart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update

from matengine.db import bookkeeping
from matengine.db import metadata as m
from matengine.db.locks import LockKind, hold_exclusive
from matengine.errors import Conflict, NotFound
from matengine.timeutil import utcnow

ACTIVE = ("PENDING", "RUNNING")


@dataclass
class Run:
    id: int
    kind: str
    datastack: str  # every run works on one datastack (its locks are scoped by it)
    table_name: str | None
    parameters: dict[str, Any]
    state: str
    step: str | None
    errors: list[dict[str, Any]]
    result: dict[str, Any]
    created: datetime
    started: datetime | None
    finished: datetime | None
    chunks_total: int = 0
    chunks_done: int = 0
    rows_done: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    # why an active run makes no progress (no live worker for it), else None
    stalled: str | None = None

    @property
    def done(self) -> bool:
        return self.state not in ACTIVE

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("created", "started", "finished"):
            d[k] = d[k].isoformat() if d[k] else None
        elapsed = ((self.finished or utcnow()) - self.started).total_seconds() if self.started else 0
        d["seconds"] = round(elapsed, 3)
        d["rows_per_second"] = round(self.rows_done / elapsed, 1) if elapsed > 0 else None
        return d


def lock_keys(datastack: str, table: str | None) -> list[str]:
    """A table run locks ``ds:table``; a datastack-wide run locks ``ds:*``."""
    return [f"{datastack}:{table}" if table else f"{datastack}:*"]


def _conflicting(conn: Connection, key: str) -> int | None:
    ds, _, table = key.partition(":")
    lk = m.run_locks
    if table == "*":
        cond = lk.c.lock_key.like(ds.replace("_", r"\_") + ":%")
    else:
        cond = lk.c.lock_key.in_([key, f"{ds}:*"])
    return conn.execute(select(lk.c.run_id).where(cond).limit(1)).scalar()


def create_run(
    engine: Engine,
    kind: str,
    parameters: dict[str, Any],
    *,
    datastack: str,
    table_name: str | None = None,
    queue: str | None = None,
) -> int:
    """Record a new run and take its locks; refuse with :class:`Conflict` if they are held.

    ``queue``: the Celery queue whose workers run it (None: an in-process runner)."""
    with engine.begin() as conn:
        # serialise lock checks per datastack so two starts cannot both see "free"
        hold_exclusive(conn, LockKind.RUN_LOCKS, datastack)
        for key in lock_keys(datastack, table_name):
            holder = _conflicting(conn, key)
            if holder is not None:
                from matengine.workflows.leases import stalls

                stall = stalls(conn, [holder]).get(holder)
                what = (
                    f"stalled, {stall.message}" if stall else f"wait for it, or `matengine cancel {holder}`"
                )
                where = key.replace(":*", "")
                raise Conflict(f"{kind} on {where!r} refused: run {holder} is still active on it ({what})")
        run_id = conn.execute(
            insert(m.workflow_runs)
            .values(
                kind=kind,
                datastack=datastack,
                table_name=table_name,
                parameters=parameters,
                state="PENDING",
                queue=queue,
            )
            .returning(m.workflow_runs.c.id)
        ).scalar_one()
        for key in lock_keys(datastack, table_name):
            conn.execute(insert(m.run_locks).values(lock_key=key, run_id=run_id))
    return run_id


def get_state(engine: Engine, run_id: int) -> str:
    """Only the state (PENDING / RUNNING / SUCCESS / FAILED / CANCELLED): one small query."""
    with engine.connect() as conn:
        state = conn.execute(select(m.workflow_runs.c.state).where(m.workflow_runs.c.id == run_id)).scalar()
    if state is None:
        raise NotFound(f"no run {run_id}")
    return state


def get_run_header(engine: Engine, run_id: int) -> Run:
    """The run's row without progress, steps or stall check (what a step needs: its kind,
    datastack and parameters, which never change)."""
    with engine.connect() as conn:
        r = conn.execute(select(m.workflow_runs).where(m.workflow_runs.c.id == run_id)).first()
    if r is None:
        raise NotFound(f"no run {run_id}")
    return run_from_row(r)


def run_from_row(r: Any, **computed: Any) -> Run:
    """A :class:`Run` from its ``workflow_runs`` row; ``computed`` replaces the progress fields
    (an active run's progress lives in the chunk markers, not on the row)."""
    fields: dict[str, Any] = {
        "id": r.id,
        "kind": r.kind,
        "datastack": r.datastack,
        "table_name": r.table_name,
        "parameters": r.parameters,
        "state": r.state,
        "step": r.step,
        "errors": r.errors,
        "result": r.result,
        "created": r.created,
        "started": r.started,
        "finished": r.finished,
        "chunks_total": r.chunks_total,
        "chunks_done": r.chunks_done,
        "rows_done": r.rows_done,
    }
    return Run(**{**fields, **computed})


def get_run(engine_or_conn: Engine | Connection, run_id: int, *, stall: bool = True) -> Run:
    """The run with its progress and steps, and (``stall``) why it makes no progress if no
    live worker can move it on."""
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return get_run(conn, run_id, stall=stall)
    conn = engine_or_conn
    r = conn.execute(select(m.workflow_runs).where(m.workflow_runs.c.id == run_id)).first()
    if r is None:
        raise NotFound(f"no run {run_id}")
    steps = conn.execute(
        select(m.run_steps).where(m.run_steps.c.run_id == run_id).order_by(m.run_steps.c.step_index)
    ).all()
    done: dict[int, int] = dict(
        conn.execute(
            select(m.run_chunks.c.step_index, func.count())
            .where(m.run_chunks.c.run_id == run_id)
            .group_by(m.run_chunks.c.step_index)
        ).all()
    )
    rows_done = conn.execute(
        select(func.coalesce(func.sum(m.run_chunks.c.rows), 0)).where(m.run_chunks.c.run_id == run_id)
    ).scalar_one()
    stalled = None
    if stall and r.state in ACTIVE:
        from matengine.workflows.leases import stalls

        found = stalls(conn, [run_id]).get(run_id)
        stalled = found.message if found else None
    return run_from_row(
        r,
        chunks_total=sum(s.chunks_total for s in steps),
        chunks_done=sum(done.values()),
        rows_done=int(rows_done),
        steps=[
            {
                "index": s.step_index,
                "key": s.key,
                "state": s.state,
                "chunks_total": s.chunks_total,
                "chunks_done": done.get(s.step_index, 0),
                "result": s.result,
            }
            for s in steps
        ],
        stalled=stalled,
    )


def list_runs(engine: Engine, datastack: str | None = None, limit: int = 50) -> list[Run]:
    stmt = select(m.workflow_runs.c.id).order_by(m.workflow_runs.c.id.desc()).limit(limit)
    if datastack:
        stmt = stmt.where(m.workflow_runs.c.datastack == datastack)
    with engine.connect() as conn:
        return [get_run(conn, i) for i in conn.execute(stmt).scalars()]


def mark_running(conn: Connection, run_id: int, step: str) -> bool:
    """The run is RUNNING ``step`` now; False (and nothing changed) if it has ended."""
    r = m.workflow_runs
    return (
        conn.execute(
            update(r)
            .where(r.c.id == run_id, r.c.state.in_(ACTIVE))
            .values(
                state="RUNNING", step=step, heartbeat=utcnow(), started=func.coalesce(r.c.started, func.now())
            )
            .returning(r.c.id)
        ).first()
        is not None
    )


def merge_result(conn: Connection, run_id: int, values: dict[str, Any]) -> None:
    """Merge ``values`` into the run's ``result`` document (what the run produced so far)."""
    bookkeeping.merge_run_result(conn, run_id, values)


def finish_run(engine: Engine, run_id: int, state: str, error: str | None = None) -> None:
    """End a run (SUCCESS / FAILED / CANCELLED) and release its locks."""
    with engine.begin() as conn:
        run = get_run(conn, run_id, stall=False)
        if run.done:
            return
        errors = list(run.errors)
        if error:
            errors.append({"at": utcnow().isoformat(), "step": run.step, "message": error})
        conn.execute(
            update(m.workflow_runs)
            .where(m.workflow_runs.c.id == run_id)
            .values(
                state=state,
                finished=func.now(),
                errors=text("CAST(:e AS jsonb)"),
                chunks_total=run.chunks_total,
                chunks_done=run.chunks_done,
                rows_done=run.rows_done,
            ),
            {"e": json.dumps(errors)},
        )
        conn.execute(delete(m.run_locks).where(m.run_locks.c.run_id == run_id))
        if state != "SUCCESS":  # a version this run was building will never be valid
            conn.execute(
                update(m.versions)
                .where(m.versions.c.run_id == run_id, m.versions.c.status == "RUNNING")
                .values(status="FAILED", error=error, finished=func.now())
            )


def record_error(engine: Engine, run_id: int, message: str) -> None:
    """Note a transient error (the task will retry); the run stays active."""
    with engine.begin() as conn:
        entry = {"at": utcnow().isoformat(), "message": message, "transient": True}
        bookkeeping.append_run_errors(conn, run_id, [entry])
