"""Annotation rows in live tables: insert, update (supersede), delete (soft), get.

Every write holds the datastack's write barrier shared (:mod:`matengine.db.locks`) and stamps
``created``/``deleted`` with one ``clock_timestamp()`` read after taking it; that is what lets a
version at T see exactly the writes stamped at or before T. A batch is validated whole before
anything is written: one bad row refuses the batch, naming the row and field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from matengine.catalog import AnnotationTable, get_table, touch_table
from matengine.db.identifiers import quote
from matengine.db.locks import hold_write_barrier_shared
from matengine.errors import InvalidInput, NotFound
from matengine.schemas import AnnotationSchema, Field, Kind

# a point given as {"position": [...], "supervoxel_id": ..., "root_id": ...}: ids are looked up
# by ingest, never taken from the writer (as in the field's annotation service)
_POINT_KEYS = {"position", "supervoxel_id", "root_id"}
_IGNORED_TOP_KEYS = {"valid", "created", "deleted", "superceded_id", "type"}


# 2**53: floats are exact integers up to here, and rescaling to any resolution cannot overflow
MAX_COORDINATE = float(2**53)
MAX_TEXT = 65_536


def _check_text(value: str, row: int, field: str) -> str:
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"text longer than {MAX_TEXT} characters", row=row, field=field)
    if "\x00" in value:
        raise InvalidInput(
            "text contains a NUL character, which PostgreSQL text cannot hold", row=row, field=field
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("text is not valid Unicode (a lone surrogate)", row=row, field=field) from None
    return value


def _check_number(value: Any, row: int, field: str, *, integer: bool = False) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:  # numpy scalars
            import numpy as np

            if isinstance(value, np.generic) and not isinstance(value, np.bool_):
                value = value.item()
            else:
                raise TypeError
        except TypeError:
            kind = "an integer" if integer else "a number"
            raise InvalidInput(f"expected {kind}, got {value!r}", row=row, field=field) from None
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise InvalidInput(f"expected an integer, got {value!r}", row=row, field=field)
        if not -(2**63) <= value < 2**63:  # also uint64 ids past 2**63, which would wrap
            raise InvalidInput(f"expected a 64-bit integer, got {value!r}", row=row, field=field)
        return int(value)
    if not math.isfinite(value) or abs(value) > MAX_COORDINATE:
        raise InvalidInput(
            f"expected a finite number of magnitude at most {MAX_COORDINATE:g}, got {value!r}",
            row=row,
            field=field,
        )
    return float(value)


def _position(
    value: Any, row: int, field: str, *, required: bool = True, extra_keys: frozenset[str] = frozenset()
) -> tuple[float, float, float] | tuple[None, None, None]:
    if isinstance(value, Mapping):
        unknown = set(value) - _POINT_KEYS - extra_keys
        if unknown:
            raise InvalidInput(f"unknown key(s) {sorted(unknown)} in point", row=row, field=field)
        value = value.get("position")
    if value is None:
        if not required:
            return (None, None, None)
        raise InvalidInput("missing point position", row=row, field=field)
    try:
        coords = list(value)
    except TypeError:
        raise InvalidInput(f"position must be [x, y, z], got {value!r}", row=row, field=field) from None
    if len(coords) != 3:
        raise InvalidInput(f"position must be [x, y, z], got {value!r}", row=row, field=field)
    x, y, z = (_check_number(c, row, field) for c in coords)
    return (x, y, z)


def _scalar(f: Field, value: Any, row: int) -> Any:
    if value is None:
        if f.required:
            raise InvalidInput("missing required value", row=row, field=f.name)
        return None
    checked = _typed(f, value, row)
    if f.choices is not None and checked not in f.choices:
        allowed = ", ".join(repr(c) for c in f.choices)
        raise InvalidInput(f"must be one of {allowed}", row=row, field=f.name)
    return checked


def _typed(f: Field, value: Any, row: int) -> Any:
    if f.kind is Kind.FLOAT:
        return _check_number(value, row, f.name)
    if f.kind in (Kind.INT, Kind.REFERENCE):
        return _check_number(value, row, f.name, integer=True)
    if f.kind is Kind.STRING:
        if not isinstance(value, str):
            raise InvalidInput(f"expected a string, got {value!r}", row=row, field=f.name)
        return _check_text(value, row, f.name)
    if f.kind is Kind.BOOL:
        if not isinstance(value, bool):
            raise InvalidInput(f"expected true/false, got {value!r}", row=row, field=f.name)
        return value
    raise AssertionError(f.kind)


def _nest_top_level(schema: AnnotationSchema, raw: Any, row: int) -> Any:
    """A row of a point class's own table (``derived_spatial_point``) gives the point's values
    at the top level, as the field's: nest them in our one point (``pt``)."""
    if not isinstance(raw, Mapping):
        return raw
    names = schema.top_level_names()
    (point,) = schema.points
    ours = sorted({point.name, *names.values()} & set(raw))
    if ours:
        raise InvalidInput(
            f"a {schema.name} row gives {', '.join(names)} at the top level, not in a point",
            row=row,
            field=ours[0],
        )
    out = {k: v for k, v in raw.items() if k not in names}
    out[point.name] = {k: raw[k] for k in names if k in raw}
    return out


