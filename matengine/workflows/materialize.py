"""Versioned materialization: freeze the state at T_N as version N of a datastack.

Steps: ``prepare`` (pass the write barrier so every write stamped at or before T_N has
committed, and record version N as RUNNING) → ingest and update-roots to T_N for every table →
``merge`` per table (``INSERT … SELECT`` of live ⋈ segmentation under the time rule, in id-range
chunks, into schema ``<ds>__mat<N>``) → ``index`` per table (one chunk per index, built side by
side) → ``publish`` (one transaction marks
the version AVAILABLE and valid). Nobody is disconnected and the live tables are never locked:
rows stamped after T_N are simply outside the time rule.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, text, update

from matengine import catalog
from matengine.config import get_settings
from matengine.db import metadata as m
from matengine.db.annotation_tables import point_index
from matengine.db.identifiers import quote, validate_name, version_schema
from matengine.db.locks import pass_write_barrier
from matengine.errors import InvalidInput
from matengine.timeutil import to_utc
from matengine.workflows.engine import Step, StepContext, workflow
from matengine.workflows.runs import Run, merge_result
from matengine.workflows.sync_steps import IngestStep, UpdateRootsStep
from matengine.workflows.version_warnings import UploadWarningsStep


def _version_of(ctx: StepContext) -> int:
    with ctx.engine.connect() as conn:
        return conn.execute(
            select(m.versions.c.version).where(
                m.versions.c.datastack == ctx.run.datastack, m.versions.c.run_id == ctx.run.id
            )
        ).scalar_one()


def _version_table(ctx: StepContext, datastack: str, table: str) -> str:
    """The quoted name of ``table`` in the version this run is building."""
    return quote(version_schema(datastack, _version_of(ctx)), table)


class PrepareVersionStep(Step):
    key = "prepare"

    def plan(self, ctx: StepContext) -> list[Any]:
        ds = ctx.run.datastack
        when = to_utc(ctx.params["timestamp"])
        with ctx.engine.connect() as conn:
            pass_write_barrier(conn, ds)
            now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
            conn.commit()
        if when > now:
            raise InvalidInput(f"cannot materialize at {when.isoformat()}: it is in the future")
        days = ctx.params.get("days_to_expire")
        if days is None:
            days = catalog.get_datastack(ctx.engine, ds).days_to_expire
        if days is None:
            days = get_settings().default_days_to_expire
        with ctx.engine.begin() as conn:
            existing = conn.execute(
                select(m.versions.c.version).where(
                    m.versions.c.datastack == ds, m.versions.c.run_id == ctx.run.id
                )
            ).scalar()
            if existing is None:
                conn.execute(text("SELECT pg_advisory_xact_lock(7105, hashtext(:d))"), {"d": ds})
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
                        expires_on=when + timedelta(days=int(days)) if days else None,
                        run_id=ctx.run.id,
                    )
                )
                existing = number
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(version_schema(ds, existing))} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {quote(version_schema(ds, existing))}"))
            merge_result(conn, ctx.run.id, {"version": existing, "timestamp": when.isoformat()})
        return []

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        return 0


class MergeStep(Step):
    """Copy one table's state at T_N (rows by the time rule, with their ids) into version N."""

    def __init__(self, datastack: str, table: str):
        self.datastack, self.table = datastack, table
        self.key = f"merge:{table}"

    def _select(self, table: catalog.AnnotationTable, ranged: bool = False) -> str:
        """Rows by the time rule (at ``:t``), optionally only ids in ``[:lo, :hi]``."""
        crud = [
            "a.id",
            "a.created",
            "NULL::timestamptz AS deleted",
            "NULL::bigint AS superceded_id",
            "true AS valid",
        ]
        cols = [f"a.{quote(c.name)}" for c in table.schema.annotation_columns()]
        seg = [f"s.{quote(c.name)}" for c in table.schema.segmentation_columns()]
        # the range is stated on both sides so both primary-key scans start at :lo
        in_range = " AND {}.id BETWEEN :lo AND :hi" if ranged else ""
        join = f"LEFT JOIN {table.names.segmentation_q} s ON s.id = a.id{in_range.format('s')}" if seg else ""
        return (
            f"SELECT {', '.join(crud + cols + seg)} FROM {table.names.live_q} a {join} "
            f"WHERE a.created <= :t AND (a.deleted IS NULL OR a.deleted > :t)"
            f"{in_range.format('a')}"
        )

    def plan(self, ctx: StepContext) -> list[Any]:
        table = catalog.get_table(ctx.engine, self.datastack, self.table)
        target = _version_table(ctx, self.datastack, self.table)
        with ctx.engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {target}"))
            conn.execute(
                text(f"CREATE TABLE {target} AS {self._select(table)} WITH NO DATA"),
                {"t": to_utc(ctx.params["timestamp"])},
            )
            lo, hi = conn.execute(text(f"SELECT min(id), max(id) FROM {table.names.live_q}")).one()
        if lo is None:
            return []
        size = int(ctx.params.get("chunk_rows") or get_settings().chunk_rows)
        return [[a, min(hi, a + size - 1)] for a in range(lo, hi + 1, size)]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = catalog.get_table(conn, self.datastack, self.table)
        target = _version_table(ctx, self.datastack, self.table)
        lo, hi = spec
        return conn.execute(
            text(f"INSERT INTO {target} {self._select(table, ranged=True)}"),
            {"t": to_utc(ctx.params["timestamp"]), "lo": lo, "hi": hi},
        ).rowcount


