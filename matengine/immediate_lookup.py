"""Supervoxel and root ids for annotations the moment they are posted.

The field's annotation service posts rows, then asks the materialization service to look up
their supervoxels (``lookup_svid``); its live queries answer them once that task ran. Here the
annotation route looks the ids up itself, in the request, right after the rows commit: a
batch of caveclient's (at most 10,000 rows) costs one supervoxel lookup per point column and
one root lookup, so ``live_live_query`` right after ``post_annotation`` has their roots.

The segmentation table's invariant holds (every root is the root of its supervoxel at the
table's ``roots_last_updated`` L, :mod:`matengine.workflows.sync_steps`): roots are looked up
at L, under a lock on the table's metadata row, which the ingest and update-roots workflows
take when they move L. While an update-roots run is moving L (``roots_updating_to`` set) the
rows are left to it and the next ingest. A table without L yet gets the time of the
datastack's latest version (else now), so versions still go forward from it. If the
segmentation cannot be reached the post still succeeds: the rows wait for ingest, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from sqlalchemy import Connection, Engine, func, select, text

from matengine import catalog
from matengine.db import metadata as m
from matengine.db.annotation_tables import pending_condition
from matengine.db.identifiers import quote
from matengine.query.columns import ColKind
from matengine.query.reader import Fetch
from matengine.segmentation import Segmentation
from matengine.segmentation.errors import SegmentationError

log = logging.getLogger("matengine.lookup")

# above this many rows a request triggers an ingest run instead (caveclient posts at most 10k)
MAX_IN_REQUEST = 10_000


def _lock_table_row(conn, table: catalog.AnnotationTable) -> catalog.AnnotationTable:
    t = m.annotation_tables
    conn.execute(
        select(t.c.table_name)
        .where(t.c.datastack == table.datastack, t.c.table_name == table.table_name)
        .with_for_update()
    )
    return catalog.get_table(conn, table.datastack, table.table_name)


def _first_roots_time(conn: Connection, datastack: str) -> datetime:
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


def lookup_ids(
    engine: Engine, segmentation: Segmentation, datastack: str, table_name: str, ids: Sequence[int]
) -> int:
    """Look up supervoxels and roots (at the table's L) of the rows ``ids`` still waiting
    for them; returns how many rows got ids (0 when left to ingest)."""
    from matengine.workflows.sync_steps import _read, _write_columns

    table = catalog.get_table(engine, datastack, table_name)
    points = table.schema.bound_points
    if not points or not ids:
        return 0
    with engine.begin() as conn:
        table = _lock_table_row(conn, table)
        if table.roots_updating_to is not None:
            return 0
        if table.roots_last_updated is None:
            catalog.set_roots_last_updated(conn, table, _first_roots_time(conn, datastack))
            table = catalog.get_table(conn, datastack, table_name)
        fetches = [Fetch("id", "s.id", ColKind.INT, nullable=False)]
        for pt in points:
            fetches += [
                Fetch(f"{pt}_{a}", f"a.{quote(f'{pt}_position_{a}')}", ColKind.FLOAT, nullable=False)
                for a in "xyz"
            ]
        data = _read(
            conn,
            f"FROM {table.names.segmentation_q} s JOIN {table.names.live_q} a ON a.id = s.id "
            f"WHERE s.id = ANY(%(ids)s) AND {pending_condition(table.schema, 's')}",
            {"ids": [int(i) for i in ids]},
            fetches,
        )
        found_ids = data["id"]
        if len(found_ids) == 0:
            return 0
        xyz = np.concatenate([np.stack([data[f"{pt}_{a}"] for a in "xyz"], axis=1) for pt in points])
        sv = np.asarray(
            segmentation.supervoxels.lookup(xyz, table.voxel_resolution).supervoxel_ids, np.uint64
        )
        roots = np.zeros(len(sv), np.uint64)
        known = sv != 0
        assert table.roots_last_updated is not None  # set above under the row lock
        if known.any():
            roots[known] = np.asarray(
                segmentation.roots.get_roots(sv[known], table.roots_last_updated), np.uint64
            )
        n = len(found_ids)
        out = {}
        for k, pt in enumerate(points):
            out[f"{pt}_supervoxel_id"] = sv[k * n : (k + 1) * n]
            out[f"{pt}_root_id"] = roots[k * n : (k + 1) * n]
        _write_columns(conn, table, found_ids, out)
    return n


def lookup_after_post(engine: Engine, datastack: str, table_name: str, ids: Sequence[int]) -> int:
    """The annotation routes' hook: ids in the request for a batch up to
    :data:`MAX_IN_REQUEST`, an ingest run of the table for a larger one. Never fails the
    post: when the segmentation fails us the rows wait for the next ingest."""
    from matengine.config import get_settings
    from matengine.workflows.segmentation_cache import cached_segmentation

    if len(ids) > MAX_IN_REQUEST:
        trigger_ingest(engine, datastack, table_name)
        return 0
    try:
        ds = catalog.get_datastack(engine, datastack)
        seg = cached_segmentation(ds.segmentation_source, get_settings().segmentation_token)
        return lookup_ids(engine, seg, datastack, table_name, ids)
    except SegmentationError as exc:
        log.warning("lookup of %d rows of %s.%s left to ingest: %s", len(ids), datastack, table_name, exc)
    except Exception:  # the rows are committed; a failed lookup must not turn the post into an error
        log.exception("lookup of %d rows of %s.%s left to ingest", len(ids), datastack, table_name)
    return 0


def trigger_ingest(engine: Engine, datastack: str, table_name: str) -> int | None:
    """Start an ingest run of one table; None if one is already running (it takes the rows)."""
    from matengine.errors import Conflict
    from matengine.workflows.submit import submit, sync_parameters

    params = sync_parameters(engine, "ingest", datastack, table=table_name)
    try:
        return submit(engine, "ingest", params, datastack=datastack, table=table_name)
    except Conflict:
        return None