def top_level_row(schema: AnnotationSchema, row: dict[str, Any]) -> dict[str, Any]:
    """A flat row of ours in the names a point class's own table gives at the top level
    (``pt_position`` -> ``position``, …; see :meth:`AnnotationSchema.top_level_names`);
    other schemas' rows unchanged."""
    back = schema.posted_names()
    return {back.get(k, k): v for k, v in row.items()} if back else row


def columns_from_rows(
    schema: AnnotationSchema,
    rows: Sequence[Mapping[str, Any]],
    *,
    id_required: bool = False,
    user_id: int | None = None,
) -> tuple[list[int | None], dict[str, list[Any]]]:
    """Validate rows (nested ``{"pt": {"position": …}}`` or flat ``pt_position``) into columns.

    Values nested in a point besides its position (``dependent_chunk`` of a derived point) go
    to their flat field. Fields the server writes (the field's ``AutoUserIdField``) get
    ``user_id``, whatever the row says. A point class's own table (``derived_spatial_point``)
    takes the point's values at the top level only (``{"position": …, "dependent_chunk": …}``),
    and its errors name them so. Returns the given ids (None where absent) and one list per
    stored column.
    """
    if not schema.is_point_class:
        return _columns_from_rows(schema, rows, id_required=id_required, user_id=user_id)
    nested = [_nest_top_level(schema, raw, i) for i, raw in enumerate(rows)]
    try:
        return _columns_from_rows(schema, nested, id_required=id_required, user_id=user_id)
    except InvalidInput as err:
        (point,) = schema.points
        back = {**schema.posted_names(), point.name: "position"}
        if err.field not in back:
            raise
        raise InvalidInput(err.detail, row=err.row, field=back[err.field]) from None


def _columns_from_rows(
    schema: AnnotationSchema,
    rows: Sequence[Mapping[str, Any]],
    *,
    id_required: bool,
    user_id: int | None,
) -> tuple[list[int | None], dict[str, list[Any]]]:
    ids: list[int | None] = []
    cols: dict[str, list[Any]] = {c.name: [] for c in schema.annotation_columns()}
    known = {f.name for f in schema.fields}
    flat_points = {f"{f.name}_position": f.name for f in schema.points}
    for i, raw in enumerate(rows):
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"expected an object, got {type(raw).__name__}", row=i)
        row = dict(raw)
        for flat, name in flat_points.items():
            if flat in row:
                row[name] = {"position": row.pop(flat)}
        for pt in schema.bound_points:  # flat segmentation ids are ignored as in nested points
            row.pop(f"{pt}_supervoxel_id", None)
            row.pop(f"{pt}_root_id", None)
        for f in schema.fields:
            nested = row.get(f.parent) if f.parent is not None else None
            if isinstance(nested, Mapping) and f.key in nested and f.name not in row:
                row[f.name] = nested[f.key]
            if f.auto_user:
                row[f.name] = user_id
        unknown = set(row) - known - _IGNORED_TOP_KEYS - {"id"}
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidInput(f"unknown field for schema {schema.name!r}", row=i, field=name)
        given = row.get("id")
        if given is None and id_required:
            raise InvalidInput("missing id", row=i, field="id")
        if given is not None:
            given = _check_number(given, i, "id", integer=True)
            if given <= 0:
                raise InvalidInput(f"id must be positive, got {given}", row=i, field="id")
        ids.append(given)
        for f in schema.fields:
            if f.is_point:
                extra = frozenset(e.key for e in schema.point_extras(f.name) if e.key)
                x, y, z = _position(row.get(f.name), i, f.name, required=f.required, extra_keys=extra)
                cols[f"{f.name}_position_x"].append(x)
                cols[f"{f.name}_position_y"].append(y)
                cols[f"{f.name}_position_z"].append(z)
            elif f.auto_user:
                cols[f.name].append(user_id)
            else:
                cols[f.name].append(_scalar(f, row.get(f.name), i))
    return ids, cols


