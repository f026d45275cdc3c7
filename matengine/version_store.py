"""The version store: every version of a table in one shared table, each row version once.

Layout (docs/versions.md): per annotation table one store table ``<ds>__store.<table>`` holds
merged rows (live ⋈ segmentation at some T_N) with an int range of version numbers
``[v_from, v_to)``; ``v_to = OPEN`` means "still in the newest state" (the table's *head*).
Version N of the table is the rows whose range holds N, published as the view
``<ds>__mat<N>.<table>`` with the columns a full-copy version table had, so every reader
(queries, joins, counts, exports) reads the same relation as before.

A build of version V writes only what changed since the head version H: it *closes* the
head rows that changed (``v_to = V``: version H and older still see them) and inserts their
new row versions with ``v_from = V`` (no published version sees them). So a build that
dies half-way changes nothing a published version sees; :func:`discard_unpublished` undoes it
before the next build. :func:`publish_table` makes V the head, in the publishing transaction.

:func:`version_relation` is the one name of "table T at version N" for every reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, text, update

from matengine import catalog
from matengine.db import metadata as m
from matengine.db.annotation_tables import point_index
from matengine.db.identifiers import quote, store_schema, validate_name, version_schema
from matengine.schemas import AnnotationSchema, get_schema

OPEN = 2_147_483_647  # v_to of rows still in the head state (int4 max: "no end yet")
RANGE_COLUMNS = ("v_from", "v_to")
FILLFACTOR = 90


def store_q(datastack: str, table: str) -> str:
    return quote(store_schema(datastack), table)


def version_relation(datastack: str, version: int, table: str) -> str:
    """The quoted relation holding table ``table`` at version ``version``: what every reader
    (queries, joins, exports) selects from. A view over the store; same name and columns
    as the full-copy tables had."""
    return quote(version_schema(datastack, version), table)


def data_columns(schema: AnnotationSchema) -> list[str]:
    """The columns a row version stores (besides its range), in view order."""
    return (
        ["id", "created"]
        + [c.name for c in schema.annotation_columns()]
        + [c.name for c in schema.segmentation_columns()]
    )


def _view_select(schema: AnnotationSchema, store: str, version: int, sample: str = "") -> str:
    """The columns of a full-copy version table, from the store rows of ``version``
    (``deleted``, ``superceded_id``, ``valid`` were constants there too)."""
    ann = [quote(c.name) for c in schema.annotation_columns()]
    seg = [quote(c.name) for c in schema.segmentation_columns()]
    cols = [
        "id",
        "created",
        "NULL::timestamptz AS deleted",
        "NULL::bigint AS superceded_id",
        "true AS valid",
        *ann,
        *seg,
    ]
    n = int(version)
    return f"SELECT {', '.join(cols)} FROM {store}{sample} WHERE v_from <= {n} AND v_to > {n}"


def version_sample_source(datastack: str, version: int, table: str, schema_type: str, sample: str) -> str:
    """A FROM item for a sampled query of a version (``TABLESAMPLE`` cannot apply to a view):
    the sample is drawn from the store, then restricted to the version's rows, so the share
    of the version's rows kept is the sample percentage."""
    body = _view_select(get_schema(schema_type), store_q(datastack, table), version, sample)
    return f"({body})"


# ----------------------------------------------------------------------------- bookkeeping
@dataclass(frozen=True)
class StoreState:
    """One table's store: its head version (None before the first publish), the head's T,
    its row count, and whether the store's indexes are built."""

    datastack: str
    table_name: str
    head_version: int | None
    head_time: datetime | None
    head_rows: int
    indexed: bool
    building: int | None = None
    building_closed: int = 0
    building_written: int = 0


def store_state(conn: Connection, datastack: str, table: str) -> StoreState | None:
    s = m.version_stores
    row = conn.execute(select(s).where(s.c.datastack == datastack, s.c.table_name == table)).first()
    if row is None:
        return None
    return StoreState(
        datastack,
        table,
        row.head_version,
        row.head_time,
        int(row.head_rows),
        bool(row.indexed),
        row.building,
        int(row.building_closed),
        int(row.building_written),
    )


def _column_ddl(schema: AnnotationSchema) -> str:
    cols = ["id bigint NOT NULL", "created timestamptz NOT NULL"]
    cols += [f"{quote(c.name)} {c.sql_type}" for c in schema.annotation_columns()]
    cols += [f"{quote(c.name)} {c.sql_type}" for c in schema.segmentation_columns()]
    cols += ["v_from integer NOT NULL", f"v_to integer NOT NULL DEFAULT {OPEN}"]
    return ",\n  ".join(cols)


