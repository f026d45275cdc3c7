"""Versioned materialization: freeze the state at T_N as version N of a datastack.

Steps: ``prepare`` (pass the write barrier so every write stamped at or before T_N has
committed, and record version N as RUNNING) → ingest and update-roots to T_N for every table →
``merge`` per table into the version store (:mod:`matengine.version_store`: the first version
in full, in id-range chunks; later ones only the rows that changed since the store's head) →
``index`` per table (only after a full build: one chunk per index, built side by side) →
``publish`` (one transaction makes the views ``<ds>__mat<N>.<table>``, moves the store heads and
marks the version AVAILABLE and valid). Nobody is disconnected and the live tables are never locked:
rows stamped after T_N are simply outside the time rule.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, insert, select, text, update

from matengine import catalog
from matengine import version_store as store
from matengine.config import get_settings
from matengine.db import metadata as m
from matengine.db.identifiers import quote, version_schema
from matengine.db.locks import LockKind, hold_exclusive, pass_write_barrier
from matengine.errors import InvalidInput
from matengine.workflows.engine import Step, StepContext, workflow
from matengine.workflows.params import SyncParams, parameters_of
from matengine.workflows.runs import Run, merge_result
from matengine.workflows.sync_steps import ROOT_SLICE, IngestStep, UpdateRootsStep, ingest_and_update_steps
from matengine.workflows.version_warnings import UploadWarningsStep


def _version_of(ctx: StepContext) -> int:
    with ctx.engine.connect() as conn:
        return conn.execute(
            select(m.versions.c.version).where(
                m.versions.c.datastack == ctx.run.datastack, m.versions.c.run_id == ctx.run.id
            )
        ).scalar_one()


def _days_to_expire(ctx: StepContext) -> int | None:
    """The run's days to expiry, else the datastack's, else the default (None/0: never)."""
    days = SyncParams.of(ctx.parameters).days_to_expire
    if days is None:
        days = catalog.get_datastack(ctx.engine, ctx.run.datastack).days_to_expire
    if days is None:
        days = get_settings().default_days_to_expire
    return int(days) if days else None


class PrepareVersionStep(Step):
    key = "prepare"

    def plan(self, ctx: StepContext) -> list[Any]:
        ds = ctx.run.datastack
        when = SyncParams.of(ctx.parameters).when
        with ctx.engine.connect() as conn:
            pass_write_barrier(conn, ds)
            now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
            conn.commit()
        if when > now:
            raise InvalidInput(f"cannot materialize at {when.isoformat()}: it is in the future")
        with ctx.engine.begin() as conn:
            existing = conn.execute(
                select(m.versions.c.version).where(
                    m.versions.c.datastack == ds, m.versions.c.run_id == ctx.run.id
                )
            ).scalar()
            if existing is None:
                hold_exclusive(conn, LockKind.VERSION_NUMBER, ds)
                number = conn.execute(
                    select(text("coalesce(max(version), 0) + 1"))
                    .select_from(m.versions)
                    .where(m.versions.c.datastack == ds)
                ).scalar_one()
                conn.execute(
                    insert(m.versions).values(
                        datastack=ds,
                        version=number,
                        time_stamp=when,
                        status="RUNNING",
                        valid=False,
                        expires_on=None,  # set when published: expiry counts from the build
                        run_id=ctx.run.id,
                    )
                )
                existing = number
            # views of this number are made when it is published; none may be left over
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(version_schema(ds, existing))} CASCADE"))
            merge_result(conn, ctx.run.id, {"version": existing, "timestamp": when.isoformat()})
        return []

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        return 0


class MergeStep(Step):
    """Write one table's state at T_N into the version store as version N.

    The first version of a table (or one whose store has no published version) is a full
    build: every row at T_N, in id-range chunks. Every later version writes only the rows
    that differ from the head version H: those created or deleted between T_H and T_N, and
    those holding a root id valid at T_H but not at T_N (docs/versions.md)."""

    def __init__(self, datastack: str, table: str):
        self.datastack, self.table = datastack, table
        self.key = f"merge:{table}"

    def plan(self, ctx: StepContext) -> list[Any]:
        table = catalog.get_table(ctx.engine, self.datastack, self.table)
        params = SyncParams.of(ctx.parameters)
        number, when, size = _version_of(ctx), params.when, params.chunk_rows
        with ctx.engine.begin() as conn:
            state = store.store_state(conn, self.datastack, self.table)
            if state is None or state.head_version is None:
                store.create_store(conn, self.datastack, self.table, table.schema)
                store.start_build(conn, self.datastack, self.table, number)
                lo, hi = conn.execute(text(f"SELECT min(id), max(id) FROM {table.names.live_q}")).one()
                if lo is None:
                    return []
                return [{"full": [a, min(hi, a + size - 1)]} for a in range(lo, hi + 1, size)]
            if state.head_version >= number:
                raise InvalidInput(
                    f"table {self.table!r} already has version {state.head_version}; cannot build {number}"
                )
            assert state.head_time is not None  # set with head_version, at publish
            # a build that died before publishing left rows no published version sees
            store.discard_unpublished(conn, state, number)
            store.start_build(conn, self.datastack, self.table, number)
            ids = store.changed_ids(conn, table, state.head_time, when)
        roots = self._changed_roots(ctx, table, state.head_time, when)
        per = params.roots_per_chunk or ROOT_SLICE
        return [{"ids": ids[i : i + size]} for i in range(0, len(ids), size)] + [
            {"roots": roots[i : i + per]} for i in range(0, len(roots), per)
        ]

    @staticmethod
    def _changed_roots(
        ctx: StepContext, table: catalog.AnnotationTable, head: datetime, when: datetime
    ) -> list[int]:
        """Roots valid at the head's T and not at T_N (versions may also go back in time)."""
        if not table.schema.bound_points or head == when:
            return []
        if head < when:
            gone, _ = ctx.segmentation.roots.get_delta_roots(head, when)
        else:
            _, gone = ctx.segmentation.roots.get_delta_roots(when, head)
        return np.unique(np.asarray(gone, np.uint64)).astype(np.int64).tolist()

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = catalog.get_table(conn, self.datastack, self.table)
        number, when = _version_of(ctx), SyncParams.of(ctx.parameters).when
        if "full" in spec:
            lo, hi = spec["full"]
            closed, written = 0, store.insert_full_range(conn, table, number, when, lo, hi)
        else:
            ids = spec.get("ids") or store.head_ids_holding_roots(conn, table, number, spec["roots"])
            closed, written = store.replace_ids(conn, table, number, when, ids)
        store.count_build(conn, self.datastack, self.table, closed, written)
        return written


