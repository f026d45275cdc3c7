"""Keeping segmentation tables in sync: ingest new annotations, update expired root ids.

Invariant (docs/design.md §3): every root id in a segmentation table is the root of its supervoxel at
the table's ``roots_last_updated`` (L). Ingest looks roots up *at L* (not now), so the table
stays valid at one time; update-roots moves L forward to T by touching only the rows whose
roots expired between L and T.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text

from matengine import catalog
from matengine.catalog import AnnotationTable
from matengine.db import bookkeeping
from matengine.db import metadata as m
from matengine.db.annotation_tables import pending_condition
from matengine.db.connection import driver_connection
from matengine.db.copy import copy_in
from matengine.db.identifiers import quote
from matengine.errors import InvalidInput
from matengine.query.columns import ColKind
from matengine.query.reader import Fetch, copy_batches
from matengine.segmentation import Segmentation
from matengine.timeutil import to_utc
from matengine.workflows.engine import Step, StepContext
from matengine.workflows.params import SyncParams
from matengine.workflows.roots_rewrite import RootsPlan, choose_roots_plan, count_for_plan, rewrite_roots

ROOT_SLICE = 20_000  # expired roots per update-roots chunk
SMALL_WRITE_ROWS = 2_000  # up to this many rows are written by one UPDATE from arrays
NAMED_ROWS = 10_000  # up to this many pending rows: one ingest chunk whose spec names them
_OUTSIDE = "rows_without_segmentation"  # an ingest run's count in its result


def _table(ctx: StepContext | Connection, datastack: str, name: str) -> AnnotationTable:
    source = ctx.engine if isinstance(ctx, StepContext) else ctx
    return catalog.get_table(source, datastack, name)


def _read(
    conn: Connection, select_from: str, params: dict[str, Any], fetches: list[Fetch]
) -> dict[str, np.ndarray]:
    """Columns of a query as numpy arrays, through binary COPY (no Python object per value)."""
    batches = list(copy_batches(driver_connection(conn), select_from, params, fetches, batch_rows=65_536))
    out = {}
    for f in fetches:
        parts = [b.values[f.key] for b in batches]
        out[f.key] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        nulls = [b.nulls.get(f.key, np.zeros(len(b), bool)) for b in batches]
        if f.nullable:
            out[f.key + "?"] = np.concatenate(nulls) if nulls else np.zeros(0, bool)
    return out


def _write_columns(
    conn: Connection, table: AnnotationTable, ids: np.ndarray, cols: dict[str, np.ndarray]
) -> None:
    """Binary COPY into a temporary table, then one set-wise UPDATE … FROM (few rows: one
    UPDATE from bound arrays, no temporary table)."""
    if len(ids) == 0:
        return
    if len(ids) <= SMALL_WRITE_ROWS:
        _write_few(conn, table, ids, cols)
        return
    ids, cols = _sorted_by_id(ids, cols)
    staging = quote("matengine_seg_update")
    conn.execute(
        text(f"CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table.names.segmentation_q}) ON COMMIT DROP")
    )
    conn.execute(text(f"TRUNCATE {staging}"))
    copy_in(
        conn,
        staging,
        [("id", ids.astype(np.int64), "bigint")]
        + [(c, np.asarray(v, np.uint64).view(np.int64), "bigint") for c, v in cols.items()],
    )
    sets = ", ".join(f"{quote(c)} = u.{quote(c)}" for c in cols)
    with _primary_key_probes(conn):
        conn.execute(
            text(f"UPDATE {table.names.segmentation_q} AS s SET {sets} FROM {staging} u WHERE s.id = u.id")
        )


def _sorted_by_id(ids: np.ndarray, cols: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows in id order: the UPDATE then walks the primary key (and the heap, loaded in id
    order) forwards instead of jumping around."""
    order = np.argsort(ids, kind="stable")
    return ids[order], {k: np.asarray(v)[order] for k, v in cols.items()}