def create_store(conn: Connection, ds: str, t: str, schema: AnnotationSchema) -> None:
    """A fresh, empty, unindexed store table (a full build fills it, then indexes it)."""
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(store_schema(ds))}"))
    conn.execute(text(f"DROP TABLE IF EXISTS {store_q(ds, t)} CASCADE"))
    # room on every page, so that closing a row (v_to, in no index) is a HOT update: the new
    # tuple stays on its page and no index gets an entry
    conn.execute(
        text(f"CREATE TABLE {store_q(ds, t)} (\n  {_column_ddl(schema)}\n) WITH (fillfactor = {FILLFACTOR})")
    )
    s = m.version_stores
    conn.execute(s.delete().where(s.c.datastack == ds, s.c.table_name == t))
    conn.execute(insert(s).values(datastack=ds, table_name=t, head_rows=0, indexed=False))


def store_indexes(schema: AnnotationSchema, table: str, target: str) -> list[str]:
    """DDL of a store's indexes. None holds ``v_to``: closing a row version only sets
    ``v_to``, so it is a HOT update that touches no index (the reason builds cost the change,
    not the change times the indexes). Roots: ``(root, v_from)``, so a one-root query of
    version N skips in the index the row versions made after N. Points: GiST on
    ``point(x, y)``. ``(id, v_from)`` is unique: one row version per id per build, and the
    ordered scan of streaming. ``v_from``: what a removal or the clean-up of a dead build
    looks for."""
    out = [
        point_index(validate_name(f"ix_{table}_{f.name}_bbox"[:63]), target, f.name)[1] for f in schema.points
    ]
    for pt in schema.bound_points:
        name = quote(validate_name(f"ix_{table}_{pt}_root_id"[:63]))
        out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {target} ({quote(pt + '_root_id')}, v_from)")
    out.append(
        f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(validate_name(f'ix_{table}_id_vfrom'[:63]))} "
        f"ON {target} (id, v_from)"
    )
    name = quote(validate_name(f"ix_{table}_vfrom"[:63]))
    out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {target} (v_from)")
    return out


def full_copy_indexes(schema: AnnotationSchema, table: str, target: str) -> list[str]:
    """DDL of the indexes a full-copy version table has (what an export gets): a bbox GiST
    per point, each root id, a unique id."""
    out = [
        point_index(validate_name(f"ix_{table}_{f.name}_bbox"[:63]), target, f.name)[1] for f in schema.points
    ]
    for pt in schema.bound_points:
        name = quote(validate_name(f"ix_{table}_{pt}_root_id"[:63]))
        out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {target} ({quote(pt + '_root_id')})")
    name = quote(validate_name(f"ix_{table}_id"[:63]))
    out.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {target} (id)")
    return out


def mark_indexed(conn: Connection, datastack: str, table: str) -> None:
    s = m.version_stores
    conn.execute(update(s).where(s.c.datastack == datastack, s.c.table_name == table).values(indexed=True))


def discard_unpublished(conn: Connection, state: StoreState, current: int) -> int:
    """Undo what a build that died before publishing wrote: rows it inserted (``v_from``
    past the head) go, rows it closed (``v_to`` = its number) are open again. Published
    versions never saw either, so this changes none of them. Returns the rows touched.

    Only the build recorded in ``building`` can have written (each build starts by undoing
    the one before); reopening its closed rows scans the store (``v_to`` is in no index, to
    keep closing cheap), which happens only after a failure."""
    assert state.head_version is not None
    store, head = store_q(state.datastack, state.table_name), int(state.head_version)
    n = conn.execute(text(f"DELETE FROM {store} WHERE v_from > :h"), {"h": head}).rowcount
    # a re-plan of the current build itself: none of its chunks ran yet, nothing is closed
    if state.building is not None and state.building != current:
        n += conn.execute(
            text(f"UPDATE {store} SET v_to = {OPEN} WHERE v_to = :b"), {"b": int(state.building)}
        ).rowcount
    return int(n)


def start_build(conn: Connection, datastack: str, table: str, version: int) -> None:
    """Record that ``version`` now writes into the store (its counters start at 0)."""
    s = m.version_stores
    conn.execute(
        update(s)
        .where(s.c.datastack == datastack, s.c.table_name == table)
        .values(building=int(version), building_closed=0, building_written=0)
    )


