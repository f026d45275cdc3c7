"""The query engine: a version table, or the live tables at any timestamp, read in batches.

:func:`version_query` and :func:`live_query` check the request and everything that can be
refused (unknown names, bad values, roots invalid at T, missing lookups) *before* any row
is sent, and return a :class:`QueryResult` whose batches are read lazily, one bounded batch
at a time, on a connection held only while they are being read. The REST routes stream
those batches as Arrow IPC; the CLI writes them to files.

Row cap (``settings.query_row_limit``): never silent. Whether a result is cut is known
before the first byte (a probe reads one row past the cap), and announced as a warning.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from sqlalchemy import Engine

from matengine import catalog
from matengine.config import Settings, get_settings
from matengine.db import bookkeeping
from matengine.db.connection import driver_connection
from matengine.errors import InvalidInput, MissingLookups
from matengine.query import graphs, meta
from matengine.query.columns import OutColumn, TableColumns, arrow_schema, table_columns
from matengine.query.live import RootCorrector, post_filter_mask
from matengine.query.reader import BATCH_ROWS, Batch, Fetch, QueryGuard, fixed_width, read_batches
from matengine.query.spec import Filter, Limits, QuerySpec, parse_query
from matengine.query.sqlbuild import (
    Binder,
    Scales,
    Source,
    filter_sql,
    live_source,
    output_fetch,
    root_candidates_sql,
    select_tail,
    time_rule,
    version_source,
)
from matengine.schemas import get_schema
from matengine.segmentation.base import RootGraph
from matengine.timeutil import to_utc, utcnow

FUTURE_SLACK = timedelta(seconds=5)


@dataclass
class LiveTarget:
    table: catalog.AnnotationTable
    timestamp: datetime
    graph: RootGraph
    allow_invalid_root_ids: bool
    # made while planning, so a failing segmentation source is an error status, not a
    # broken stream; remade only if roots_last_updated moved before the rows are read
    corrector: RootCorrector | None = None


@dataclass
class QueryPlan:
    engine: Engine
    table: str
    cols: TableColumns
    spec: QuerySpec
    resolution: tuple[float, float, float]
    scales: Scales
    make_source: Any  # Callable[[Binder], Source]
    where: list[Any]  # Callables[[Source, Binder], str]
    limit: int | None  # user limit, cut to the cap
    live: LiveTarget | None = None
    root_prefilters: list[Filter] = field(default_factory=list)
    post_filters: list[Filter] = field(default_factory=list)
    names: dict[str, dict[str, str]] | None = None  # column_names header of joins
    # bounds the SQL's work (the query timeout) and lets the HTTP layer cancel it
    guard: QueryGuard = field(default_factory=QueryGuard)


@dataclass
class QueryResult:
    """A checked query; iterate :meth:`record_batches` to read it."""

    plan: QueryPlan
    warnings: list[str] = field(default_factory=list)
    _primed: Iterator[Batch] | None = field(default=None, repr=False)
    _ahead: list[Batch] = field(default_factory=list, repr=False)  # read by prime, not yet taken
    _exhausted: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def columns(self) -> list[OutColumn]:
        return self.plan.spec.select

    @property
    def schema(self) -> pa.Schema:
        return arrow_schema(self.columns)

    @property
    def resolution(self) -> tuple[float, float, float]:
        return self.plan.resolution

    @property
    def column_names(self) -> dict[str, dict[str, str]]:
        if self.plan.names is not None:
            return self.plan.names
        return {self.plan.table: {c.name: c.name for c in self.columns}}

    def prime(self) -> None:
        """Run the query up to its first batch now, so that what fails at its start (the
        timeout of a query that finds nothing, a value PostgreSQL refuses) is an error
        answer, not a stream that breaks after its headers were sent.

        A first batch shorter than a full one is usually the whole result: the reader is
        asked for the next one too (no work when the rows have ended), so :attr:`complete`
        can tell a caller to answer in one body."""
        with self._lock:
            if self._primed is not None:
                return
            self._primed = self._batches()
            first = next(self._primed, None)
            if first is not None and len(first) < BATCH_ROWS:
                self._ahead.append(first)
                first = next(self._primed, None)
            if first is None:
                self._exhausted = True
            else:
                self._ahead.append(first)

    @property
    def complete(self) -> bool:
        """Whether :meth:`prime` has read every row already (they are held in memory)."""
        return self._exhausted

    def close(self) -> None:
        """Give back the connection of a primed result that will not be read (waits for a
        prime still running in another thread)."""
        with self._lock:
            primed, self._primed, self._ahead = self._primed, None, []
        if primed is not None:
            primed.close()  # type: ignore[attr-defined]

    def cancel(self) -> None:
        """Cancel the running query (from any thread): its client went away."""
        self.plan.guard.cancel()

    def record_batches(self) -> Iterator[pa.RecordBatch]:
        schema = self.schema
        if self._primed is not None:
            batches, ahead = self._primed, self._ahead
            self._primed, self._ahead = None, []
            for batch in ahead:
                yield to_record_batch(batch, self.columns, schema)
            if self._exhausted:
                batches.close()  # type: ignore[attr-defined]
                return
        else:
            batches = self._batches()
        for batch in batches:
            yield to_record_batch(batch, self.columns, schema)

    def _batches(self) -> Iterator[Batch]:
        """The rows, batch by batch (subclasses reading other sources override this)."""
        return _stream(self.plan, self.columns)

    def to_table(self) -> pa.Table:
        return pa.Table.from_batches(list(self.record_batches()), schema=self.schema)


def to_record_batch(batch: Batch, cols: list[OutColumn], schema: pa.Schema) -> pa.RecordBatch:
    arrays = [pa.array(batch.values[c.name], type=c.arrow_type, mask=batch.nulls.get(c.name)) for c in cols]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# ------------------------------------------------------------------ streaming
def _points_to_correct(plan: QueryPlan, wanted: list[OutColumn]) -> list[str]:
    if plan.live is None:
        return []
    names = {c.name for c in wanted} | {f.column.name for f in plan.post_filters}
    return [pt for pt in plan.cols.bound_points if f"{pt}_root_id" in names]


def _stream(plan: QueryPlan, wanted: list[OutColumn], stop_after: int | None = None) -> Iterator[Batch]:
    """Batches of the ``wanted`` columns; stops after ``stop_after`` rows if given."""
    by_name = plan.cols.by_name()
    points = _points_to_correct(plan, wanted)
    fetch_cols = list(wanted)
    for pt in points:
        for name in (f"{pt}_supervoxel_id", f"{pt}_root_id"):
            if by_name[name] not in fetch_cols:
                fetch_cols.append(by_name[name])
    for f in plan.post_filters:
        if f.column not in fetch_cols:
            fetch_cols.append(f.column)
    in_python = bool(plan.post_filters)
    limit = plan.limit if stop_after is None else stop_after
    raw = plan.engine.raw_connection()
    finished = False
    conn = driver_connection(raw)
    try:
        binder = Binder()
        if plan.live is not None:
            # one snapshot for roots_last_updated and the rows it describes (psycopg sends
            # the level with its BEGIN: no round trip of its own)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        plan.guard.attach(conn)
        source: Source = plan.make_source(binder)
        where = [w(source, binder) for w in plan.where]
        corrector = None
        if plan.live is not None and (points or plan.root_prefilters):
            corrector = _corrector(conn, plan.live)
            for f in plan.root_prefilters:
                values = f.value if f.op == "in" else [f.value]
                cands = corrector.candidates(values, allow_invalid=plan.live.allow_invalid_root_ids)
                if corrector.last_updated is not None:
                    svid = by_name[f.column.name[: -len("root_id")] + "supervoxel_id"]
                    where.append(root_candidates_sql(f.column, svid, source, cands, binder))
        fetches: list[Fetch] = [output_fetch(c, source, plan.scales, binder) for c in fetch_cols]
        if plan.live is None and fixed_width(fetches):
            # a version table read by one COPY needs no transaction: no BEGIN and no ROLLBACK
            # round trips (a server-side cursor, for text columns, needs one)
            conn.autocommit = True
        tail = select_tail(
            source,
            where,
            binder,
            limit=None if in_python else limit,
            offset=0 if in_python else plan.spec.offset,
        )
        skip = plan.spec.offset if in_python else 0
        remaining = limit
        for batch in read_batches(conn, tail, binder.params, fetches, guard=plan.guard):
            if corrector is not None and points:
                corrector.correct(batch, points)
            if in_python:
                mask = np.ones(len(batch), bool)
                for f in plan.post_filters:
                    mask &= post_filter_mask(batch, f.op, f.column.name, f.value)
                batch = batch.take(mask)
                if skip:
                    dropped = min(skip, len(batch))
                    batch, skip = batch.take(slice(dropped, None)), skip - dropped
            if remaining is not None and len(batch) > remaining:
                batch = batch.take(slice(0, remaining))
            if len(batch):
                yield Batch({k: v for k, v in batch.values.items()}, batch.nulls)
            if remaining is not None:
                remaining -= len(batch)
                if remaining <= 0:
                    break
        finished = True
    finally:
        plan.guard.detach()
        try:
            raw.rollback()  # read-only: nothing to keep; also ends a cancelled COPY cleanly
            conn.autocommit = False  # as the pool hands connections out
            conn.isolation_level = None
            raw.close()
        except Exception:
            if finished:
                raise
            raw.invalidate()  # a connection left mid-stream is dropped, never reused


def _corrector(conn: Any, live: LiveTarget) -> RootCorrector:
    row = bookkeeping.root_times(conn, live.table.datastack, live.table.table_name)
    # while an update-roots run is half-done, stored roots are at one of two times: treat
    # them as of unknown time (every root checked against T; exact, just slower)
    last = to_utc(row[0]) if row and row[0] is not None and row[1] is None else None
    if live.corrector is not None and live.corrector.last_updated == last:
        return live.corrector
    return RootCorrector.create(live.graph, live.timestamp, last)


def _count(plan: QueryPlan, n: int | None) -> int:
    """Rows of the result after the offset, counted up to ``n`` (all if None; ids only)."""
    id_col = plan.cols.columns[0]  # the (first) table's id
    return sum(len(b) for b in _stream(plan, [id_col], stop_after=n))


# ------------------------------------------------------------------ planning
def scale_of(
    table_res: tuple[float, float, float], desired: tuple[float, float, float]
) -> tuple[float, float, float] | None:
    """Factors turning positions in ``table_res`` voxels into ``desired`` ones (None: same)."""
    scale = tuple(t / d for t, d in zip(table_res, desired, strict=True))
    return None if all(s == 1.0 for s in scale) else scale  # type: ignore[return-value]


def _scale(
    table_res: tuple[float, float, float], desired: tuple[float, float, float] | None
) -> tuple[tuple[float, float, float], Scales]:
    if desired is None:
        return table_res, {}
    scale = scale_of(table_res, desired)
    return desired, {"a": scale, "s": scale}


def filters_sql(filters: list[Filter]) -> list[Any]:
    return [lambda src, b, f=f: filter_sql(f, src, b) for f in filters]


def cap_of(spec: QuerySpec, settings: Settings) -> tuple[int | None, int | None]:
    """(limit to apply, cap that may cut the result or None)."""
    cap = settings.query_row_limit
    if cap is None:
        return spec.limit, None
    if spec.limit is not None and spec.limit <= cap:
        return spec.limit, None
    return cap, cap


def finish(
    plan: QueryPlan, cap: int | None, warnings: list[str], settings: Settings | None = None
) -> QueryResult:
    plan.guard.timeout = (settings or get_settings()).query_timeout
    if cap is not None and _count(plan, cap + 1) > cap:
        warnings.append(f'201 - "Limited query to {cap} rows')
    return QueryResult(plan, warnings)


def _sample_percent(random_sample: int | None, rows: int) -> float | None:
    if random_sample is None:
        return None
    return min(100.0, 100.0 * random_sample / max(rows, 1))


def version_query(
    engine: Engine,
    datastack: str,
    version: int,
    table: str,
    body: Mapping[str, Any],
    *,
    settings: Settings | None = None,
    random_sample: int | None = None,
    cached: bool = False,
) -> QueryResult:
    """Query table ``table`` of version ``version`` (a frozen, indexed, merged table).
    ``cached``: the version's rows through :mod:`matengine.metadata_cache` (the API)."""
    settings = settings or get_settings()
    vt, notice_text = meta.queryable_table(engine, datastack, version, table, cached=cached)
    cols = table_columns(get_schema(vt.schema_type))
    spec = parse_query(body, table, cols, random_sample=random_sample, limits=Limits.of(settings))
    resolution, scales = _scale(vt.voxel_resolution, spec.desired_resolution)
    limit, cap = cap_of(spec, settings)
    pct = _sample_percent(spec.random_sample, vt.row_count)
    plan = QueryPlan(
        engine,
        table,
        cols,
        spec,
        resolution,
        scales,
        make_source=lambda b: version_source(datastack, version, table, vt.schema_type, pct, b),
        where=filters_sql(spec.filters),
        limit=limit,
    )
    return finish(plan, cap, [notice(table, notice_text)] if notice_text else [], settings)