def version_indexes(table: catalog.AnnotationTable, target: str) -> list[str]:
    """DDL of a version table's indexes: a bbox GiST per point, each root id, id. Plain
    CREATE INDEX (SHARE lock), so several can be built at once on one table; the slow GiST
    builds come first so that workers taking them in order finish close together."""
    t = table.table_name
    out = [
        point_index(validate_name(f"ix_{t}_{f.name}_bbox"[:63]), target, f.name)[1]
        for f in table.schema.points
    ]
    for pt in table.schema.bound_points:
        name = validate_name(f"ix_{t}_{pt}_root_id"[:63])
        out.append(f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {target} ({quote(pt + '_root_id')})")
    out.append(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(validate_name(f'ix_{t}_id'[:63]))} ON {target} (id)"
    )
    return out


class IndexStep(Step):
    """Index one version table: one chunk per index, so workers build them side by side."""

    def __init__(self, datastack: str, table: str):
        self.datastack, self.table = datastack, table
        self.key = f"index:{table}"

    def plan(self, ctx: StepContext) -> list[Any]:
        table = catalog.get_table(ctx.engine, self.datastack, self.table)
        return list(range(len(version_indexes(table, _version_table(ctx, self.datastack, self.table)))))

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = catalog.get_table(conn, self.datastack, self.table)
        conn.execute(
            text("SELECT set_config('maintenance_work_mem', :m, true)"), {"m": get_settings().index_memory}
        )
        conn.execute(text(version_indexes(table, _version_table(ctx, self.datastack, self.table))[spec]))
        return 0

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        table = catalog.get_table(ctx.engine, self.datastack, self.table)
        number = _version_of(ctx)
        target, t = _version_table(ctx, self.datastack, self.table), self.table
        with ctx.engine.begin() as conn:
            # the merge chunks counted the rows they inserted; no need to scan the table again
            count = conn.execute(
                text(
                    "SELECT coalesce(sum(c.rows), 0) FROM matengine.run_chunks c "
                    "JOIN matengine.run_steps s USING (run_id, step_index) "
                    "WHERE c.run_id = :r AND s.key = :k"
                ),
                {"r": ctx.run.id, "k": f"merge:{t}"},
            ).scalar_one()
            conn.execute(
                m.version_tables.delete().where(
                    m.version_tables.c.datastack == self.datastack,
                    m.version_tables.c.version == number,
                    m.version_tables.c.table_name == self.table,
                )
            )
            conn.execute(
                insert(m.version_tables).values(
                    datastack=self.datastack,
                    version=number,
                    table_name=self.table,
                    schema_type=table.schema_type,
                    row_count=count,
                    voxel_resolution=list(table.voxel_resolution),
                    reference_table=table.reference_table,
                    description=table.description,
                )
            )
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {target}"))
        return {f"merge:{self.table}": {"rows": int(count)}}


class PublishStep(Step):
    key = "publish"

    def plan(self, ctx: StepContext) -> list[Any]:
        return []

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        return 0

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        number = _version_of(ctx)
        with ctx.engine.begin() as conn:
            conn.execute(
                update(m.versions)
                .where(m.versions.c.datastack == ctx.run.datastack, m.versions.c.version == number)
                .values(status="AVAILABLE", valid=True, finished=text("now()"))
            )
        return {"version": number}


def _tables(run: Run) -> list[str]:
    return list(run.parameters["tables"])


def _sync_steps(run: Run) -> list[Step]:
    ds, ts = run.datastack, run.parameters["timestamp"]
    tables = _tables(run)
    ingest: list[Step] = [IngestStep(ds, t, ts) for t in tables]
    return ingest + [UpdateRootsStep(ds, t, ts) for t in tables]


@workflow("ingest")
def _ingest(run: Run) -> list[Step]:
    return [IngestStep(run.datastack, t, run.parameters["timestamp"]) for t in _tables(run)]


@workflow("update_roots")
def _update_roots(run: Run) -> list[Step]:
    return [UpdateRootsStep(run.datastack, t, run.parameters["timestamp"]) for t in _tables(run)]


@workflow("materialize")
@workflow("complete")
def _materialize(run: Run) -> list[Step]:
    """``materialize`` and ``complete`` are the same steps: a version is only exact if its
    tables were ingested and their roots brought to T_N first."""
    tables = _tables(run)
    return (
        [PrepareVersionStep()]
        + _sync_steps(run)
        + [MergeStep(run.datastack, t) for t in tables]
        + [IndexStep(run.datastack, t) for t in tables]
        + [UploadWarningsStep(str(run.datastack), tables, run.parameters["timestamp"])]
        + [PublishStep()]
    )
