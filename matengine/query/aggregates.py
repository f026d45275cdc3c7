"""Per-root aggregates of a synapse-like table (bound points ``pre_pt`` and ``post_pt``):
synapse counts per root and the partner table of a set of roots (``synapse_query``-style,
weight = number of synapses), at a version or at any timestamp T.

At a version the table is frozen and its root columns are indexed, so both are one
``GROUP BY`` in PostgreSQL. At T, stored roots may be stale: the rows' root columns are
read through the live query engine (exact root correction at T, the time rule, root
filters prefiltered by candidates) and grouped on the server with numpy; only the
aggregate is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine

from matengine import catalog
from matengine.config import Settings
from matengine.db.connection import driver_connection
from matengine.db.identifiers import quote, version_schema
from matengine.errors import InvalidInput
from matengine.query import meta
from matengine.schemas import get_schema

MAX_ROOTS = 10_000
MAX_TOP = 1_000_000
SIDES = ("pre", "post")


@dataclass(frozen=True)
class RootCounts:
    root_id: np.ndarray  # int64, by count descending then root ascending
    count: np.ndarray  # int64

    def to_dict(self) -> dict[str, list[int]]:
        return {"root_id": self.root_id.tolist(), "count": self.count.tolist()}


@dataclass(frozen=True)
class Partners:
    pre_pt_root_id: np.ndarray
    post_pt_root_id: np.ndarray
    count: np.ndarray  # synapses of each (pre, post) pair, descending

    def to_dict(self) -> dict[str, list[int]]:
        return {
            "pre_pt_root_id": self.pre_pt_root_id.tolist(),
            "post_pt_root_id": self.post_pt_root_id.tolist(),
            "count": self.count.tolist(),
        }


def _check_table(engine: Engine, datastack: str, table: str, schema_type: str | None = None) -> None:
    schema = get_schema(schema_type) if schema_type else catalog.get_table(engine, datastack, table).schema
    if not {"pre_pt", "post_pt"} <= set(schema.bound_points):
        raise InvalidInput(f"table {table!r} is not synapse-like (needs bound points pre_pt and post_pt)")


def _when(version: int | None, timestamp: Any) -> None:
    if (version is None) == (timestamp is None):
        raise InvalidInput("give a version or a timestamp")


def _roots(roots: Any) -> list[int]:
    if not isinstance(roots, (list, tuple, np.ndarray)) or not len(roots):
        raise InvalidInput("give a non-empty list of root ids", field="root_ids")
    if len(roots) > MAX_ROOTS:
        raise InvalidInput(f"at most {MAX_ROOTS} root ids", field="root_ids")
    try:
        out = sorted({int(r) for r in roots})
    except (TypeError, ValueError):
        raise InvalidInput("root ids are integers", field="root_ids") from None
    if any(not 0 < r < 2**63 for r in out):
        raise InvalidInput("root ids are positive 64-bit integers", field="root_ids")
    return out


def _sql(engine: Engine, sql: str, params: dict[str, Any]) -> list[tuple]:
    raw = engine.raw_connection()
    try:
        rows = driver_connection(raw).execute(sql, params).fetchall()
        raw.rollback()
        return rows
    finally:
        raw.close()


def _order(keys: list[np.ndarray], counts: np.ndarray) -> np.ndarray:
    # count descending, then keys ascending: a stable, documented order
    return np.lexsort([*reversed(keys), -counts])


def _live_columns(
    engine: Engine,
    datastack: str,
    table: str,
    timestamp: Any,
    columns: list[str],
    filters: dict[str, Any],
    settings: Settings | None,
) -> dict[str, np.ndarray]:
    from matengine.query.engine import live_query

    body: dict[str, Any] = {"select_columns": columns, **filters}
    result = live_query(engine, datastack, table, timestamp, body, settings=settings)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for batch in result.record_batches():
        for c in columns:
            parts[c].append(batch.column(c).to_numpy(zero_copy_only=False).astype(np.int64))
    return {c: np.concatenate(v) if v else np.zeros(0, np.int64) for c, v in parts.items()}


def root_counts(
    engine: Engine,
    datastack: str,
    table: str,
    *,
    version: int | None = None,
    timestamp: datetime | str | None = None,
    side: str = "pre",
    top: int | None = 1000,
    settings: Settings | None = None,
) -> RootCounts:
    """Synapses per ``side`` root (``pre``: outgoing, ``post``: incoming), the ``top``
    largest (all if None). Root 0 (no segment) is left out."""
    _when(version, timestamp)
    if side not in SIDES:
        raise InvalidInput(f"side is one of {SIDES}", field="side")
    if top is not None and not 0 < top <= MAX_TOP:
        raise InvalidInput(f"top is between 1 and {MAX_TOP}", field="top")
    col = f"{side}_pt_root_id"
    if version is not None:
        vt, _ = meta.queryable_table(engine, datastack, version, table)
        _check_table(engine, datastack, table, vt.schema_type)
        target = quote(version_schema(datastack, version), table)
        limit = "" if top is None else "LIMIT %(top)s"
        rows = _sql(
            engine,
            f"SELECT {quote(col)}, count(*) AS n FROM {target} WHERE {quote(col)} <> 0 "
            f"GROUP BY 1 ORDER BY n DESC, 1 {limit}",
            {"top": top},
        )
        arr = np.asarray(rows, np.int64).reshape(-1, 2)
        return RootCounts(arr[:, 0].copy(), arr[:, 1].copy())
    _check_table(engine, datastack, table)
    grouped = _live_root_counts(engine, datastack, table, timestamp, side, settings)
    if grouped is None:  # roots of unknown time: every row's root through the live engine
        roots = _live_columns(engine, datastack, table, timestamp, [col], {}, settings)[col]
        values, counts = np.unique(roots[roots != 0], return_counts=True)
    else:
        values, counts = grouped
    order = _order([values], counts)[: top if top is not None else None]
    return RootCounts(values[order].astype(np.int64), counts[order].astype(np.int64))


def _live_root_counts(
    engine: Engine, datastack: str, table: str, timestamp: Any, side: str, settings: Settings | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Counts per root at T, grouped in PostgreSQL where the stored root is still right at T
    (not among the roots that changed between roots_last_updated L and T); only the rows
    holding a stale root are looked up at T. None when the stored roots have no known L."""
    from matengine.config import get_settings
    from matengine.query import graphs
    from matengine.query.engine import FUTURE_SLACK, LiveTarget, MissingLookups, _corrector
    from matengine.timeutil import to_utc, utcnow

    settings = settings or get_settings()
    try:
        ts = to_utc(timestamp)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput("expected an ISO timestamp", field="timestamp") from None
    if ts > utcnow() + FUTURE_SLACK:
        raise InvalidInput("the timestamp is in the future: rows and roots there are not known yet")
    tbl = catalog.get_table(engine, datastack, table)
    ds = catalog.get_datastack(engine, datastack)
    graph = graphs.root_graph(ds.segmentation_source, settings.segmentation_token)
    root, svid = quote(f"{side}_pt_root_id"), quote(f"{side}_pt_supervoxel_id")
    alive = "a.created <= %(t)s AND (a.deleted IS NULL OR a.deleted > %(t)s)"
    src = f"FROM {tbl.names.live_q} AS a JOIN {tbl.names.segmentation_q} AS s ON s.id = a.id"
    raw = engine.raw_connection()
    try:
        conn = driver_connection(raw)
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # L and rows together
        corrector = _corrector(conn, LiveTarget(tbl, ts, graph, False))
        if corrector.stale is None:
            return None
        row = conn.execute(f"SELECT count(*) {src} WHERE {alive} AND s.{svid} IS NULL", {"t": ts}).fetchone()
        if row and row[0]:
            raise MissingLookups(
                f"{row[0]} annotation(s) of {table!r} at {ts.isoformat()} have no supervoxel lookup "
                "yet (run ingest)"
            )
        stale = corrector.stale.tolist()
        kept = conn.execute(
            f"SELECT s.{root}, count(*) {src} WHERE {alive} AND s.{root} <> 0 "
            f"AND s.{root} <> ALL(%(stale)s) GROUP BY 1",
            {"t": ts, "stale": stale},
        ).fetchall()
        moved = conn.execute(
            f"SELECT s.{svid} {src} WHERE {alive} AND s.{svid} <> 0 "
            f"AND (s.{root} IS NULL OR s.{root} = ANY(%(stale)s))",
            {"t": ts, "stale": stale},
        ).fetchall()
        raw.rollback()
    finally:
        raw.close()
    a = np.asarray(kept, np.int64).reshape(-1, 2)
    svs = np.asarray([r[0] for r in moved], np.int64).astype(np.uint64)
    looked = (
        np.asarray(graph.get_roots(svs, ts), np.uint64).astype(np.int64) if len(svs) else svs.astype(np.int64)
    )
    v2, c2 = np.unique(looked[looked != 0], return_counts=True)
    values = np.concatenate([a[:, 0], v2])
    counts = np.concatenate([a[:, 1], c2])
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, np.bincount(inverse, weights=counts, minlength=len(uniq)).astype(np.int64)