class IndexStep(Step):
    """Index a store built in full by this run: one chunk per index, side by side. A store
    already indexed gets its few new rows through the indexes, so there is nothing to do."""

    def __init__(self, datastack: str, table: str):
        self.datastack, self.table = datastack, table
        self.key = f"index:{table}"

    def paces_writeback(self, spec: Any) -> bool:
        return True  # index builds write outside the shared buffers, then fsync

    def _ddl(self, table: catalog.AnnotationTable) -> list[str]:
        return store.store_indexes(table.schema, self.table, store.store_q(self.datastack, self.table))

    def plan(self, ctx: StepContext) -> list[Any]:
        table = catalog.get_table(ctx.engine, self.datastack, self.table)
        with ctx.engine.connect() as conn:
            state = store.store_state(conn, self.datastack, self.table)
        if state is not None and state.indexed:
            return []
        return list(range(len(self._ddl(table))))

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = catalog.get_table(conn, self.datastack, self.table)
        conn.execute(
            text("SELECT set_config('maintenance_work_mem', :m, true)"), {"m": get_settings().index_memory}
        )
        conn.execute(text(self._ddl(table)[spec]))
        return 0

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        if plan:
            with ctx.engine.begin() as conn:
                store.mark_indexed(conn, self.datastack, self.table)
            with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f"ANALYZE {store.store_q(self.datastack, self.table)}"))
        return {}


class PublishStep(Step):
    """One transaction: each table's view and metadata, the store heads, the version
    AVAILABLE and valid. Expiry counts from now, when the version was built."""

    key = "publish"

    def __init__(self, tables: list[str]):
        self.tables = tables

    def plan(self, ctx: StepContext) -> list[Any]:
        return []

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        return 0

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        ds, number = ctx.run.datastack, _version_of(ctx)
        assert ds is not None  # a materialize run always names its datastack
        when = SyncParams.of(ctx.parameters).when
        days = _days_to_expire(ctx)
        result: dict[str, Any] = {"version": number}
        with ctx.engine.begin() as conn:
            for name in self.tables:
                table = catalog.get_table(conn, ds, name)
                state = store.store_state(conn, ds, name)
                assert state is not None, f"no store for {name!r}"
                if state.head_version == number:  # a repeated finish: already published
                    count = state.head_rows
                else:
                    closed, new = state.building_closed, state.building_written
                    count = state.head_rows - closed + new
                    store.publish_table(conn, table, number, when, count)
                    result[f"merge:{name}"] = {"rows": count, "closed": closed, "written": new}
                conn.execute(
                    m.version_tables.delete().where(
                        m.version_tables.c.datastack == ds,
                        m.version_tables.c.version == number,
                        m.version_tables.c.table_name == name,
                    )
                )
                conn.execute(
                    insert(m.version_tables).values(
                        datastack=ds,
                        version=number,
                        table_name=name,
                        schema_type=table.schema_type,
                        row_count=count,
                        voxel_resolution=list(table.voxel_resolution),
                        reference_table=table.reference_table,
                        description=table.description,
                    )
                )
            conn.execute(
                update(m.versions)
                .where(m.versions.c.datastack == ds, m.versions.c.version == number)
                .values(
                    status="AVAILABLE",
                    valid=True,
                    finished=text("now()"),
                    expires_on=text("now() + make_interval(days => :days)").bindparams(days=days)
                    if days
                    else None,
                )
            )
        return result


def _params(run: Run) -> SyncParams:
    return SyncParams.of(parameters_of(run))


@workflow("ingest")
def _ingest(run: Run) -> list[Step]:
    p = _params(run)
    return [IngestStep(p.datastack, t, p.timestamp) for t in p.tables]


@workflow("update_roots")
def _update_roots(run: Run) -> list[Step]:
    p = _params(run)
    return [UpdateRootsStep(p.datastack, t, p.timestamp) for t in p.tables]


@workflow("materialize")
@workflow("complete")
def _materialize(run: Run) -> list[Step]:
    """``materialize`` and ``complete`` are the same steps: a version is only exact if its
    tables were ingested and their roots brought to T_N first."""
    p = _params(run)
    tables = list(p.tables)
    return (
        [PrepareVersionStep()]
        + ingest_and_update_steps(p)
        + [MergeStep(p.datastack, t) for t in tables]
        + [IndexStep(p.datastack, t) for t in tables]
        + [UploadWarningsStep(p.datastack, tables, p.timestamp)]
        + [PublishStep(tables)]
    )