_ARRAY_TYPES = {
    "double precision": "double precision[]",
    "bigint": "bigint[]",
    "text": "text[]",
    "boolean": "boolean[]",
}


def _write_rows(
    conn: Connection,
    table: AnnotationTable,
    ids: list[int],
    cols: dict[str, list[Any]],
    stamp: datetime,
) -> None:
    schema = table.schema
    names = table.names
    params: dict[str, Any] = {"ids": ids, "stamp": stamp}
    selects, targets = [], []
    for j, c in enumerate(schema.annotation_columns()):
        params[f"c{j}"] = cols[c.name]
        selects.append(f"CAST(:c{j} AS {_ARRAY_TYPES[c.sql_type]})")
        targets.append(quote(c.name))
    aliases = [f"c{j}" for j in range(len(targets))]
    conn.execute(
        text(
            f"INSERT INTO {names.live_q} (id, created, valid, {', '.join(targets)}) "
            f"SELECT u.id, :stamp, true, {', '.join('u.' + a for a in aliases)} "
            f"FROM unnest(CAST(:ids AS bigint[]), {', '.join(selects)}) "
            f"AS u(id, {', '.join(aliases)})"
        ),
        params,
    )
    if schema.bound_points:
        # an empty segmentation row marks the annotation as waiting for ingest
        conn.execute(
            text(f"INSERT INTO {names.segmentation_q} (id) SELECT unnest(CAST(:ids AS bigint[]))"),
            {"ids": ids},
        )


def _check_references(conn: Connection, table: AnnotationTable, cols: dict[str, list[Any]]) -> None:
    for f in table.schema.fields:
        if f.kind is not Kind.REFERENCE or not table.reference_table:
            continue
        ref = get_table(conn, table.datastack, table.reference_table)
        wanted = cols[f.name]
        found = set(
            conn.execute(
                text(f"SELECT id FROM {ref.names.live_q} WHERE id = ANY(:ids)"),
                {"ids": list({v for v in wanted if v is not None})},
            ).scalars()
        )
        for i, v in enumerate(wanted):
            if v is not None and v not in found:
                raise InvalidInput(f"no row {v} in reference table {ref.table_name!r}", row=i, field=f.name)


def _assign_ids(conn: Connection, table: AnnotationTable, given: list[int | None]) -> list[int]:
    names = table.names
    explicit = [g for g in given if g is not None]
    if len(set(explicit)) != len(explicit):
        seen: set[int] = set()
        for i, g in enumerate(given):
            if g is not None and g in seen:
                raise InvalidInput(f"duplicate id {g} in batch", row=i, field="id")
            if g is not None:
                seen.add(g)
    if explicit:
        taken = set(
            conn.execute(
                text(f"SELECT id FROM {names.live_q} WHERE id = ANY(:ids)"), {"ids": explicit}
            ).scalars()
        )
        for i, g in enumerate(given):
            if g in taken:
                raise InvalidInput(f"id {g} already exists in the table", row=i, field="id")
    missing = sum(1 for g in given if g is None)
    fresh = iter(
        conn.execute(
            text("SELECT nextval(CAST(:seq AS regclass)) FROM generate_series(1, :n)"),
            {"seq": names.sequence, "n": missing},
        ).scalars()
    )
    ids = [g if g is not None else next(fresh) for g in given]
    if explicit:
        # keep the sequence ahead of ids chosen by the caller
        conn.execute(
            text(
                f"SELECT setval(CAST(:seq AS regclass), GREATEST((SELECT max(id) FROM {names.live_q}), :top))"
            ),
            {"seq": names.sequence, "top": max(ids)},
        )
    return ids


def _begin_write(conn: Connection, table: AnnotationTable) -> datetime:
    hold_write_barrier_shared(conn, table.datastack)
    return conn.execute(text("SELECT clock_timestamp()")).scalar_one()


def insert_annotations(
    engine: Engine,
    datastack: str,
    table_name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    user_id: int | None = None,
) -> list[int]:
    """Insert rows; returns their ids (given ones kept, others from the table's sequence).
    ``user_id`` (the caller's) fills the schema's server-written user fields."""
    table = get_table(engine, datastack, table_name)
    given, cols = columns_from_rows(table.schema, rows, user_id=user_id)
    if not given:
        return []
    with engine.begin() as conn:
        _check_references(conn, table, cols)
        stamp = _begin_write(conn, table)
        ids = _assign_ids(conn, table, given)
        _write_rows(conn, table, ids, cols, stamp)
        touch_table(conn, table)
    return ids