def restrict_ids(result: QueryResult, lo: int, hi: int) -> QueryResult:
    """``result`` cut to the rows whose ordering id (the id of its first table, what rows are
    ordered by) lies in ``[lo, hi]``: how an export reads a view's rows one chunk at a time.
    A view's result is cut through the query it stands for."""
    inner = getattr(result, "inner", None) or result

    def where(src: Source, b: Binder) -> str:
        return f"{src.first_id} BETWEEN {b.bind(int(lo), 'bigint')} AND {b.bind(int(hi), 'bigint')}"

    inner.plan.where.append(where)
    return result


def notice_of(engine: Engine, datastack: str, table: str) -> str | None:
    from sqlalchemy import select

    from matengine.db import metadata as m

    t = m.annotation_tables
    with engine.connect() as conn:
        text = conn.execute(
            select(t.c.notice_text).where(t.c.datastack == datastack, t.c.table_name == table)
        ).scalar()
    return notice(table, text) if text else None


def notice(table: str, text: str) -> str:
    """A table owner's notice as a Warning header value (caveclient logs it)."""
    return f'299 - "Table Owner Notice on {table}: {text}"'


def live_query(
    engine: Engine,
    datastack: str,
    table: str,
    timestamp: Any,
    body: Mapping[str, Any],
    *,
    settings: Settings | None = None,
    allow_missing_lookups: bool = False,
    allow_invalid_root_ids: bool = False,
    random_sample: int | None = None,
    graph: RootGraph | None = None,
) -> QueryResult:
    """Query the live table at ``timestamp``, exactly by the time rule (docs/design.md §3)."""
    settings = settings or get_settings()
    try:
        ts = to_utc(timestamp)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"expected an ISO timestamp, got {timestamp!r}", field="timestamp") from None
    if ts > utcnow() + FUTURE_SLACK:
        raise InvalidInput(
            f"{ts.isoformat()} is in the future: rows and roots there are not known yet", field="timestamp"
        )
    tbl = catalog.get_table(engine, datastack, table)
    ds = catalog.get_datastack(engine, datastack)
    cols = table_columns(tbl.schema)
    spec = parse_query(body, table, cols, random_sample=random_sample, limits=Limits.of(settings))
    resolution, scales = _scale(tbl.voxel_resolution, spec.desired_resolution)
    limit, cap = cap_of(spec, settings)
    seg_q = tbl.names.segmentation_q if tbl.schema.bound_points else None
    if graph is None and tbl.schema.bound_points:
        graph = graphs.root_graph(ds.segmentation_source, settings.segmentation_token)
    root_filters = [f for f in spec.filters if f.on_root]
    plain = [f for f in spec.filters if not f.on_root]
    pct = _sample_percent(spec.random_sample, _estimate_rows(engine, tbl)) if spec.random_sample else None
    target = LiveTarget(tbl, ts, graph, allow_invalid_root_ids) if graph is not None else None
    plan = QueryPlan(
        engine,
        table,
        cols,
        spec,
        resolution,
        scales,
        make_source=lambda b: live_source(tbl.names.live_q, seg_q, pct, b),
        where=[lambda src, b: time_rule(b, ts), *filters_sql(plain)],
        limit=limit,
        live=target,
        root_prefilters=[f for f in root_filters if f.op in ("in", "equal")],
        post_filters=root_filters,
    )
    plan.guard.timeout = settings.query_timeout
    warnings: list[str] = []
    if target is not None:
        target.corrector = RootCorrector.create(target.graph, ts, tbl.roots_last_updated)
        for f in plan.root_prefilters:  # refuse roots invalid at T before streaming
            RootCorrector(target.graph, ts, None, None).candidates(
                f.value if f.op == "in" else [f.value], allow_invalid=allow_invalid_root_ids
            )
        missing = _missing_lookups(plan, tbl, ts) if not plan.root_prefilters else 0
        if missing and not allow_missing_lookups:
            raise MissingLookups(
                f"{missing} annotation(s) of {table!r} at {ts.isoformat()} have no supervoxel "
                "lookup yet (run ingest); pass allow_missing_lookups=True to get them with "
                "supervoxel and root id 0"
            )
        if missing:
            warnings.append(f'299 - "{missing} annotation(s) lack supervoxel/root lookups; their ids are 0"')
    notice = notice_of(engine, datastack, table)
    if notice:
        warnings.append(notice)
    return finish(plan, cap, warnings, settings)


