"""Bulk upload: ``.npy`` column files in a bucket → a live annotation table and its
segmentation table, by binary COPY, in row-range chunks that N workers share.

Everything that can be wrong with the input is checked in ``plan`` (headers, then one sliced
pass over ids and coordinates) before the first row is written. Rows are then COPYed straight
into the final tables: after that pass a staging copy would only double the writes. Secondary
indexes are dropped for large loads into an empty table and rebuilt in ``finish``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sqlalchemy import Connection, Engine, text

from matengine import catalog
from matengine.catalog import AnnotationTable
from matengine.config import Settings, get_settings
from matengine.db import bookkeeping
from matengine.db.annotation_tables import build_indexes, drop_indexes
from matengine.db.copy import copy_in, copy_in_rows, timestamptz_value
from matengine.db.identifiers import validate_name
from matengine.db.locks import hold_write_barrier_shared
from matengine.errors import InvalidInput, NotFound
from matengine.schemas import get_schema
from matengine.timeutil import to_utc
from matengine.workflows.engine import Step, StepContext, workflow
from matengine.workflows.npy_source import NpyFolder
from matengine.workflows.params import WorkflowParams, parameters
from matengine.workflows.runs import Run
from matengine.workflows.upload_layout import (
    Target,
    _column,
    resolve_targets,
    scan_files,
    text_values,
)

LARGE_LOAD = 1_000_000  # rows into an empty table above which indexes are built after the load


def check_request(
    engine: Engine, params: dict[str, Any], settings: Settings | None = None, *, in_task: bool = False
) -> None:
    """The cheap checks, done before a run is even recorded (so the caller hears at once).
    The source must lie under a configured source root (``settings.source_roots``).
    ``in_task``: called by the upload's own step, where a transient fault of the store is
    retried rather than refused."""
    catalog.get_datastack(engine, params["datastack"])
    validate_name(params["table"], "table name")
    schema = get_schema(params["schema"])
    size = params.get("chunk_rows")
    if size is not None and (isinstance(size, bool) or not isinstance(size, Integral) or size < 1):
        raise InvalidInput(f"chunk_rows must be a positive integer, not {size!r}", field="chunk_rows")
    for key in ("roots_timestamp", "created"):  # used only after rows are written
        if params.get(key):
            try:
                to_utc(params[key])
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidInput(
                    f"{key} {params[key]!r} is not a time (ISO 8601, e.g. 2024-05-01T12:00:00Z): {exc}",
                    field=key,
                ) from None
    try:
        table = catalog.get_table(engine, params["datastack"], params["table"])
    except NotFound:
        table = None
    if table is not None and table.schema_type != schema.name:
        raise InvalidInput(
            f"table {table.table_name!r} has schema {table.schema_type!r}, not {schema.name!r}"
        )
    if table is not None and params.get("created"):
        _refuse_writes_into_published_past(engine, table, to_utc(params["created"]))
    folder = NpyFolder(params["source"], settings, retry_transient=in_task)
    targets, _ = resolve_targets(schema, params["column_mapping"], folder)
    # root ids of bound points (not integer fields that happen to end so, like query_root_id)
    has_roots = any(t.table == "segmentation" and t.column.endswith("_root_id") for t in targets)
    if has_roots and not params.get("roots_timestamp"):
        raise InvalidInput("root ids are mapped: say when they were valid (roots_timestamp)")
    if has_roots and table is not None and table.roots_last_updated is not None:
        given = to_utc(params["roots_timestamp"])
        if given != table.roots_last_updated:
            raise InvalidInput(
                f"table {table.table_name!r} holds roots valid at "
                f"{table.roots_last_updated.isoformat()}; upload roots valid at that time, or "
                "leave root columns out for ingest to fill"
            )


@parameters("bulk_upload")
@dataclass(frozen=True)
class UploadParams(WorkflowParams):
    """Bulk upload of ``.npy`` column files into one table (created from ``schema`` if new)."""

    KIND: ClassVar[str] = "bulk_upload"
    table: str
    schema: str
    source: str
    column_mapping: dict[str, Any]
    chunk_rows: int
    roots_timestamp: str | None = None
    voxel_resolution: tuple[float, float, float] | None = None
    created: str | None = None
    description: str = ""  # of a table the upload creates

    @property
    def lock_table(self) -> str | None:
        return self.table

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadParams:
        data = dict(data)
        res = data.get("voxel_resolution")
        data["voxel_resolution"] = tuple(res) if res is not None else None
        if data.get("description") is None:
            data["description"] = ""
        if data.get("chunk_rows") is None:  # runs recorded without it take the default
            data["chunk_rows"] = get_settings().chunk_rows
        return super().from_json(data)

    @classmethod
    def build(cls, engine: Engine, settings: Settings | None = None, **given: Any) -> UploadParams:
        """Defaults filled, then every check :func:`bulk_upload.check_request` makes (schema,
        names, source root, mapping against the file headers) before a run is recorded."""
        settings = settings or get_settings()
        if given.get("chunk_rows") is None:
            given["chunk_rows"] = settings.chunk_rows
        params = cls.from_json(given)
        check_request(engine, params.to_json(), settings)
        return params


def _refuse_writes_into_published_past(engine: Engine, table: catalog.AnnotationTable, created: Any) -> None:
    """Rows stamped at or before a published version's T would change what that version
    should hold after it was frozen, and the next version is built from the change since
    then (docs/versions.md): such an upload is refused."""
    from matengine.version_store import store_state

    with engine.connect() as conn:
        state = store_state(conn, table.datastack, table.table_name)
    if state is not None and state.head_time is not None and created <= state.head_time:
        raise InvalidInput(
            f"table {table.table_name!r} has version {state.head_version} at "
            f"{state.head_time.isoformat()}; rows created at or before it would change a published "
            "version: give a later 'created'",
            field="created",
        )


def _params(ctx: StepContext) -> UploadParams:
    p = ctx.parameters
    if not isinstance(p, UploadParams):
        raise TypeError(f"expected the parameters of a bulk upload, got {type(p).__name__}")
    return p


class UploadStep(Step):
    key = "upload"

    def paces_writeback(self, spec: Any) -> bool:
        return True  # COPY chunks (a ring of buffers) and the finish's index builds

    def _folder_targets(self, ctx: StepContext) -> tuple[NpyFolder, list[Target], int]:
        p = _params(ctx)
        folder = NpyFolder(p.source, retry_transient=True)
        targets, rows = resolve_targets(get_schema(p.schema), p.column_mapping, folder)
        return folder, targets, rows

    def plan(self, ctx: StepContext) -> list[Any]:
        p = _params(ctx)
        check_request(ctx.engine, p.to_json(), in_task=True)
        folder, targets, rows = self._folder_targets(ctx)
        facts = scan_files(folder, targets, rows)
        try:
            table = catalog.get_table(ctx.engine, p.datastack, p.table)
        except NotFound:
            table = catalog.create_table(
                ctx.engine,
                p.datastack,
                p.table,
                schema=p.schema,
                voxel_resolution=p.voxel_resolution,
                description=p.description,
            )
        names = table.names
        with ctx.engine.begin() as conn:
            before = conn.execute(text(f"SELECT count(*) FROM {names.live_q}")).scalar_one()
            if before and "min_id" in facts:
                _refuse_existing_ids(conn, table, folder, targets, rows, facts)
            first_id = None
            if "min_id" not in facts:  # no id column: reserve a block of the sequence
                seq = names.sequence
                first_id = conn.execute(text("SELECT nextval(CAST(:s AS regclass))"), {"s": seq}).scalar_one()
                conn.execute(
                    text("SELECT setval(CAST(:s AS regclass), :v)"),
                    {"s": seq, "v": first_id + max(rows, 1) - 1},
                )
            rebuild = before == 0 and rows >= LARGE_LOAD
            if rebuild:
                drop_indexes(conn, names, table.schema)
        from matengine.workflows.runs import merge_result

        with ctx.engine.begin() as conn:
            merge_result(
                conn,
                ctx.run.id,
                {
                    "upload": {
                        "rows_in_source": rows,
                        "rows_before": before,
                        "first_id": first_id,
                        "rebuild_indexes": rebuild,
                    }
                },
            )
        size = p.chunk_rows
        return [[a, min(rows, a + size)] for a in range(0, rows, size)]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        start, stop = spec
        folder, targets, _ = self._folder_targets(ctx)
        p = _params(ctx)
        table = catalog.get_table(conn, p.datastack, p.table)
        info = ctx.run.result.get("upload") or _result_of(conn, ctx.run.id)
        n = stop - start
        blocks = {f: folder.read_rows(f, start, stop) for f in {t.file for t in targets}}
        id_target = next((t for t in targets if t.column == "id"), None)
        if id_target is not None:
            ids = _column(blocks[id_target.file], id_target.index).astype(np.int64)
        else:
            ids = np.arange(info["first_id"] + start, info["first_id"] + stop, dtype=np.int64)
        hold_write_barrier_shared(conn, table.datastack)
        # importing annotations that existed before: the caller may say since when
        stamp = (
            to_utc(p.created) if p.created else conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        )
        live = [("id", ids, "bigint"), ("valid", np.ones(n, bool), "boolean")]
        seg = [("id", ids, "bigint")]
        texts = []
        for t in targets:
            if t.column == "id":
                continue
            block = blocks[t.file]
            if t.sql_type == "position":
                for axis, name in enumerate("xyz"):
                    live.append((f"{t.column}_{name}", block[:, axis].astype(np.float64), "double precision"))
            elif t.sql_type == "text":
                texts.append((t.column, text_values(_column(block, t.index))))
            else:
                col = _column(block, t.index)
                if col.dtype.kind == "u" and col.dtype.itemsize < 8:
                    # widen by value: the COPY reinterprets unsigned as signed of the same width
                    col = col.astype(np.int64)
                (seg if t.table == "segmentation" else live).append((t.column, col, t.sql_type))
        if texts:
            _copy_rows(conn, table.names.live_q, live, texts, stamp)
        else:
            created = np.full(n, timestamptz_value(stamp), np.int64)
            copy_in(conn, table.names.live_q, [*live, ("created", created, "timestamptz")])
        if table.schema.bound_points:
            copy_in(conn, table.names.segmentation_q, seg)
        return n

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        p = _params(ctx)
        table = catalog.get_table(ctx.engine, p.datastack, p.table)
        names = table.names
        with ctx.engine.connect() as conn:
            info = _result_of(conn, ctx.run.id)
            done = bookkeeping.chunk_rows(conn, ctx.run.id, step_index=ctx.step_index)
            count = conn.execute(text(f"SELECT count(*) FROM {names.live_q}")).scalar_one()
        if done != info["rows_in_source"] or count < info["rows_before"] + done:
            raise InvalidInput(
                f"row count check failed: source has {info['rows_in_source']} "
                f"rows, {done} were written, table has {count}"
            )
        with ctx.engine.begin() as conn:
            build_indexes(conn, names, table.schema)
            seq = names.sequence
            conn.execute(
                text(
                    f"SELECT setval(CAST(:s AS regclass), GREATEST("
                    f"(SELECT coalesce(max(id), 1) FROM {names.live_q}), "
                    "(SELECT last_value FROM " + names.sequence_q + ")))"
                ),
                {"s": seq},
            )
            if p.roots_timestamp and table.roots_last_updated is None:
                catalog.set_roots_last_updated(conn, table, to_utc(p.roots_timestamp))
            catalog.touch_table(conn, table)
        with ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ANALYZE {names.live_q}"))
            if table.schema.bound_points:
                conn.execute(text(f"ANALYZE {names.segmentation_q}"))
        return {"rows": int(done), "table_rows": int(count)}


def _result_of(conn: Connection, run_id: int) -> dict[str, Any]:
    return bookkeeping.run_result(conn, run_id, "upload")


def _copy_rows(
    conn: Connection,
    table_q: str,
    cols: list[tuple[str, np.ndarray, str]],
    texts: list[tuple[str, np.ndarray]],
    created: datetime,
) -> None:
    """Tables with text columns: psycopg's row-wise COPY (still one COPY per chunk)."""
    names = [c for c, _, _ in cols] + [c for c, _ in texts] + ["created"]
    values = [v.tolist() for _, v, _ in cols] + [v.tolist() for _, v in texts]
    copy_in_rows(conn, table_q, names, ((*row, created) for row in zip(*values, strict=True)))


def _refuse_existing_ids(
    conn: Connection,
    table: AnnotationTable,
    folder: NpyFolder,
    targets: list[Target],
    rows: int,
    facts: dict[str, Any],
) -> None:
    names = table.names
    overlap = conn.execute(
        text(f"SELECT count(*) FROM {names.live_q} WHERE id BETWEEN :a AND :b"),
        {"a": facts["min_id"], "b": facts["max_id"]},
    ).scalar_one()
    if not overlap:
        return
    id_target = next(t for t in targets if t.column == "id")
    for start in range(0, rows, 100_000):
        ids = _column(
            folder.read_rows(id_target.file, start, min(rows, start + 100_000)), id_target.index
        ).astype(np.int64)
        hit = conn.execute(
            text(f"SELECT id FROM {names.live_q} WHERE id = ANY(:ids) LIMIT 1"), {"ids": ids.tolist()}
        ).scalar()
        if hit is not None:
            row = start + int(np.flatnonzero(ids == hit)[0])
            raise InvalidInput(
                f"{id_target.file}.npy row {row}: id {hit} already exists in table {table.table_name!r}",
                row=row,
                field="id",
            )


@workflow("bulk_upload")
def _steps(run: Run) -> list[Step]:
    return [UploadStep()]
