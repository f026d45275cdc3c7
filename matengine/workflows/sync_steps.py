"""Keeping segmentation tables in sync: ingest new annotations, update expired root ids.

Invariant (DESIGN §3): every root id in a segmentation table is the root of its supervoxel at
the table's ``roots_last_updated`` (L). Ingest looks roots up *at L* (not now), so the table
stays valid at one time; update-roots moves L forward to T by touching only the rows whose
roots expired between L and T.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, text

from matengine import catalog
from matengine.catalog import AnnotationTable
from matengine.db.annotation_tables import pending_condition
from matengine.db.connection import driver_connection
from matengine.db.copy import copy_in
from matengine.db.identifiers import quote
from matengine.errors import InvalidInput
from matengine.query.columns import ColKind
from matengine.query.reader import Fetch, copy_batches
from matengine.timeutil import to_utc
from matengine.workflows.engine import Step, StepContext

ROOT_SLICE = 20_000  # expired roots per update-roots chunk


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
    """Binary COPY into a temporary table, then one set-wise UPDATE … FROM."""
    if len(ids) == 0:
        return
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
    conn.execute(
        text(f"UPDATE {table.names.segmentation_q} AS s SET {sets} FROM {staging} u WHERE s.id = u.id")
    )


class IngestStep(Step):
    """Give every row still lacking ids its supervoxels (from its points) and roots at L."""

    def __init__(self, datastack: str, table: str, timestamp: str):
        self.datastack, self.table, self.timestamp = datastack, table, timestamp
        self.key = f"ingest:{table}"

    def plan(self, ctx: StepContext) -> list[Any]:
        """Chunks are boxes in x/y (of the first bound point) aligned to the volume's chunk
        grid, so that a chunk reads only its own part of the segmentation; the outer boxes
        reach to infinity, so every row belongs to exactly one chunk."""
        table = _table(ctx, self.datastack, self.table)
        if not table.schema.bound_points:
            return []
        with ctx.engine.begin() as conn:
            if table.roots_last_updated is None:
                # a table with no roots yet: this run's time becomes its root time
                catalog.set_roots_last_updated(conn, table, to_utc(self.timestamp))
            pending = conn.execute(
                text(
                    f"SELECT count(*) FROM {table.names.segmentation_q} "
                    f"WHERE {pending_condition(table.schema)}"
                )
            ).scalar_one()
        if not pending:
            return []
        size = int(ctx.params.get("chunk_rows") or 200_000)
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
        schema, points = table.schema, table.schema.bound_points
        in_box, params = self._box_condition(points[0], spec)
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
        data = _read(
            conn,
            f"FROM {table.names.segmentation_q} s "
            f"JOIN {table.names.live_q} a ON a.id = s.id "
            f"WHERE {in_box} AND {pending_condition(schema, 's')}",
            params,
            fetches,
        )
        ids = data["id"]
        if len(ids) == 0:
            return 0
        seg = ctx.segmentation
        sv = {pt: data[f"{pt}_sv"].view(np.uint64).copy() for pt in points}
        root = {pt: data[f"{pt}_root"].view(np.uint64).copy() for pt in points}
        # one supervoxel lookup for every unknown point of every bound point column, so each
        # volume chunk is read once per ingest chunk
        unknown = {pt: data[f"{pt}_sv?"] for pt in points}
        xyz = np.concatenate(
            [np.stack([data[f"{pt}_{a}"] for a in "xyz"], axis=1)[unknown[pt]] for pt in points]
        )
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
            looked = np.asarray(seg.roots.get_roots(wanted, table.roots_last_updated), np.uint64)
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
        return len(ids)

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        table = _table(ctx, self.datastack, self.table)
        if not table.schema.bound_points:
            return {}
        no_seg = " OR ".join(f"{quote(pt + '_supervoxel_id')} = 0" for pt in table.schema.bound_points)
        with ctx.engine.connect() as conn:
            missing = conn.execute(
                text(f"SELECT count(*) FROM {table.names.segmentation_q} WHERE {no_seg}")
            ).scalar_one()
        return {f"ingest:{self.table}": {"rows_without_segmentation": int(missing)}}


class UpdateRootsStep(Step):
    """Move a table's roots from L to T: only rows holding roots that expired in (L, T]."""

    def __init__(self, datastack: str, table: str, timestamp: str):
        self.datastack, self.table, self.timestamp = datastack, table, timestamp
        self.key = f"update_roots:{table}"

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
            catalog.set_roots_updating_to(conn, table, self.target)
        size = int(ctx.params.get("roots_per_chunk") or ROOT_SLICE)
        return [expired[i : i + size].tolist() for i in range(0, len(expired), size)]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = _table(conn, self.datastack, self.table)
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
                catalog.set_roots_last_updated(conn, table, self.target)
        return {
            f"update_roots:{self.table}": {
                "expired_roots": sum(len(p) for p in plan),
                "roots_at": self.target.isoformat(),
            }
        }