def count_build(conn: Connection, datastack: str, table: str, closed: int, written: int) -> None:
    """A chunk's share of the build's counts, in the chunk's transaction."""
    if not closed and not written:
        return
    s = m.version_stores
    conn.execute(
        update(s)
        .where(s.c.datastack == datastack, s.c.table_name == table)
        .values(
            building_closed=s.c.building_closed + int(closed),
            building_written=s.c.building_written + int(written),
        )
    )


# ------------------------------------------------------------------------- building rows
def merged_select(table: catalog.AnnotationTable, where: str, seg_where: str = "") -> str:
    """Store columns of live ⋈ segmentation rows in the state at ``:t`` (the time rule)
    that also meet ``where`` (about ``a``, the live row); ``seg_where`` restates it for the
    segmentation side (``s``), so that side is read by index too, not scanned whole."""
    cols = ["a.id", "a.created"] + [f"a.{quote(c.name)}" for c in table.schema.annotation_columns()]
    seg = [f"s.{quote(c.name)}" for c in table.schema.segmentation_columns()]
    also = f" AND {seg_where}" if seg_where else ""
    join = f" LEFT JOIN {table.names.segmentation_q} s ON s.id = a.id{also}" if seg else ""
    return (
        f"SELECT {', '.join(cols + seg)} FROM {table.names.live_q} a{join} "
        f"WHERE a.created <= :t AND (a.deleted IS NULL OR a.deleted > :t) AND ({where})"
    )


def insert_full_range(
    conn: Connection, table: catalog.AnnotationTable, version: int, when: datetime, lo: int, hi: int
) -> int:
    """A full build's chunk: the rows of ids ``[lo, hi]`` at T as row versions from V on."""
    cols = ", ".join(quote(c) for c in data_columns(table.schema))
    # the id range is stated on both sides of the join so both primary-key scans start at lo
    select_sql = merged_select(table, "a.id BETWEEN :lo AND :hi", "s.id BETWEEN :lo AND :hi")
    return conn.execute(
        text(
            f"INSERT INTO {store_q(table.datastack, table.table_name)} ({cols}, v_from) "
            f"SELECT *, :v FROM ({select_sql}) q"
        ),
        {"t": when, "lo": lo, "hi": hi, "v": int(version)},
    ).rowcount


def replace_ids(
    conn: Connection, table: catalog.AnnotationTable, version: int, when: datetime, ids: list[int]
) -> tuple[int, int]:
    """The delta of a build for rows ``ids``: close their head row versions (those that older
    versions hold, ``v_from < V``), insert their rows in the state at T from V on. Rows absent
    at T (deleted, superseded) simply get no new version. Idempotent, and safe to run for an
    id twice in one build (the unique ``(id, v_from)`` keeps one new version). Returns
    (closed, inserted)."""
    if not ids:
        return 0, 0
    store, v = store_q(table.datastack, table.table_name), int(version)
    closed = conn.execute(
        text(f"UPDATE {store} SET v_to = :v WHERE id = ANY(:ids) AND v_to = {OPEN} AND v_from < :v"),
        {"v": v, "ids": ids},
    ).rowcount
    cols = ", ".join(quote(c) for c in data_columns(table.schema))
    inserted = conn.execute(
        text(
            f"INSERT INTO {store} ({cols}, v_from) SELECT *, :v FROM "
            f"({merged_select(table, 'a.id = ANY(:ids)', 's.id = ANY(:ids)')}) q "
            "ON CONFLICT (id, v_from) DO NOTHING"
        ),
        {"t": when, "v": v, "ids": ids},
    ).rowcount
    return int(closed), int(inserted)


def head_ids_holding_roots(
    conn: Connection, table: catalog.AnnotationTable, version: int, roots: list[int]
) -> list[int]:
    """Ids of head rows (held by versions before V) with a root id among ``roots``."""
    store = store_q(table.datastack, table.table_name)
    holds = " UNION ".join(
        f"SELECT id FROM {store} WHERE {quote(pt + '_root_id')} = ANY(:r) AND v_to = {OPEN} AND v_from < :v"
        for pt in table.schema.bound_points
    )
    return [int(i) for i in conn.execute(text(holds), {"r": roots, "v": int(version)}).scalars()]