def update_annotations(
    engine: Engine,
    datastack: str,
    table_name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    user_id: int | None = None,
) -> dict[int, int]:
    """Supersede rows: each row names the ``id`` it replaces; returns ``{old_id: new_id}``."""
    table = get_table(engine, datastack, table_name)
    given, cols = columns_from_rows(table.schema, rows, id_required=True, user_id=user_id)
    old_ids = [int(i) for i in given if i is not None]  # id_required: every row has one
    if not old_ids:
        return {}
    names = table.names
    with engine.begin() as conn:
        _check_references(conn, table, cols)
        stamp = _begin_write(conn, table)
        live = {
            r.id: r.deleted
            for r in conn.execute(
                text(f"SELECT id, deleted FROM {names.live_q} WHERE id = ANY(:ids) FOR UPDATE"),
                {"ids": old_ids},
            )
        }
        for i, old in enumerate(old_ids):
            if old not in live:
                raise InvalidInput(f"no annotation with id {old}", row=i, field="id")
            if live[old] is not None:
                raise InvalidInput(f"annotation {old} was already deleted or superseded", row=i, field="id")
        if len(set(old_ids)) != len(old_ids):
            raise InvalidInput("the same id is updated twice in one batch", field="id")
        new_ids = _assign_ids(conn, table, [None for _ in old_ids])
        _write_rows(conn, table, new_ids, cols, stamp)
        conn.execute(
            text(
                f"UPDATE {names.live_q} AS t SET deleted = :stamp, valid = false, "
                "superceded_id = u.new FROM unnest(CAST(:old AS bigint[]), "
                "CAST(:new AS bigint[])) AS u(old, new) WHERE t.id = u.old"
            ),
            {"stamp": stamp, "old": old_ids, "new": new_ids},
        )
        touch_table(conn, table)
    return dict(zip(old_ids, new_ids, strict=True))


def delete_annotations(engine: Engine, datastack: str, table_name: str, ids: Sequence[int]) -> list[int]:
    """Soft-delete rows (``deleted`` set, ``valid`` false); refuses ids not live."""
    table = get_table(engine, datastack, table_name)
    wanted = [_check_number(v, i, "id", integer=True) for i, v in enumerate(ids)]
    names = table.names
    with engine.begin() as conn:
        stamp = _begin_write(conn, table)
        done = set(
            conn.execute(
                text(
                    f"UPDATE {names.live_q} SET deleted = :stamp, valid = false "
                    "WHERE id = ANY(:ids) AND deleted IS NULL RETURNING id"
                ),
                {"stamp": stamp, "ids": wanted},
            ).scalars()
        )
        missing = [v for v in wanted if v not in done]
        if missing:
            raise NotFound(f"no live annotation with id(s) {missing[:20]} in {table_name!r}")
        touch_table(conn, table)
    return wanted


def get_annotations(
    engine: Engine, datastack: str, table_name: str, ids: Sequence[int]
) -> list[dict[str, Any]]:
    """Rows by id (deleted ones included), flat names, positions as ``[x, y, z]``; a point
    class's own table's in the names its rows are posted with (``position``, …)."""
    table = get_table(engine, datastack, table_name)
    with engine.connect() as conn:
        wanted = [_check_number(v, i, "id", integer=True) for i, v in enumerate(ids)]
        rows = fetch_rows(conn, table, "a.id = ANY(:ids)", {"ids": wanted})
    return [top_level_row(table.schema, r) for r in rows]


def fetch_rows(
    conn: Connection, table: AnnotationTable, where: str, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Live rows joined to their segmentation, for small results (get, tests)."""
    names = table.names
    schema = table.schema
    seg_cols = [c.name for c in schema.segmentation_columns()]
    join = f"LEFT JOIN {names.segmentation_q} s ON s.id = a.id" if seg_cols else ""
    select_seg = "".join(f", s.{quote(c)}" for c in seg_cols)
    result = conn.execute(
        text(f"SELECT a.*{select_seg} FROM {names.live_q} a {join} WHERE {where} ORDER BY a.id"),
        params,
    )
    out = []
    for r in result.mappings():
        row = dict(r)
        for f in schema.points:
            row[f"{f.name}_position"] = [row.pop(f"{f.name}_position_{a}") for a in "xyz"]
        out.append(row)
    return out
