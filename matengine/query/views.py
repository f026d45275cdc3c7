"""Queries of a view (:mod:`matengine.views`): at a version, over its frozen tables, or live
at any timestamp, by translating the view into the table (or join) query it stands for.

The caller's filters and ``select_columns`` name *view* columns (after renaming); they are
mapped back to their tables and ANDed with the view's own filters (a filter the view already
sets on the same column and operator is refused, not overridden). The answer is the
underlying query's, its columns renamed; ``limit``, ``offset``, ``desired_resolution``,
``split_positions`` and counts behave as for tables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from sqlalchemy import Engine

from matengine import catalog
from matengine.config import Settings
from matengine.errors import InvalidInput
from matengine.query.columns import ColKind, OutColumn, duplicate_names, table_columns
from matengine.query.engine import QueryResult
from matengine.query.spec import FILTER_KEYS, parse_select

if TYPE_CHECKING:  # matengine.views checks definitions through this module
    from matengine.views import View

SCHEMA_TYPES = {
    ColKind.INT: "integer",
    ColKind.FLOAT: "float",
    ColKind.TEXT: "string",
    ColKind.BOOL: "boolean",
    ColKind.TIME: "timestamp",
}


@dataclass(frozen=True)
class ViewColumn:
    name: str  # view wire name (pre_position_x)
    logical: str  # view logical name (pre_position): what filters and select use
    table: str
    table_logical: str  # the table's own logical name (pre_pt_position)
    underlying: str  # wire name in the underlying query (suffixed)
    kind: ColKind
    axis: int | None


def _names(view: View) -> tuple[list[str], list[list[str]], list[str]]:
    raw = view.definition["tables"]
    if len(raw) == 1 and isinstance(raw[0], str):
        return [raw[0]], [], [""]
    pairs = [list(p) for p in raw]
    names = [p[0] for p in pairs]
    given = view.definition.get("suffixes") or {}
    suffixes = [given.get(n, "") for n in names] if given else ["", f"_{names[1]}"]
    return names, pairs, suffixes


def view_columns(engine: Engine, view: View) -> list[ViewColumn]:
    names, pairs, suffixes = _names(view)
    rename = view.definition.get("rename") or {}
    out: list[ViewColumn] = []
    selected: set[str] = set()
    for t, sfx in zip(names, suffixes, strict=True):
        tc = table_columns(catalog.get_table(engine, view.datastack, t).schema)
        chosen = parse_select(view.definition.get("select_columns"), t, tc, tables=names if pairs else ())
        for c in chosen:
            tail = c.name[len(c.logical) :]
            out_logical = c.logical + sfx
            selected.add(out_logical)
            logical = rename.get(out_logical, out_logical)
            out.append(ViewColumn(logical + tail, logical, t, c.logical, out_logical + tail, c.kind, c.axis))
    wire = [c.name for c in out]
    dupes = duplicate_names(wire)
    if dupes:
        raise InvalidInput(f"view columns {dupes[:5]} appear twice: rename them", field="rename")
    unused = set(rename) - selected
    if unused:
        raise InvalidInput(
            f"rename names columns the view does not select: {sorted(unused)[:5]}", field="rename"
        )
    return out


def view_schema(engine: Engine, view: View) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for c in view_columns(engine, view):
        out[c.logical] = {"type": "SpatialPoint" if c.axis is not None else SCHEMA_TYPES[c.kind]}
    return out


def _user_filters(body: Mapping[str, Any], view: View, cols: list[ViewColumn]) -> dict[str, dict]:
    """The caller's filters, keyed by view column, as ``{key: {table: {column: value}}}``."""
    by_logical = {c.logical: c for c in cols}
    out: dict[str, dict] = {}
    for key in FILTER_KEYS:
        given = body.get(key)
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise InvalidInput("expected {view: {column: value}}", field=key)
        if set(given) <= {view.name}:  # caveclient nests them under the view's name
            given = given.get(view.name) or {}
        if not isinstance(given, Mapping):
            raise InvalidInput("expected {column: value}", field=key)
        for name, value in given.items():
            col = by_logical.get(name) if isinstance(name, str) else None
            if col is None:
                raise InvalidInput(f"view {view.name!r} has no column {name!r}", field=key)
            out.setdefault(key, {}).setdefault(col.table, {})[col.table_logical] = value
    return out