def changed_ids(conn: Connection, table: catalog.AnnotationTable, t0: datetime, t1: datetime) -> list[int]:
    """Ids of live rows created or deleted between the two times (either order): exactly the
    rows whose presence differs between the states at ``t0`` and ``t1`` (a supersede is a
    delete of the old row and a create of the new one)."""
    lo, hi = min(t0, t1), max(t0, t1)
    live = table.names.live_q
    return [
        int(i)
        for i in conn.execute(
            text(
                f"SELECT id FROM {live} WHERE created > :lo AND created <= :hi "
                f"UNION SELECT id FROM {live} WHERE deleted > :lo AND deleted <= :hi ORDER BY 1"
            ),
            {"lo": lo, "hi": hi},
        ).scalars()
    ]


def diff_into_store(
    conn: Connection,
    table: str,
    datastack: str,
    source: str,
    params: dict[str, Any],
    version: int,
    columns: list[str],
) -> tuple[int, int]:
    """Make the store's head equal ``source`` (a SELECT of ``columns``) as version V by
    comparing every row: close head rows with no equal row in the source, insert source rows
    with no equal head row. Reads the whole table: the migration of full copies uses it, not
    the regular builds (those know what changed)."""
    store, v = store_q(datastack, table), int(version)
    cols = [quote(c) for c in columns]
    # ids join by equality (a hash anti-join); the other columns may be null
    same = " AND ".join(["x.id = s.id"] + [f"x.{c} IS NOT DISTINCT FROM s.{c}" for c in cols if c != '"id"'])
    closed = conn.execute(
        text(
            f"UPDATE {store} s SET v_to = :v WHERE s.v_to = {OPEN} AND s.v_from < :v AND NOT EXISTS "
            f"(SELECT 1 FROM ({source}) x WHERE {same})"
        ),
        {**params, "v": v},
    ).rowcount
    inserted = conn.execute(
        text(
            f"INSERT INTO {store} ({', '.join(cols)}, v_from) SELECT {', '.join(f'x.{c}' for c in cols)}, :v "
            f"FROM ({source}) x WHERE NOT EXISTS (SELECT 1 FROM {store} s WHERE s.id = x.id "
            f"AND s.v_to = {OPEN} AND s.v_from < :v)"
        ),
        {**params, "v": v},
    ).rowcount
    return int(closed), int(inserted)


# ------------------------------------------------------------------------------ publishing
def create_view(conn: Connection, datastack: str, version: int, table: str, schema_type: str) -> None:
    schema_name = version_schema(datastack, version)
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quote(schema_name)}"))
    body = _view_select(get_schema(schema_type), store_q(datastack, table), version)
    conn.execute(text(f"CREATE OR REPLACE VIEW {version_relation(datastack, version, table)} AS {body}"))


def publish_table(
    conn: Connection, table: catalog.AnnotationTable, version: int, when: datetime, rows: int
) -> None:
    """Within the publishing transaction: the view of V, and V as the store's head."""
    create_view(conn, table.datastack, version, table.table_name, table.schema_type)
    s = m.version_stores
    conn.execute(
        update(s)
        .where(s.c.datastack == table.datastack, s.c.table_name == table.table_name)
        .values(head_version=int(version), head_time=when, head_rows=int(rows), building=None)
    )


# ------------------------------------------------------------------------------- retention
def free_version(conn: Connection, datastack: str, version: int, retained: dict[str, list[int]]) -> int:
    """Delete the row versions of ``version`` that no retained version needs.

    ``retained`` maps each table of the version to the other versions still holding it. A
    row version is in versions ``[v_from, v_to)``: it may go iff that range holds ``version``
    and none of the retained ones, i.e. ``p < v_from <= version < v_to <= q`` for the nearest
    retained ``p`` below and ``q`` above. The head version is always retained (the next
    build starts from it), so open rows and rows of a running build are never deleted."""
    freed = 0
    v = int(version)
    for table, others in retained.items():
        state = store_state(conn, datastack, table)
        if state is None or state.head_version is None:
            continue
        keep = set(others) | {int(state.head_version)}
        if v in keep:
            continue
        below = [k for k in keep if k < v]
        above = [k for k in keep if k > v]
        if not above:  # past the head: nothing of this table is only in it
            continue
        p, q = max(below, default=0), min(above)
        freed += conn.execute(
            text(
                f"DELETE FROM {store_q(datastack, table)} WHERE v_from > :p AND v_from <= :v "
                f"AND v_to > :v AND v_to <= :q"
            ),
            {"p": p, "v": v, "q": q},
        ).rowcount
    return int(freed)


