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
from matengine.db.identifiers import quote
from matengine.errors import InvalidInput
from matengine.timeutil import to_utc
from matengine.workflows.engine import Step, StepContext

ROOT_SLICE = 20_000  # expired roots per update-roots chunk


def _table(ctx: StepContext | Connection, datastack: str, name: str) -> AnnotationTable:
    source = ctx.engine if isinstance(ctx, StepContext) else ctx
    return catalog.get_table(source, datastack, name)


def _write_columns(conn: Connection, table: AnnotationTable, ids: np.ndarray,
                   cols: dict[str, np.ndarray]) -> None:
    """One set-wise UPDATE of segmentation columns for the given ids."""
    if len(ids) == 0:
        return
    names = list(cols)
    sets = ", ".join(f"{quote(c)} = u.c{j}" for j, c in enumerate(names))
    arrays = ", ".join(f"CAST(:c{j} AS bigint[])" for j in range(len(names)))
    aliases = ", ".join(f"c{j}" for j in range(len(names)))
    params: dict[str, Any] = {"ids": ids.astype(np.int64).tolist()}
    for j, c in enumerate(names):
        params[f"c{j}"] = cols[c].astype(np.uint64).view(np.int64).tolist()
    conn.execute(
        text(f"UPDATE {table.names.segmentation_q} AS s SET {sets} "
             f"FROM unnest(CAST(:ids AS bigint[]), {arrays}) AS u(id, {aliases}) "
             "WHERE s.id = u.id"),
        params,
    )


class IngestStep(Step):
    """Give every row still lacking ids its supervoxels (from its points) and roots at L."""

    def __init__(self, datastack: str, table: str, timestamp: str):
        self.datastack, self.table, self.timestamp = datastack, table, timestamp
        self.key = f"ingest:{table}"

    def plan(self, ctx: StepContext) -> list[Any]:
        table = _table(ctx, self.datastack, self.table)
        if not table.schema.bound_points:
            return []
        with ctx.engine.begin() as conn:
            if table.roots_last_updated is None:
                # a table with no roots yet: this run's time becomes its root time
                catalog.set_roots_last_updated(conn, table, to_utc(self.timestamp))
            ids = conn.execute(
                text(f"SELECT id FROM {table.names.segmentation_q} "
                     f"WHERE {pending_condition(table.schema)} ORDER BY id")
            ).scalars().all()
        size = int(ctx.params.get("chunk_rows") or 200_000)
        return [[ids[i], ids[min(len(ids), i + size) - 1]] for i in range(0, len(ids), size)]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        lo, hi = spec
        table = _table(conn, self.datastack, self.table)
        when = table.roots_last_updated
        schema = table.schema
        cols = ["s.id"]
        for pt in schema.bound_points:
            sv_c, root_c = quote(pt + "_supervoxel_id"), quote(pt + "_root_id")
            cols += [f"a.{quote(f'{pt}_position_{a}')}" for a in "xyz"]
            cols += [f"coalesce(s.{sv_c}, 0)", f"s.{sv_c} IS NULL",
                     f"coalesce(s.{root_c}, 0)", f"s.{root_c} IS NULL"]
        rows = conn.execute(
            text(f"SELECT {', '.join(cols)} FROM {table.names.segmentation_q} s "
                 f"JOIN {table.names.live_q} a ON a.id = s.id "
                 f"WHERE s.id BETWEEN :lo AND :hi AND {pending_condition(schema, 's')}"),
            {"lo": lo, "hi": hi},
        ).all()
        if not rows:
            return 0
        data = np.array(rows, dtype=object)
        ids = data[:, 0].astype(np.int64)
        out: dict[str, np.ndarray] = {}
        seg = ctx.segmentation
        for k, pt in enumerate(schema.bound_points):
            base = 1 + 7 * k
            pts = data[:, base:base + 3].astype(np.float64)
            sv = data[:, base + 3].astype(np.int64).view(np.uint64)
            sv_unknown = data[:, base + 4].astype(bool)
            root = data[:, base + 5].astype(np.int64).view(np.uint64)
            root_unknown = data[:, base + 6].astype(bool)
            if sv_unknown.any():
                sv[sv_unknown] = seg.supervoxels.lookup(
                    pts[sv_unknown], table.voxel_resolution).supervoxel_ids
            need = root_unknown & (sv != 0)
            if need.any():
                root[need] = seg.roots.get_roots(sv[need], when)
            root[root_unknown & (sv == 0)] = 0  # no segmentation: 0 ids, never retried
            out[f"{pt}_supervoxel_id"] = sv
            out[f"{pt}_root_id"] = root
        _write_columns(conn, table, ids, out)
        return len(ids)

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        table = _table(ctx, self.datastack, self.table)
        if not table.schema.bound_points:
            return {}
        no_seg = " OR ".join(f"{quote(pt + '_supervoxel_id')} = 0"
                             for pt in table.schema.bound_points)
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
                f"{self.target.isoformat()}; versions go forward in time")
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
        return [expired[i:i + size].tolist() for i in range(0, len(expired), size)]

    def run_chunk(self, ctx: StepContext, conn: Connection, spec: Any) -> int:
        table = _table(conn, self.datastack, self.table)
        touched = 0
        for pt in table.schema.bound_points:
            rows = conn.execute(
                text(f"SELECT id, {quote(pt + '_supervoxel_id')} FROM "
                     f"{table.names.segmentation_q} WHERE {quote(pt + '_root_id')} = ANY(:r)"),
                {"r": spec},
            ).all()
            if not rows:
                continue
            arr = np.array(rows, dtype=np.int64)
            sv = arr[:, 1].view(np.uint64)
            roots = ctx.segmentation.roots.get_roots(sv, self.target)
            _write_columns(conn, table, arr[:, 0], {f"{pt}_root_id": np.asarray(roots)})
            touched += len(rows)
        return touched

    def finish(self, ctx: StepContext, plan: list[Any]) -> dict[str, Any]:
        table = _table(ctx, self.datastack, self.table)
        if table.roots_last_updated is not None and (
                table.roots_last_updated < self.target or table.roots_updating_to is not None):
            with ctx.engine.begin() as conn:
                catalog.set_roots_last_updated(conn, table, self.target)
        return {f"update_roots:{self.table}": {
            "expired_roots": sum(len(p) for p in plan), "roots_at": self.target.isoformat()}}
