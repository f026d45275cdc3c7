"""Update roots by rewriting the segmentation table, and the rule that chooses it.

In-place ``UPDATE`` costs per row it touches (each new row version goes into every index of
the table, at random places); a rewrite costs per row of the table but writes sequentially
and builds its indexes in one sorted pass. So a few expired roots are cheapest in place and
many are cheapest rewritten: :func:`choose_roots_plan` picks from counts (rows the expired
roots are estimated to touch, rows in the table) with the crossover measured by
``matengine bench --only sync``.

The rewrite is one transaction (it commits with its chunk's marker, so a run killed during it
leaves the table as it was and the next run simply does it again):

1. the supervoxels of every row holding an expired root are read, their roots at the target
   looked up, and the ``supervoxel → new root`` pairs copied into a staging table;
2. ``CREATE TABLE … AS SELECT`` the table joined with the staging table (the new root where
   the supervoxel is staged, the old one otherwise), then its primary key, indexes and
   statistics — all without blocking anyone: live inserts go on into the old table;
3. the swap: ``LOCK … ACCESS EXCLUSIVE`` with a short ``lock_timeout`` (retried, so a reader
   holding the table never makes writers queue behind us for long), then the rows that
   changed since step 2 — inserted (still pending in the old table) or ingested since (pending
   in the copy, not in the old table) — are carried over, the old table dropped and the new
   one renamed into its place. Writers wait only for this step; a statement waiting on the
   lock finds the new table by its name afterwards.

Step 3 costs in proportion to the rows waiting for ingest, so the rule keeps in-place when
many rows are pending (a standalone update-roots on a table not yet ingested).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from sqlalchemy import Connection, text

from matengine.catalog import AnnotationTable
from matengine.db.annotation_tables import pending_condition, segmentation_index_bodies
from matengine.db.connection import driver_connection
from matengine.db.copy import copy_in
from matengine.db.identifiers import quote
from matengine.segmentation import Segmentation

RootsPlan = Literal["in_place", "rewrite"]

# Measured with `matengine bench --only sync` (docs/operations.md, "Update roots: in place or
# rewrite"): in place costs 1 / in_place_rows_per_s(rows) per row touched -- falling as the
# table outgrows memory, fit as rows^-IN_PLACE_SCALING through 56k rows/s at 1M and 18k rows/s
# at 10M -- and a rewrite 1 / REWRITE_ROWS_PER_S per row of the table: two 1M runs measured a
# rewrite at 12x and 24x the in-place rate (rows of the table vs rows touched, same run).
IN_PLACE_ROWS_PER_S_AT_1M = 56_000.0
IN_PLACE_SCALING = 0.5
REWRITE_ROWS_PER_S = 800_000.0
REWRITE_MIN_ROWS = 50_000  # below this the whole table is cheap to touch either way
REWRITE_MAX_PENDING = 20_000  # rows carried over under the swap lock stay few
SAMPLE_ROOTS = 2_000  # expired roots whose rows are counted to estimate the rows touched
LOCK_TIMEOUT_MS = 50  # longest a writer can queue behind one attempt to take the swap lock
LOCK_PATIENCE_S = 600.0  # give up (the chunk fails and is retried) after this long


@dataclass(frozen=True)
class RootsCounts:
    """What the plan is chosen from."""

    table_rows: int
    touched_rows: int  # estimated rows holding at least one expired root
    pending_rows: int


def in_place_rows_per_s(table_rows: int) -> float:
    """Expected in-place rate (rows touched per second) on a table of ``table_rows``."""
    return IN_PLACE_ROWS_PER_S_AT_1M * (1_000_000 / max(table_rows, 1_000_000)) ** IN_PLACE_SCALING


def crossover_fraction(table_rows: int) -> float:
    """Touched fraction of the table above which a rewrite is the cheaper plan."""
    return in_place_rows_per_s(table_rows) / REWRITE_ROWS_PER_S


def choose_roots_plan(counts: RootsCounts) -> RootsPlan:
    """``rewrite`` when it is expected to be cheaper than updating the touched rows in place."""
    if counts.table_rows < REWRITE_MIN_ROWS or counts.pending_rows > REWRITE_MAX_PENDING:
        return "in_place"
    in_place_s = counts.touched_rows / in_place_rows_per_s(counts.table_rows)
    rewrite_s = counts.table_rows / REWRITE_ROWS_PER_S
    return "rewrite" if rewrite_s < in_place_s else "in_place"


def count_for_plan(conn: Connection, table: AnnotationTable, expired: np.ndarray) -> RootsCounts:
    """Cheap counts: the planner's row estimate, rows waiting for ingest (partial index), and
    the rows a sample of the expired roots hold (index probes), scaled to all of them."""
    seg_q = table.names.segmentation_q
    rows = conn.execute(
        text("SELECT reltuples::bigint FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": seg_q}
    ).scalar_one()
    if rows is None or rows < 0:  # never analysed: count (only small tables are never analysed)
        rows = conn.execute(text(f"SELECT count(*) FROM {seg_q}")).scalar_one()
    pending = conn.execute(
        text(f"SELECT count(*) FROM {seg_q} WHERE {pending_condition(table.schema)}")
    ).scalar_one()
    touched = 0
    if len(expired):
        rng = np.random.default_rng(len(expired))
        sample = expired if len(expired) <= SAMPLE_ROOTS else rng.choice(expired, SAMPLE_ROOTS, replace=False)
        holds = " OR ".join(f"{quote(pt + '_root_id')} = ANY(:r)" for pt in table.schema.bound_points)
        hit = conn.execute(
            text(f"SELECT count(*) FROM {seg_q} WHERE {holds}"), {"r": [int(v) for v in sample]}
        ).scalar_one()
        touched = int(round(hit * len(expired) / len(sample)))
    return RootsCounts(table_rows=int(rows), touched_rows=min(touched, int(rows)), pending_rows=int(pending))


def _temp_name(table: AnnotationTable, what: str) -> str:
    """A short name in the datastack's schema, unique per table, for the table being built."""
    digest = hashlib.sha1(table.names.segmentation.encode()).hexdigest()[:12]
    return f"mte_rw_{digest}_{what}"