def _merged_filters(view: View, user: dict[str, dict]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for key, by_table in (view.definition.get("filters") or {}).items():
        merged[key] = {t: dict(v) for t, v in by_table.items()}
    for key, by_table in user.items():
        for t, conds in by_table.items():
            have = merged.setdefault(key, {}).setdefault(t, {})
            for c, v in conds.items():
                if c in have:
                    raise InvalidInput(f"the view already sets {key} on {c!r}", field=key)
                have[c] = v
    return merged


def _selected(body: Mapping[str, Any], view: View, cols: list[ViewColumn]) -> list[ViewColumn]:
    raw = body.get("select_columns")
    if isinstance(raw, Mapping):
        raw = raw.get(view.name)
    if raw is None:
        return cols
    if isinstance(raw, (str, bytes)) or not isinstance(raw, list):
        raise InvalidInput("expected a list of view columns", field="select_columns")
    known = {c.logical for c in cols} | {c.name for c in cols}
    bad = [n for n in raw if n not in known]
    if bad or not raw:
        raise InvalidInput(f"view {view.name!r} has no column {bad[:1] or raw!r}", field="select_columns")
    wanted = set(raw)
    return [c for c in cols if c.logical in wanted or c.name in wanted]


@dataclass
class ViewResult(QueryResult):
    """The underlying query's result under the view's column names."""

    inner: QueryResult | None = None
    renames: dict[str, ViewColumn] = field(default_factory=dict)

    @property
    def columns(self) -> list[OutColumn]:
        assert self.inner is not None
        out = []
        for c in self.inner.columns:
            v = self.renames[c.name]
            out.append(replace(c, name=v.name, logical=v.logical))
        return out

    @property
    def column_names(self) -> dict[str, dict[str, str]]:
        return {"view": {c.name: c.name for c in self.columns}}

    def prime(self) -> None:
        assert self.inner is not None
        self.inner.prime()

    @property
    def complete(self) -> bool:
        assert self.inner is not None
        return self.inner.complete

    def close(self) -> None:
        assert self.inner is not None
        self.inner.close()

    def cancel(self) -> None:
        assert self.inner is not None
        self.inner.cancel()

    def record_batches(self) -> Iterator[pa.RecordBatch]:
        assert self.inner is not None
        schema = self.schema
        for batch in self.inner.record_batches():
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def view_query(
    engine: Engine,
    view: View,
    body: Mapping[str, Any],
    *,
    version: int | None = None,
    timestamp: datetime | str | None = None,
    settings: Settings | None = None,
    allow_missing_lookups: bool = False,
    allow_invalid_root_ids: bool = False,
) -> QueryResult:
    """``view`` at ``version`` (its frozen tables) or live at ``timestamp``."""
    from matengine.query.engine import live_query, version_query
    from matengine.query.join import join_query
    from matengine.query.live_join import live_join_query

    if not isinstance(body, Mapping):
        raise InvalidInput("the request body must be a JSON object")
    if (version is None) == (timestamp is None):
        raise InvalidInput("query a view at a version or at a timestamp")
    cols = view_columns(engine, view)
    chosen = _selected(body, view, cols)
    filters = _merged_filters(view, _user_filters(body, view, cols))
    names, pairs, suffixes = _names(view)
    inner_body: dict[str, Any] = {k: body[k] for k in ("limit", "offset", "desired_resolution") if k in body}
    inner_body.update(filters)
    select = {t: sorted({c.table_logical for c in chosen if c.table == t}) for t in names}
    if not pairs:
        inner_body["select_columns"] = select[names[0]]
        if version is not None:
            result = version_query(engine, view.datastack, version, names[0], inner_body, settings=settings)
        else:
            result = live_query(
                engine,
                view.datastack,
                names[0],
                timestamp,
                inner_body,
                settings=settings,
                allow_missing_lookups=allow_missing_lookups,
                allow_invalid_root_ids=allow_invalid_root_ids,
            )
    else:
        for t in names:  # a table left out of a join's selection contributes no column
            if not select[t]:
                select.pop(t)
        if version is not None:
            inner_body.update(
                tables=pairs, suffix_map=dict(zip(names, suffixes, strict=True)), select_column_map=select
            )
            result = join_query(engine, view.datastack, version, inner_body, settings=settings)
        else:
            (t1, c1), (t2, c2) = pairs
            inner_body.update(
                join_tables=[[t1, c1, t2, c2]],
                suffixes=dict(zip(names, suffixes, strict=True)),
                select_columns=select,
            )
            result = live_join_query(
                engine,
                view.datastack,
                t1,
                timestamp,
                inner_body,
                settings=settings,
                allow_missing_lookups=allow_missing_lookups,
                allow_invalid_root_ids=allow_invalid_root_ids,
            )
    renames = {c.underlying: c for c in cols}
    return ViewResult(result.plan, list(result.warnings), inner=result, renames=renames)