def _scalar(engine: Engine, sql: str, params: Mapping[str, Any], timeout: float | None = None) -> Any:
    """One value from SQL with psycopg-style placeholders (the form :mod:`sqlbuild` writes),
    cancelled by PostgreSQL after ``timeout`` seconds (the query timeout)."""
    import psycopg

    from matengine.errors import QueryTimeout

    raw = engine.raw_connection()
    try:
        conn = driver_connection(raw)
        seconds = timeout if timeout is not None else get_settings().query_timeout
        if seconds and seconds > 0:
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{int(seconds * 1000)}ms",))
        try:
            row = conn.execute(sql, params or None).fetchone()
        except psycopg.errors.QueryCanceled:
            raise QueryTimeout(
                f"a query step ran longer than {seconds:g} s (MATENGINE_QUERY_TIMEOUT) and was cancelled"
            ) from None
        raw.rollback()
        return row[0] if row else None
    finally:
        raw.close()


def _estimate_rows(engine: Engine, tbl: catalog.AnnotationTable) -> int:
    n = _scalar(
        engine,
        "SELECT reltuples::bigint FROM pg_class WHERE oid = CAST(%(t)s AS regclass)",
        {"t": f"{tbl.datastack}.{tbl.table_name}"},
    )
    return max(int(n or 0), 1)


def _missing_lookups(plan: QueryPlan, tbl: catalog.AnnotationTable, ts: datetime) -> int:
    """Rows of the result (non-root filters only) whose points have no supervoxel yet."""
    from matengine.db.identifiers import quote

    pending = " OR ".join(f"s.{quote(pt + '_supervoxel_id')} IS NULL" for pt in tbl.schema.bound_points)
    binder = Binder()
    # inner join: every live row has a segmentation row from its insert on, and the join
    # lets PostgreSQL use the partial index of rows waiting for ingest
    src = Source(
        f"FROM {tbl.names.live_q} AS a JOIN {tbl.names.segmentation_q} AS s ON s.id = a.id", live=True
    )
    where = [w(src, binder) for w in plan.where] + [pending]
    tail = select_tail(src, where, binder, limit=100_000, order=False)
    return int(
        _scalar(plan.engine, f"SELECT count(*) FROM (SELECT 1 {tail}) q", binder.params, plan.guard.timeout)
    )