def _read_bigints(conn: Connection, query: str, n: int) -> list[np.ndarray]:
    """Columns ``v0 … v<n-1>`` (non-null bigints) of a query, by binary COPY."""
    from matengine.query.columns import ColKind
    from matengine.query.reader import Fetch, copy_batches

    driver = driver_connection(conn)
    fetches = [Fetch(f"v{j}", f"q.v{j}", ColKind.INT, False) for j in range(n)]
    batches = list(copy_batches(driver, f"FROM ({query}) q", {}, fetches))
    return [
        np.concatenate([b.values[f"v{j}"] for b in batches]) if batches else np.zeros(0, np.int64)
        for j in range(n)
    ]


def rewrite_roots(
    conn: Connection,
    table: AnnotationTable,
    segmentation: Segmentation,
    expired: np.ndarray,
    target: datetime,
) -> int:
    """Bring every row holding one of ``expired`` to its root at ``target`` by rewriting the
    segmentation table (module docstring); returns the rows whose roots changed."""
    schema, names = table.schema, table.names
    points = schema.bound_points
    seg_q = names.segmentation_q
    ds = names.datastack
    conn.execute(text("SET LOCAL work_mem = '256MB'"))
    conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))

    # 1. supervoxel -> root at the target, for the supervoxels of rows holding expired roots
    conn.execute(text("CREATE TEMP TABLE matengine_rw_expired (root bigint) ON COMMIT DROP"))
    copy_in(conn, quote("matengine_rw_expired"), [("root", np.asarray(expired, np.int64), "bigint")])
    conn.execute(text("ANALYZE matengine_rw_expired"))
    in_expired = {pt: f"{quote(pt + '_root_id')} IN (SELECT root FROM matengine_rw_expired)" for pt in points}
    per_row = ", ".join(
        f"CASE WHEN {in_expired[pt]} THEN {quote(pt + '_supervoxel_id')} ELSE 0 END AS v{j}"
        for j, pt in enumerate(points)
    )
    held = _read_bigints(
        conn, f"SELECT {per_row} FROM {seg_q} WHERE {' OR '.join(in_expired.values())}", len(points)
    )
    touched = len(held[0])
    sv = np.unique(np.concatenate(held))
    sv = sv[sv != 0]
    roots = np.asarray(segmentation.roots.get_roots(sv.view(np.uint64), target), np.uint64)
    conn.execute(text("CREATE TEMP TABLE matengine_rw_roots (sv bigint, root bigint) ON COMMIT DROP"))
    copy_in(
        conn,
        quote("matengine_rw_roots"),
        [("sv", np.asarray(sv, np.int64), "bigint"), ("root", roots.view(np.int64), "bigint")],
    )
    conn.execute(text("ANALYZE matengine_rw_roots"))

    # 2. the rewritten table, built beside the live one
    new_name = _temp_name(table, "t")
    new_q = quote(ds, new_name)
    select, joins = ["s.id"], []
    for j, pt in enumerate(points):
        sv_c, root_c = quote(pt + "_supervoxel_id"), quote(pt + "_root_id")
        joins.append(f"LEFT JOIN matengine_rw_roots m{j} ON m{j}.sv = s.{sv_c}")
        # a pending row (no root yet) stays pending: ingest gives it roots at the new time
        select += [
            f"s.{sv_c}",
            f"CASE WHEN s.{root_c} IS NOT NULL AND m{j}.root IS NOT NULL "
            f"THEN m{j}.root ELSE s.{root_c} END AS {root_c}",
        ]
    conn.execute(text(f"DROP TABLE IF EXISTS {new_q}"))
    conn.execute(text(f"CREATE TABLE {new_q} AS SELECT {', '.join(select)} FROM {seg_q} s {' '.join(joins)}"))
    pkey_tmp = _temp_name(table, "pk")
    conn.execute(text(f"ALTER TABLE {new_q} ADD CONSTRAINT {quote(pkey_tmp)} PRIMARY KEY (id)"))
    final_names = []
    for i, (name, body) in enumerate(segmentation_index_bodies(names, schema)):
        tmp = _temp_name(table, f"i{i}")
        conn.execute(text(f"CREATE INDEX {quote(tmp)} ON {new_q} {body}"))
        final_names.append((tmp, name))
    conn.execute(text(f"ANALYZE {new_q}"))
    # 3. the swap
    _lock_for_swap(conn, seg_q)
    cols = ["id"] + [quote(c.name) for c in schema.segmentation_columns()]
    conn.execute(
        text(
            f"INSERT INTO {new_q} ({', '.join(cols)}) SELECT {', '.join('o.' + c for c in cols)} "
            f"FROM {seg_q} o WHERE {pending_condition(schema, 'o')} ON CONFLICT (id) DO NOTHING"
        )
    )
    sets = ", ".join(f"{c} = o.{c}" for c in cols[1:])
    conn.execute(
        text(
            f"UPDATE {new_q} n SET {sets} FROM {seg_q} o WHERE {pending_condition(schema, 'n')} "
            f"AND o.id = n.id AND NOT {pending_condition(schema, 'o')}"
        )
    )
    pkey = conn.execute(
        text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass) AND contype = 'p'"),
        {"t": seg_q},
    ).scalar()
    conn.execute(text(f"DROP TABLE {seg_q}"))
    conn.execute(text(f"ALTER TABLE {new_q} RENAME TO {quote(names.segmentation)}"))
    pkey = pkey or f"{names.segmentation}_pkey"
    conn.execute(text(f"ALTER INDEX {quote(ds, pkey_tmp)} RENAME TO {quote(pkey)}"))
    for tmp, name in final_names:
        conn.execute(text(f"ALTER INDEX {quote(ds, tmp)} RENAME TO {quote(name)}"))
    return touched


def _lock_for_swap(conn: Connection, seg_q: str) -> None:
    """Take the table exclusively, one short attempt at a time (module docstring, step 3)."""
    deadline = time.monotonic() + LOCK_PATIENCE_S
    pause = 0.02
    while True:
        conn.execute(text("SAVEPOINT matengine_swap"))
        conn.execute(text(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT_MS)}ms'"))
        try:
            conn.execute(text(f"LOCK TABLE {seg_q} IN ACCESS EXCLUSIVE MODE"))
        except Exception as exc:
            import psycopg.errors

            if not isinstance(getattr(exc, "orig", exc), psycopg.errors.LockNotAvailable):
                raise
            conn.execute(text("ROLLBACK TO SAVEPOINT matengine_swap"))
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            continue
        conn.execute(text("SET LOCAL lock_timeout = 0"))
        conn.execute(text("RELEASE SAVEPOINT matengine_swap"))
        return