def partners(
    engine: Engine,
    datastack: str,
    table: str,
    root_ids: Any,
    *,
    version: int | None = None,
    timestamp: datetime | str | None = None,
    direction: str = "out",
    settings: Settings | None = None,
) -> Partners:
    """(pre root, post root, synapses) of the synapses leaving (``out``) or reaching
    (``in``) the given roots, heaviest first."""
    _when(version, timestamp)
    if direction not in ("out", "in"):
        raise InvalidInput("direction is 'out' or 'in'", field="direction")
    roots = _roots(root_ids)
    key = "pre_pt_root_id" if direction == "out" else "post_pt_root_id"
    if version is not None:
        vt, _ = meta.queryable_table(engine, datastack, version, table)
        _check_table(engine, datastack, table, vt.schema_type)
        target = quote(version_schema(datastack, version), table)
        rows = _sql(
            engine,
            f"SELECT pre_pt_root_id, post_pt_root_id, count(*) AS n FROM {target} "
            f"WHERE {quote(key)} = ANY(%(roots)s) GROUP BY 1, 2 ORDER BY n DESC, 1, 2",
            {"roots": roots},
        )
        arr = np.asarray(rows, np.int64).reshape(-1, 3)
        return Partners(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())
    _check_table(engine, datastack, table)
    cols = _live_columns(
        engine,
        datastack,
        table,
        timestamp,
        ["pre_pt_root_id", "post_pt_root_id"],
        {"filter_in_dict": {table: {key: roots}}},
        settings,
    )
    pairs = np.stack([cols["pre_pt_root_id"], cols["post_pt_root_id"]], axis=1)
    if not len(pairs):
        z = np.zeros(0, np.int64)
        return Partners(z, z, z)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    order = _order([uniq[:, 0], uniq[:, 1]], counts)
    return Partners(uniq[order, 0], uniq[order, 1], counts[order].astype(np.int64))