def drop_store(conn: Connection, datastack: str) -> None:
    conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(store_schema(datastack))} CASCADE"))


# ------------------------------------------------------------------------------ migration
def _full_copy_tables(conn: Connection, kind: str) -> list[Any]:
    """(datastack, version, time_stamp, table_name, schema_type) of AVAILABLE versions whose
    relation is of ``kind`` (``r`` table, ``v`` view), by datastack, table, version."""
    return list(
        conn.execute(
            text(
                "SELECT v.datastack, v.version, v.time_stamp, t.table_name, a.schema_type "
                "FROM matengine.versions v JOIN matengine.version_tables t "
                "  ON t.datastack = v.datastack AND t.version = v.version "
                "JOIN matengine.annotation_tables a "
                "  ON a.datastack = t.datastack AND a.table_name = t.table_name "
                "JOIN pg_namespace n ON n.nspname = v.datastack || '__mat' || v.version "
                "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.table_name "
                "WHERE v.status = 'AVAILABLE' AND c.relkind = :k "
                "ORDER BY v.datastack, t.table_name, v.version"
            ),
            {"k": kind},
        ).all()
    )


def migrate_full_copies(conn: Connection) -> None:
    """Fold every full-copy version table into the store, oldest version first (the diff
    against the head writes each row version once), and put a view in its place."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in _full_copy_tables(conn, "r"):
        groups.setdefault((r.datastack, r.table_name), []).append(r)
    for (ds, t), rows in groups.items():
        schema = get_schema(rows[0].schema_type)
        cols = data_columns(schema)
        create_store(conn, ds, t, schema)
        for r in rows:
            old = version_relation(ds, r.version, t)
            source = f"SELECT {', '.join(quote(c) for c in cols)} FROM {old}"
            diff_into_store(conn, t, ds, source, {}, r.version, cols)
            conn.execute(text(f"DROP TABLE {old}"))
            create_view(conn, ds, r.version, t, r.schema_type)
        for ddl in store_indexes(schema, t, store_q(ds, t)):
            conn.execute(text(ddl))
        last = rows[-1]
        count = conn.execute(text(f"SELECT count(*) FROM {store_q(ds, t)} WHERE v_to = {OPEN}")).scalar_one()
        s = m.version_stores
        conn.execute(
            update(s)
            .where(s.c.datastack == ds, s.c.table_name == t)
            .values(head_version=last.version, head_time=last.time_stamp, head_rows=count, indexed=True)
        )
        conn.execute(text(f"ANALYZE {store_q(ds, t)}"))


def views_to_full_copies(conn: Connection) -> None:
    """The downgrade: each version view becomes a full-copy table again; stores are dropped."""
    for r in _full_copy_tables(conn, "v"):
        rel = version_relation(r.datastack, r.version, r.table_name)
        tmp = quote(version_schema(r.datastack, r.version), validate_name(f"{r.table_name}__copy"[:63]))
        conn.execute(text(f"CREATE TABLE {tmp} AS SELECT * FROM {rel}"))
        conn.execute(text(f"DROP VIEW {rel}"))
        conn.execute(text(f"ALTER TABLE {tmp} RENAME TO {quote(r.table_name)}"))
        for ddl in full_copy_indexes(get_schema(r.schema_type), r.table_name, rel):
            conn.execute(text(ddl))
    for ds in conn.execute(select(m.datastacks.c.name)).scalars():
        drop_store(conn, ds)


# --------------------------------------------------------------------------------- export
def export_schema(conn: Connection, datastack: str, version: int, target_schema: str) -> list[str]:
    """Copy version N into ``target_schema`` as plain, indexed tables (what a full-copy
    version was), e.g. for ``pg_dump --schema``. Returns the tables written."""
    target_schema = validate_name(target_schema, "schema name")
    tables = (
        conn.execute(
            select(m.version_tables.c.table_name).where(
                m.version_tables.c.datastack == datastack, m.version_tables.c.version == int(version)
            )
        )
        .scalars()
        .all()
    )
    conn.execute(text(f"CREATE SCHEMA {quote(target_schema)}"))
    for t in tables:
        table = catalog.get_table(conn, datastack, t)
        target = quote(target_schema, t)
        conn.execute(
            text(f"CREATE TABLE {target} AS SELECT * FROM {version_relation(datastack, version, t)}")
        )
        for ddl in full_copy_indexes(table.schema, t, target):
            conn.execute(text(ddl))
    return list(tables)