@contextmanager
def _primary_key_probes(conn: Connection) -> Iterator[None]:
    """Join the staged rows to the table by primary-key probes only. Left to itself the
    planner hashes or scans the *whole* segmentation table for every chunk's UPDATE, a cost
    that grows with the table (N/chunk chunks x N rows); probes cost the same per row at any
    size."""
    conn.execute(text("SET LOCAL enable_hashjoin = off"))
    conn.execute(text("SET LOCAL enable_mergejoin = off"))
    yield
    # (after an error the transaction rolls back, and these settings with it)
    conn.execute(text("SET LOCAL enable_hashjoin TO DEFAULT"))
    conn.execute(text("SET LOCAL enable_mergejoin TO DEFAULT"))


_PENDING_INDEX_SETTINGS = ("enable_seqscan", "enable_bitmapscan", "jit")


@contextmanager
def _pending_index(conn: Connection) -> Iterator[None]:
    """Find the rows waiting for ingest through the partial index that holds exactly them
    (``ix_<segmentation table>_pending``), whatever the statistics say. Right after a large
    ingest, until the table is analyzed again, they still count most rows as pending: the
    planner then scans the whole table (and JIT-compiles the scan) to find a few new rows --
    the fixed cost of every small ingest run. An index scan of the partial index costs what
    the pending rows cost, and it also drops the index entries of rows ingested since."""
    names = {"names": list(_PENDING_INDEX_SETTINGS)}
    conn.execute(
        text("SELECT set_config(name, 'off', true) FROM pg_settings WHERE name = ANY(:names)"), names
    )
    yield
    # (after an error the transaction rolls back, and these settings with it)
    conn.execute(
        text("SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name = ANY(:names)"), names
    )


def count_pending(conn: Connection, table: AnnotationTable, up_to: int | None = None) -> int:
    """How many rows of ``table`` wait for ingest (at most ``up_to``, where counting stops),
    counted in the partial index that holds them (:func:`_pending_index`)."""
    limit = "" if up_to is None else " LIMIT :n"
    with _pending_index(conn):
        return int(
            conn.execute(
                text(
                    f"SELECT count(*) FROM (SELECT id FROM {table.names.segmentation_q} "
                    f"WHERE {pending_condition(table.schema)}{limit}) p"
                ),
                {"n": up_to} if up_to is not None else {},
            ).scalar_one()
        )


def pending_ids(conn: Connection, table: AnnotationTable, up_to: int | None = None) -> np.ndarray:
    """Ids of the rows of ``table`` waiting for ingest (the first ``up_to``), in id order, read
    from the partial index that holds them (:func:`_pending_index`)."""
    limit = "" if up_to is None else " LIMIT %(n)s"
    with _pending_index(conn):
        data = _read(
            conn,
            f"FROM {table.names.segmentation_q} WHERE {pending_condition(table.schema)} ORDER BY id{limit}",
            {} if up_to is None else {"n": int(up_to)},
            [Fetch("id", "id", ColKind.INT, nullable=False)],
        )
    return data["id"]


def lock_roots_time(conn: Connection, table: AnnotationTable) -> None:
    """Lock the table's catalog row until the transaction ends, before moving its root time.

    :func:`ingest_rows_by_id` reads the root time under ``FOR KEY SHARE`` and writes roots at
    it in the same transaction; this ``FOR UPDATE`` waits for such writers (and makes new
    ones wait), so no row is written at a time the table has just left. Annotation writes only
    ``UPDATE`` non-key columns of the row and never wait on the share lock."""
    bookkeeping.lock_table_row(conn, table.datastack, table.table_name)


