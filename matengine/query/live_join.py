"""Live joins: two live tables at any timestamp T, joined (``live_live_query`` with
``join_tables``, ``merge_reference``, and the ``tables`` interface's ``live_query`` of a
reference table).

``join_tables = [[t1, c1, t2, c2]]`` means ``t1.c1 = t2.c2`` (inner join, ordered by the
query table's id). Each side is in the state at T by its *own* time rule (a reference row
by its created/deleted, its target row by the target's), and each side's root ids are
corrected to T with its own ``roots_last_updated`` (:class:`RootCorrector`), so the answer
equals joining the two single-table live queries at T. Root-id filters are prefiltered in
SQL by candidates and tested exactly after correction, as in single-table live queries.

Columns carry each table's suffix (``suffixes`` ``{table: suffix}`` as caveclient sends
it, or ``suffix_map`` / a list; default ``""`` and ``"_<t2>"``). One join (two tables) per
query.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine

from matengine import catalog
from matengine.config import Settings, get_settings
from matengine.db.connection import driver_connection
from matengine.db.identifiers import quote, validate_name
from matengine.errors import InvalidInput
from matengine.query import graphs
from matengine.query.columns import OutColumn, TableColumns, duplicate_names, table_columns
from matengine.query.engine import (
    FUTURE_SLACK,
    LiveTarget,
    MissingLookups,
    QueryPlan,
    QueryResult,
    _corrector,
    _scalar,
    cap_of,
    filters_sql,
    notice_of,
    scale_of,
)
from matengine.query.join import _aliased, _suffixes
from matengine.query.live import RootCorrector, post_filter_mask
from matengine.query.reader import Batch, Fetch, read_batches
from matengine.query.spec import Filter, QuerySpec, parse_filters, parse_query, parse_select
from matengine.query.sqlbuild import Binder, Source, output_fetch, root_candidates_sql, select_tail
from matengine.segmentation.base import RootGraph
from matengine.timeutil import to_utc, utcnow


@dataclass(frozen=True)
class JoinSource(Source):
    """``j0``/``j1``: the two live tables, ``j0s``/``j1s``: their segmentation tables."""

    def ref(self, col: OutColumn) -> str:
        if col.db_column == "valid" and not col.source.endswith("s"):
            return "true"  # in the state at T means valid at T (see Source.ref)
        return f"{col.source}.{quote(col.db_column)}"


@dataclass
class Side:
    """One table of the join: its live table, columns (wire names suffixed) and roots."""

    table: catalog.AnnotationTable
    alias: str
    columns: dict[str, OutColumn]  # original wire name -> aliased column
    points: tuple[str, ...]  # bound points
    target: LiveTarget | None = None

    def point_columns(self, pt: str) -> tuple[OutColumn, OutColumn]:
        return self.columns[f"{pt}_supervoxel_id"], self.columns[f"{pt}_root_id"]


@dataclass
class LiveJoinResult(QueryResult):
    sides: list[Side] = field(default_factory=list)
    root_filters: list[tuple[int, str, Filter]] = field(default_factory=list)  # side, point, filter

    def _batches(self) -> Iterator[Batch]:
        return _stream(self, self.columns)

    def count(self, stop_after: int | None = None) -> int:
        first_id = self.sides[0].columns["id"]
        return sum(len(b) for b in _stream(self, [first_id], stop_after=stop_after, paged=False))


def _join_pairs(body: Mapping[str, Any], table: str, reference_of: str | None) -> list[tuple[str, str]]:
    joins = body.get("join_tables")
    if not joins and reference_of:  # merge_reference: the reference table with its target
        return [(table, "target_id"), (reference_of, "id")]
    if not isinstance(joins, list) or len(joins) != 1:
        raise InvalidInput("one join is supported: [[table1, column1, table2, column2]]", field="join_tables")
    j = joins[0]
    if not isinstance(j, list) or len(j) != 4 or not all(isinstance(v, str) for v in j):
        raise InvalidInput("a join is [table1, column1, table2, column2]", field="join_tables")
    pairs = [(j[0], j[1]), (j[2], j[3])]
    if pairs[1][0] == table:
        pairs.reverse()
    if pairs[0][0] != table:
        raise InvalidInput("the join must include the queried table", field="join_tables")
    if pairs[0][0] == pairs[1][0]:
        raise InvalidInput("joining a table with itself is not supported", field="join_tables")
    for t, c in pairs:
        validate_name(t, "table name")
        validate_name(c, "join column")
    return pairs


def live_join_query(
    engine: Engine,
    datastack: str,
    table: str,
    timestamp: Any,
    body: Mapping[str, Any],
    *,
    merge_reference: bool = False,
    settings: Settings | None = None,
    allow_missing_lookups: bool = False,
    allow_invalid_root_ids: bool = False,
    graph: RootGraph | None = None,
) -> LiveJoinResult:
    settings = settings or get_settings()
    try:
        ts = to_utc(timestamp)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput("expected an ISO timestamp", field="timestamp") from None
    if ts > utcnow() + FUTURE_SLACK:
        raise InvalidInput("the timestamp is in the future: rows and roots there are not known yet")
    first = catalog.get_table(engine, datastack, table)
    pairs = _join_pairs(body, table, first.reference_table if merge_reference else None)
    names = [t for t, _ in pairs]
    tables = [first, catalog.get_table(engine, datastack, names[1])]
    cols = [table_columns(t.schema) for t in tables]
    for (t, c), tc in zip(pairs, cols, strict=True):
        if c not in tc.by_name():
            raise InvalidInput(f"table {t!r} has no column {c!r}", field="join_tables")
    given = body.get("suffixes")
    if isinstance(given, Mapping):
        suffixes = _suffixes({"suffix_map": given}, names)
    elif given is None and merge_reference and not body.get("join_tables"):
        suffixes = ["", "_ref"]  # what caveclient's merge_reference asks of version queries
    else:
        suffixes = _suffixes(body, names)
    base = parse_query(
        {k: v for k, v in body.items() if k not in ("select_columns",) and not k.startswith("filter_")},
        names[0],
        cols[0],
    )
    ds = catalog.get_datastack(engine, datastack)
    if graph is None and any(t.schema.bound_points for t in tables):
        graph = graphs.root_graph(ds.segmentation_source, settings.segmentation_token)
    sides: list[Side] = []
    selected: list[OutColumn] = []
    all_cols: list[OutColumn] = []
    plain: list[Filter] = []
    root_filters: list[tuple[int, str, Filter]] = []
    mapping: dict[str, dict[str, str]] = {}
    for i, (tbl, tc) in enumerate(zip(tables, cols, strict=True)):
        alias = f"j{i}"
        rename = {
            c.name: _aliased(c, alias + ("s" if c.source == "s" else ""), suffixes[i]) for c in tc.columns
        }
        side = Side(tbl, alias, rename, tuple(tbl.schema.bound_points))
        if graph is not None and side.points:
            side.target = LiveTarget(tbl, ts, graph, allow_invalid_root_ids)
        sides.append(side)
        all_cols += rename.values()
        mapping[names[i]] = {c: r.name for c, r in rename.items()}
        chosen = parse_select(body.get("select_columns"), names[i], tc, tables=names)
        selected += [rename[c.name] for c in chosen]
        for f in parse_filters(body, names[i], tc, tables=names):
            moved = replace(f, columns=tuple(rename[c.name] for c in f.columns))
            if f.on_root:
                root_filters.append((i, f.column.name[: -len("_root_id")], moved))
            else:
                plain.append(moved)
    wire = [c.name for c in all_cols]
    dupes = duplicate_names(wire)
    if dupes:
        raise InvalidInput(f"columns {dupes[:5]} appear in both tables: give suffixes", field="suffixes")
    resolution = base.desired_resolution or tables[0].voxel_resolution
    scales = {f"j{i}": scale_of(t.voxel_resolution, resolution) for i, t in enumerate(tables)}
    spec = QuerySpec(
        select=selected,
        filters=plain,
        offset=base.offset,
        limit=base.limit,
        desired_resolution=base.desired_resolution,
    )
    limit, cap = cap_of(spec, settings)
    (t1, c1), (t2, c2) = pairs
    segs = [t.names.segmentation_q if t.schema.bound_points else None for t in tables]

    def source(binder: Binder) -> Source:
        sql = f"FROM {tables[0].names.live_q} AS j0"
        if segs[0]:
            sql += f" LEFT JOIN {segs[0]} AS j0s ON j0s.id = j0.id"
        sql += f" JOIN {tables[1].names.live_q} AS j1 ON j0.{quote(c1)} = j1.{quote(c2)}"
        if segs[1]:
            sql += f" LEFT JOIN {segs[1]} AS j1s ON j1s.id = j1.id"
        return JoinSource(sql, live=True, order_by="j0.id", first_id="j0.id")

    def time_rules(src: Source, b: Binder) -> str:
        t = b.bind(ts, "timestamptz")
        return " AND ".join(
            f"{a}.created <= {t} AND ({a}.deleted IS NULL OR {a}.deleted > {t})" for a in ("j0", "j1")
        )

    plan = QueryPlan(
        engine,
        names[0],
        TableColumns(tuple(all_cols), ()),
        spec,
        tuple(resolution),  # type: ignore[arg-type]
        scales,
        make_source=source,
        where=[time_rules, *filters_sql(plain)],
        limit=limit,
        names=mapping,
    )
    plan.guard.timeout = settings.query_timeout
    result = LiveJoinResult(plan, [], sides=sides, root_filters=root_filters)
    for _i, _pt, f in root_filters:  # refuse roots invalid at T before streaming
        if graph is not None and f.op in ("in", "equal"):
            values = f.value if f.op == "in" else [f.value]
            RootCorrector(graph, ts, None, None).candidates(values, allow_invalid=allow_invalid_root_ids)
    for side in sides:
        if side.target is not None:
            side.target.corrector = RootCorrector.create(graph, ts, side.table.roots_last_updated)  # type: ignore[arg-type]
            missing = _missing(engine, side, ts, settings.query_timeout)
            if missing and not allow_missing_lookups:
                raise MissingLookups(
                    f"{missing} annotation(s) of {side.table.table_name!r} at {ts.isoformat()} have no "
                    "supervoxel lookup yet (run ingest); pass allow_missing_lookups=True to get them "
                    "with supervoxel and root id 0"
                )
            if missing:
                result.warnings.append(
                    f'299 - "{missing} annotation(s) lack supervoxel/root lookups; their ids are 0"'
                )
    for t in names:
        notice = notice_of(engine, datastack, t)
        if notice:
            result.warnings.append(notice)
    if cap is not None and result.count(cap + 1) > cap:
        result.warnings.append(f'201 - "Limited query to {cap} rows')
    return result


def _missing(engine: Engine, side: Side, ts: datetime, timeout: float | None) -> int:
    """Rows of the side's table in the state at T whose points have no supervoxel yet."""
    tbl = side.table
    pending = " OR ".join(f"s.{quote(pt + '_supervoxel_id')} IS NULL" for pt in side.points)
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM {tbl.names.live_q} AS a JOIN {tbl.names.segmentation_q} AS s "
        f"ON s.id = a.id WHERE a.created <= %(t)s AND (a.deleted IS NULL OR a.deleted > %(t)s) "
        f"AND ({pending}) LIMIT 100000) q"
    )
    return int(_scalar(engine, sql, {"t": ts}, timeout) or 0)


