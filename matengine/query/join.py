"""Join queries of two tables of one version (what caveclient's ``join_query`` and
``query_table`` of a reference table send): ``tables = [[t1, col1], [t2, col2]]`` means
``t1.col1 = t2.col2``, an inner join, ordered by ``t1.id`` (then ``t2.id``).

Each table's columns come back with its suffix (``suffix_map`` ``{table: suffix}`` or
``suffixes`` ``[s1, s2]``; default ``""`` and ``"_<t2>"``), placed before the axis of a split
position (``pt_position_ref_x``) so caveclient still glues x/y/z into one column. Filters and
``select_column_map`` use each table's own, unsuffixed, column names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from sqlalchemy import Engine

from matengine.config import Settings, get_settings
from matengine.db.identifiers import quote, validate_name
from matengine.errors import InvalidInput
from matengine.query import meta
from matengine.query.columns import OutColumn, TableColumns, duplicate_names, table_columns
from matengine.query.engine import (
    QueryPlan,
    QueryResult,
    cap_of,
    filters_sql,
    finish,
    scale_of,
)
from matengine.query.spec import (
    Limits,
    QuerySpec,
    parse_filters,
    parse_query,
    parse_select,
    refuse_unsupported,
)
from matengine.query.sqlbuild import Binder, Source
from matengine.schemas import get_schema
from matengine.version_store import version_relation


def _tables(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    raw = body.get("tables")
    try:
        pairs = [(str(t), str(c)) for t, c in raw]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        pairs = []
    if len(pairs) != 2:
        raise InvalidInput("expected [[table1, column1], [table2, column2]]", field="tables")
    if pairs[0][0] == pairs[1][0]:
        raise InvalidInput("joining a table with itself is not supported", field="tables")
    for t, c in pairs:
        validate_name(t, "table name")
        validate_name(c, "join column")
    return pairs


def _suffixes(body: Mapping[str, Any], names: list[str]) -> list[str]:
    given = body.get("suffix_map")
    if isinstance(given, Mapping):
        out = [str(given.get(n, "")) for n in names]
    elif isinstance(body.get("suffixes"), list) and len(body["suffixes"]) == len(names):
        out = [str(s) for s in body["suffixes"]]
    else:
        out = ["", f"_{names[1]}"]
    for s in out:
        if s and not validate_name("x" + s.lstrip("_"), "suffix"):
            raise InvalidInput(f"bad suffix {s!r}", field="suffix_map")
    return out


def _aliased(col: OutColumn, alias: str, suffix: str) -> OutColumn:
    tail = col.name[len(col.logical) :]  # "_x" of a split position, else ""
    return replace(col, name=col.logical + suffix + tail, logical=col.logical + suffix, source=alias)


def join_query(
    engine: Engine, datastack: str, version: int, body: Mapping[str, Any], *, settings: Settings | None = None
) -> QueryResult:
    settings = settings or get_settings()
    if not isinstance(body, Mapping):
        raise InvalidInput("the request body must be a JSON object")
    meta.get_version(engine, datastack, version)
    pairs = _tables(body)
    names = [t for t, _ in pairs]
    suffixes = _suffixes(body, names)
    vts = [meta.version_table(engine, datastack, version, t) for t in names]
    cols = [table_columns(get_schema(vt.schema_type)) for vt in vts]
    for (t, c), tc in zip(pairs, cols, strict=True):
        if c not in tc.by_name():
            raise InvalidInput(f"table {t!r} has no column {c!r}", field="tables")
    (t1, c1), (t2, c2) = pairs
    k1, k2 = cols[0].by_name()[c1].kind, cols[1].by_name()[c2].kind
    if k1 != k2:  # PostgreSQL would refuse the = mid-stream
        raise InvalidInput(
            f"cannot join {t1}.{c1} ({k1}) to {t2}.{c2} ({k2}): the columns have different types",
            field="tables",
        )
    limits = Limits.of(settings)
    base = parse_query(
        {
            k: v
            for k, v in body.items()
            if k not in ("select_columns", "select_column_map") and not k.startswith("filter_")
        },
        names[0],
        cols[0],
        limits=limits,
    )
    refuse_unsupported(body)
    select_key = "select_column_map" if "select_column_map" in body else "select_columns"
    selected: list[OutColumn] = []
    all_cols: list[OutColumn] = []
    filters = []
    mapping: dict[str, dict[str, str]] = {}
    for i, (t, tc) in enumerate(zip(names, cols, strict=True)):
        alias, sfx = f"j{i}", suffixes[i]
        rename = {c.name: _aliased(c, alias, sfx) for c in tc.columns}
        all_cols += rename.values()
        mapping[t] = {c: r.name for c, r in rename.items()}
        select_value = body.get(select_key)
        if isinstance(select_value, list):  # a plain list names columns of the first table
            select_value = {names[0]: select_value}
        chosen = parse_select(select_value, t, tc, select_key, tables=names)
        selected += [rename[c.name] for c in chosen]
        for f in parse_filters(body, t, tc, tables=names, limits=limits):
            filters.append(replace(f, columns=tuple(rename[c.name] for c in f.columns)))
    wire = [c.name for c in all_cols]
    dupes = duplicate_names(wire)
    if dupes:
        raise InvalidInput(f"columns {dupes[:5]} appear in both tables: give suffix_map", field="suffix_map")
    resolution = base.desired_resolution or vts[0].voxel_resolution
    scales = {f"j{i}": scale_of(vt.voxel_resolution, resolution) for i, vt in enumerate(vts)}
    spec = QuerySpec(
        select=selected,
        filters=filters,
        offset=base.offset,
        limit=base.limit,
        desired_resolution=base.desired_resolution,
    )
    limit, cap = cap_of(spec, settings)
    r1, r2 = version_relation(datastack, version, t1), version_relation(datastack, version, t2)

    def source(binder: Binder) -> Source:
        return Source(
            f"FROM {r1} AS j0 JOIN {r2} AS j1 ON j0.{quote(c1)} = j1.{quote(c2)}",
            live=False,
            order_by="j0.id, j1.id",  # one order, also for a row of t1 joined to several of t2
            first_id="j0.id",
        )

    plan = QueryPlan(
        engine,
        names[0],
        TableColumns(tuple(all_cols), ()),
        spec,
        (resolution[0], resolution[1], resolution[2]),
        scales,
        make_source=source,
        where=filters_sql(filters),
        limit=limit,
        names=mapping,
    )
    return finish(plan, cap, [], settings)