def first_roots_time(conn: Connection, datastack: str) -> datetime:
    """L for a table that has none yet: the time of the datastack's latest version (running
    ones included), else now. Roots may be looked up at any L; choosing the latest version's
    keeps a version being made (or made next, at a later time) able to bring the table's
    roots forward to its T, where an L of "now" could lie past a running version's T."""
    v = m.versions
    latest = conn.execute(
        select(func.max(v.c.time_stamp)).where(
            v.c.datastack == datastack, v.c.status.in_(("RUNNING", "AVAILABLE"))
        )
    ).scalar()
    return latest or conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def ingest_rows_by_id(
    engine: Engine,
    datastack: str,
    table_name: str,
    ids: Sequence[int],
    *,
    segmentation: Segmentation | None = None,
) -> int:
    """Ingest just these rows, now, in one transaction: no run, no plan (annotation posts that
    want their ids at once, :mod:`matengine.immediate_lookup`). Rows already ingested are
    skipped; returns the rows ingested.

    Roots are looked up at the table's root time L, or at the time an update-roots run is
    moving it to (those rows are then already right at that time and the run leaves them
    alone); see :func:`lock_roots_time` for why that read cannot race the run. A table with
    no L yet gets :func:`first_roots_time`. Without ``segmentation`` the datastack's is opened
    (once per process, :mod:`matengine.workflows.segmentation_cache`)."""
    table = catalog.get_table(engine, datastack, table_name)
    if not table.schema.bound_points or not ids:
        return 0
    if segmentation is None:
        from matengine.config import get_settings
        from matengine.workflows.segmentation_cache import cached_segmentation

        source = catalog.get_datastack(engine, datastack).segmentation_source
        segmentation = cached_segmentation(source, get_settings().segmentation_token)
    with engine.begin() as conn:
        last, moving_to = bookkeeping.root_times_key_share(conn, datastack, table_name)
        when = moving_to or last
        if when is None:
            # a table with no roots yet; coalesce: a concurrent caller may have set it first
            # (its UPDATE of this row holds ours back until it commits)
            first = first_roots_time(conn, datastack)
            when = bookkeeping.set_first_roots_time(conn, datastack, table_name, first)
        return ingest_pending_rows(
            conn, table, segmentation, "s.id = ANY(%(ids)s)", {"ids": [int(i) for i in ids]}, when
        ).rows


def _write_few(
    conn: Connection, table: AnnotationTable, ids: np.ndarray, cols: dict[str, np.ndarray]
) -> None:
    names = list(cols)
    arrays = ", ".join(f"CAST(:c{j} AS bigint[])" for j in range(len(names)))
    sets = ", ".join(f"{quote(c)} = u.c{j}" for j, c in enumerate(names))
    params: dict[str, Any] = {"ids": np.asarray(ids, np.int64).tolist()}
    for j, c in enumerate(names):
        params[f"c{j}"] = np.asarray(cols[c], np.uint64).view(np.int64).tolist()
    aliases = ", ".join(f"c{j}" for j in range(len(names)))
    conn.execute(
        text(
            f"UPDATE {table.names.segmentation_q} AS s SET {sets} "
            f"FROM unnest(CAST(:ids AS bigint[]), {arrays}) AS u(id, {aliases}) WHERE s.id = u.id"
        ),
        params,
    )