def _stream(
    result: LiveJoinResult, wanted: list[OutColumn], stop_after: int | None = None, paged: bool = True
) -> Iterator[Batch]:
    plan, sides = result.plan, result.sides
    wanted_names = {c.name for c in wanted} | {f.column.name for _, _, f in result.root_filters}
    fix: list[tuple[Side, list[str]]] = []
    fetch_cols = list(wanted)
    for side in sides:
        pts = [pt for pt in side.points if side.columns[f"{pt}_root_id"].name in wanted_names]
        fix.append((side, pts))
        for pt in pts:
            for c in side.point_columns(pt):
                if c not in fetch_cols:
                    fetch_cols.append(c)
    for _, _, f in result.root_filters:
        if f.column not in fetch_cols:
            fetch_cols.append(f.column)
    in_python = bool(result.root_filters)
    limit = (plan.limit if paged else None) if stop_after is None else stop_after
    offset = plan.spec.offset if paged else 0
    raw = plan.engine.raw_connection()
    finished = False
    try:
        conn = driver_connection(raw)
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SET LOCAL client_connection_check_interval = 2000")  # as engine._stream
        plan.guard.attach(conn)
        binder = Binder()
        source = plan.make_source(binder)
        where = [w(source, binder) for w in plan.where]
        correctors: list[RootCorrector | None] = []
        for side, _pts in fix:
            corrector = _corrector(conn, side.target) if side.target is not None else None
            correctors.append(corrector)
        for i, pt, f in result.root_filters:
            corrector = correctors[i]
            if corrector is not None and f.op in ("in", "equal") and corrector.last_updated is not None:
                values = f.value if f.op == "in" else [f.value]
                cands = corrector.candidates(values, allow_invalid=sides[i].target.allow_invalid_root_ids)  # type: ignore[union-attr]
                svid, root = sides[i].point_columns(pt)
                where.append(root_candidates_sql(root, svid, source, cands, binder))
        fetches: list[Fetch] = [output_fetch(c, source, plan.scales, binder) for c in fetch_cols]
        tail = select_tail(
            source, where, binder, limit=None if in_python else limit, offset=0 if in_python else offset
        )
        skip = offset if in_python else 0
        remaining = limit
        for batch in read_batches(conn, tail, binder.params, fetches, guard=plan.guard):
            for (side, pts), corrector in zip(fix, correctors, strict=True):
                if corrector is None or not pts:
                    continue
                view = {}  # the side's point columns under their own names; arrays shared
                for pt in pts:
                    svid, root = side.point_columns(pt)
                    view[f"{pt}_supervoxel_id"] = batch.values[svid.name]
                    view[f"{pt}_root_id"] = batch.values[root.name]
                corrector.correct(Batch(view), pts)
            if in_python:
                mask = np.ones(len(batch), bool)
                for _, _, f in result.root_filters:
                    mask &= post_filter_mask(batch, f.op, f.column.name, f.value)
                batch = batch.take(mask)
                if skip:
                    dropped = min(skip, len(batch))
                    batch, skip = batch.take(slice(dropped, None)), skip - dropped
            if remaining is not None and len(batch) > remaining:
                batch = batch.take(slice(0, remaining))
            if len(batch):
                yield batch
            if remaining is not None:
                remaining -= len(batch)
                if remaining <= 0:
                    break
        finished = True
    finally:
        plan.guard.detach()
        try:
            raw.rollback()
            raw.close()
        except Exception:
            if finished:
                raise
            raw.invalidate()