class IngestStep(Step):
    """Give every row still lacking ids its supervoxels (from its points) and roots at L."""

    def __init__(self, datastack: str, table: str, timestamp: str):
        self.datastack, self.table, self.timestamp = datastack, table, timestamp
        self.key = f"ingest:{table}"

    def plan(self, ctx: StepContext) -> list[Any]:
        """Few pending rows (the posts of the last minutes: up to ``NAMED_ROWS`` and one
        chunk's worth) make one chunk that names them, read once from the partial index that
        holds them. More make chunks that are boxes in x/y (of the first bound point) aligned
        to the volume's chunk grid, so that a chunk reads only its own part of the
        segmentation; the outer boxes reach to infinity, so every row belongs to exactly one
        chunk."""
        table = _table(ctx, self.datastack, self.table)
        if not table.schema.bound_points:
            return []
        size = SyncParams.of(ctx.parameters).chunk_rows
        with ctx.engine.begin() as conn:
            if table.roots_last_updated is None:
                # a table with no roots yet: this run's time becomes its root time
                catalog.set_roots_last_updated(conn, table, to_utc(self.timestamp))
            named = min(NAMED_ROWS, size)
            few = pending_ids(conn, table, up_to=named + 1)
            if len(few) <= named:
                return [{"ids": few.tolist()}] if len(few) else []
            # more: one box if they fit in one chunk (found in the partial index), else the
            # whole count, to cut the table into boxes
            pending = count_pending(conn, table, up_to=size + 1)
            if pending > size:
                pending = conn.execute(
                    text(
                        f"SELECT count(*) FROM {table.names.segmentation_q} "
                        f"WHERE {pending_condition(table.schema)}"
                    )
                ).scalar_one()
        if not pending:
            return []
        boxes = -(-pending // size)
        if boxes == 1:
            return [{"x": [None, None], "y": [None, None]}]
        seg = ctx.segmentation.supervoxels
        scale = seg.resolution / np.asarray(table.voxel_resolution, np.float64)
        edges = []
        chunks = -(-seg.bounds.size // seg.bounds.chunk_size)
        nx = max(1, min(int(chunks[0]), round(np.sqrt(boxes * chunks[0] / max(chunks[1], 1)))))
        ny = max(1, min(int(chunks[1]), -(-boxes // nx)))
        for axis, n in ((0, nx), (1, ny)):
            cuts = np.unique(np.round(np.linspace(0, chunks[axis], n + 1)).astype(np.int64))
            # chunk boundaries in segmentation voxels, then in the table's voxels
            at = (seg.bounds.offset[axis] + cuts * seg.bounds.chunk_size[axis]) * scale[axis]
            inner = [float(v) for v in at[1:-1]]
            edges.append(list(zip([None, *inner], [*inner, None], strict=True)))
        return [{"x": list(x), "y": list(y)} for x in edges[0] for y in edges[1]]

    @staticmethod
    def _box_condition(pt: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Half-open ``[lo, hi)`` ranges on the point's x and y, plus the same box for the
        GiST index on ``point(x, y)`` (finite stand-ins for the open ends)."""
        big = 1.7976931348623157e308
        cond, params = [], {}
        for axis in "xy":
            lo, hi = spec[axis]
            col = f"a.{quote(f'{pt}_position_{axis}')}"
            if lo is not None:
                cond.append(f"{col} >= %({axis}0)s")
            if hi is not None:
                cond.append(f"{col} < %({axis}1)s")
            params[f"b{axis}0"] = -big if lo is None else lo
            params[f"b{axis}1"] = big if hi is None else hi
            params[f"{axis}0"], params[f"{axis}1"] = lo, hi
        x, y = quote(f"{pt}_position_x"), quote(f"{pt}_position_y")
        cond.append(f"point(a.{x}, a.{y}) <@ box(point(%(bx0)s, %(by0)s), point(%(bx1)s, %(by1)s))")
        return " AND ".join(cond), params

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = _table(conn, self.datastack, self.table)
        if "ids" in spec:
            # a few rows named by the plan (those of them ingested since are skipped)
            where: str = "s.id = ANY(%(ids)s)"
            params: dict[str, Any] = {"ids": spec["ids"]}
        elif spec["x"] == [None, None] and spec["y"] == [None, None]:
            # the one-box plan: every pending row, found by the partial index alone, then
            # read by primary key (as ingest_rows_by_id reads the rows it is given)
            ids = pending_ids(conn, table)
            if not len(ids):
                return 0
            where, params = "s.id = ANY(%(ids)s)", {"ids": ids.tolist()}
        else:
            where, params = self._box_condition(table.schema.bound_points[0], spec)
        when = table.roots_last_updated
        if when is None:  # plan() gave the table its root time before any chunk runs
            raise InvalidInput(f"table {self.table!r} has no root time to ingest at")
        done = ingest_pending_rows(conn, table, ctx.segmentation, where, params, when)
        if done.outside:
            # counted with the chunk's marker, so exactly once (a count of the whole table
            # here or in finish would cost every run, however small, a pass over the index)
            bookkeeping.add_to_run_count(conn, ctx.run.id, self.key, _OUTSIDE, done.outside)
        return done.rows

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        """The run's count of rows it found outside the segmentation (0 ids), in the step's
        result too."""
        table = _table(ctx, self.datastack, self.table)
        if not table.schema.bound_points:
            return {}
        with ctx.engine.connect() as conn:
            counted = bookkeeping.run_result(conn, ctx.run.id, self.key) or {}
        return {self.key: {_OUTSIDE: int(counted.get(_OUTSIDE, 0))}}


class UpdateRootsStep(Step):
    """Move a table's roots from L to T: only rows holding roots that expired in (L, T]."""

    def __init__(self, datastack: str, table: str, timestamp: str):
        self.datastack, self.table, self.timestamp = datastack, table, timestamp
        self.key = f"update_roots:{table}"

    def paces_writeback(self, spec: Any) -> bool:
        return isinstance(spec, dict)  # the rewrite plan: a new table and its index builds

    @property
    def target(self) -> datetime:
        return to_utc(self.timestamp)

    def plan(self, ctx: StepContext) -> list[Any]:
        table = _table(ctx, self.datastack, self.table)
        last, half = table.roots_last_updated, table.roots_updating_to
        if not table.schema.bound_points or last is None or (last == self.target and not half):
            return []
        if self.target < last:
            raise InvalidInput(
                f"table {self.table!r} already holds roots at {last.isoformat()}, later than "
                f"{self.target.isoformat()}; versions go forward in time"
            )
        roots = ctx.segmentation.roots
        expired, _new = roots.get_delta_roots(last, self.target)
        if half is not None and half != self.target:
            # an earlier run died half-way: some rows hold roots at ``half``; replace those of
            # them that are not valid at the target too
            if half < self.target:
                stale, _ = roots.get_delta_roots(half, self.target)
            else:
                _, stale = roots.get_delta_roots(self.target, half)
            expired = np.concatenate([np.asarray(expired, np.uint64), np.asarray(stale, np.uint64)])
        expired = np.unique(np.asarray(expired, np.uint64)).astype(np.int64)
        with ctx.engine.begin() as conn:
            lock_roots_time(conn, table)
            catalog.set_roots_updating_to(conn, table, self.target)
        if not len(expired):
            return []
        if self._plan_kind(ctx, table, expired) == "rewrite":
            return [{"rewrite": expired.tolist()}]
        size = SyncParams.of(ctx.parameters).roots_per_chunk or ROOT_SLICE
        return [expired[i : i + size].tolist() for i in range(0, len(expired), size)]

    def _plan_kind(self, ctx: StepContext, table: AnnotationTable, expired: np.ndarray) -> RootsPlan:
        """The run's ``roots_plan`` parameter if it names one, else the cheaper by counts."""
        forced = SyncParams.of(ctx.parameters).roots_plan
        if forced != "auto":
            return forced
        with ctx.engine.connect() as conn:
            counts = count_for_plan(conn, table, expired)
        return choose_roots_plan(counts)

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = _table(conn, self.datastack, self.table)
        if isinstance(spec, dict):
            expired = np.asarray(spec["rewrite"], np.int64)
            return rewrite_roots(conn, table, ctx.segmentation, expired, self.target)
        points = table.schema.bound_points
        fetches = [Fetch("id", "id", ColKind.INT, nullable=False)]
        for pt in points:
            fetches += [
                Fetch(f"{pt}_sv", quote(pt + "_supervoxel_id"), ColKind.INT, False),
                Fetch(f"{pt}_root", quote(pt + "_root_id"), ColKind.INT, False),
            ]
        # each root column has its own index: one OR of ``= ANY`` per column is a BitmapOr
        holds = " OR ".join(f"{quote(pt + '_root_id')} = ANY(%(r)s)" for pt in points)
        data = _read(conn, f"FROM {table.names.segmentation_q} WHERE {holds}", {"r": spec}, fetches)
        if len(data["id"]) == 0:
            return 0
        expired = np.asarray(spec, np.int64)
        need = {pt: np.isin(data[f"{pt}_root"], expired) for pt in points}
        wanted = np.concatenate([data[f"{pt}_sv"][need[pt]] for pt in points]).view(np.uint64)
        looked = np.asarray(ctx.segmentation.roots.get_roots(wanted, self.target), np.uint64)
        start = 0
        for pt in points:
            # only the rows whose root in *this* column expired: another chunk may be
            # replacing the other column of the same row at the same moment
            n = int(need[pt].sum())
            _write_columns(conn, table, data["id"][need[pt]], {f"{pt}_root_id": looked[start : start + n]})
            start += n
        return len(data["id"])

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        table = _table(ctx, self.datastack, self.table)
        if table.roots_last_updated is not None and (
            table.roots_last_updated < self.target or table.roots_updating_to is not None
        ):
            with ctx.engine.begin() as conn:
                lock_roots_time(conn, table)
                catalog.set_roots_last_updated(conn, table, self.target)
        rewrite = bool(plan) and isinstance(plan[0], dict)
        return {
            f"update_roots:{self.table}": {
                "expired_roots": len(plan[0]["rewrite"]) if rewrite else sum(len(p) for p in plan),
                "roots_at": self.target.isoformat(),
                "plan": "rewrite" if rewrite else "in_place",
            }
        }


class Ingested(NamedTuple):
    rows: int  # rows given their ids
    outside: int  # of them, rows with a point outside the segmentation (0 ids, never retried)


def ingest_pending_rows(
    conn: Connection,
    table: AnnotationTable,
    seg: Segmentation,
    where: str,
    params: dict[str, Any],
    when: datetime,
) -> Ingested:
    """Give the pending rows of ``table`` matching ``where`` (on ``a``, the live table, and
    ``s``, the segmentation table) their supervoxels and roots at ``when``."""
    schema, points = table.schema, table.schema.bound_points
    fetches = [Fetch("id", "s.id", ColKind.INT, nullable=False)]
    for pt in points:
        fetches += [
            Fetch(f"{pt}_{a}", f"a.{quote(f'{pt}_position_{a}')}", ColKind.FLOAT, nullable=False)
            for a in "xyz"
        ]
        fetches += [
            Fetch(f"{pt}_sv", f"s.{quote(pt + '_supervoxel_id')}", ColKind.INT),
            Fetch(f"{pt}_root", f"s.{quote(pt + '_root_id')}", ColKind.INT),
        ]
    # pending rows (partial index, or a box of the live table) joined by primary key: the
    # statistics after a large ingest still count most rows pending, and the planner would
    # then hash the whole live table to find a few new rows
    with _primary_key_probes(conn):
        data = _read(
            conn,
            f"FROM {table.names.segmentation_q} s "
            f"JOIN {table.names.live_q} a ON a.id = s.id "
            f"WHERE {where} AND {pending_condition(schema, 's')}",
            params,
            fetches,
        )
    ids = data["id"]
    if len(ids) == 0:
        return Ingested(0, 0)
    sv = {pt: data[f"{pt}_sv"].view(np.uint64).copy() for pt in points}
    root = {pt: data[f"{pt}_root"].view(np.uint64).copy() for pt in points}
    # one supervoxel lookup for every unknown point of every bound point column, so each
    # volume chunk is read once per ingest chunk
    unknown = {pt: data[f"{pt}_sv?"] for pt in points}
    xyz = np.concatenate([np.stack([data[f"{pt}_{a}"] for a in "xyz"], axis=1)[unknown[pt]] for pt in points])
    if len(xyz):
        found = seg.supervoxels.lookup(xyz, table.voxel_resolution).supervoxel_ids
        start = 0
        for pt in points:
            n = int(unknown[pt].sum())
            sv[pt][unknown[pt]] = found[start : start + n]
            start += n
    need = {pt: data[f"{pt}_root?"] & (sv[pt] != 0) for pt in points}
    wanted = np.concatenate([sv[pt][need[pt]] for pt in points])
    if len(wanted):
        looked = np.asarray(seg.roots.get_roots(wanted, when), np.uint64)
        start = 0
        for pt in points:
            n = int(need[pt].sum())
            root[pt][need[pt]] = looked[start : start + n]
            start += n
    out: dict[str, np.ndarray] = {}
    for pt in points:
        root[pt][sv[pt] == 0] = 0  # no segmentation: 0 ids, never retried
        out[f"{pt}_supervoxel_id"] = sv[pt]
        out[f"{pt}_root_id"] = root[pt]
    _write_columns(conn, table, ids, out)
    outside = np.logical_or.reduce([sv[pt] == 0 for pt in points])
    return Ingested(len(ids), int(outside.sum()))


def ingest_and_update_steps(params: SyncParams) -> list[Step]:
    """Ingest, then update-roots, of every table of a sync run, to the run's timestamp."""
    ds, ts = params.datastack, params.timestamp
    ingest: list[Step] = [IngestStep(ds, t, ts) for t in params.tables]
    return ingest + [UpdateRootsStep(ds, t, ts) for t in params.tables]
