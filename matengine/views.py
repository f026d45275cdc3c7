"""Views: named, admin-defined queries over a datastack's tables (no SQL from users).

A definition (JSON)::

    {"tables": ["syn"]                                  # one table, or one join:
     "tables": [["syn_pts", "target_id"], ["syn", "id"]],
     "suffixes": {"syn_pts": "_ref"},                   # join only (default "" / "_<t2>")
     "filters": {"filter_equal_dict": {"syn": {"size": 5}}, ...},   # query-body filters
     "select_columns": {"syn": ["id", "pre_pt_root_id", "pre_pt_position"]},
     "rename": {"pre_pt_root_id": "pre_root"}}          # output column -> view column

Definitions are never changed in place: :func:`define_view` drops the current one and adds
a new row, :func:`drop_view` marks it dropped. Version N answers with the definition in
force when the version was made (``created <= version.created < dropped``), over its own
frozen tables; live queries use the current definition. Names are checked when a view is
defined (tables, join and filter columns, selected and renamed columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update

from matengine import catalog
from matengine.db import metadata as m
from matengine.db.identifiers import validate_name
from matengine.errors import InvalidInput, NotFound
from matengine.query.columns import table_columns
from matengine.query.spec import FILTER_KEYS, parse_filters, parse_select
from matengine.timeutil import utcnow

MAX_DEFINITION_BYTES = 64 * 1024


@dataclass(frozen=True)
class View:
    datastack: str
    name: str
    definition: dict[str, Any]
    description: str
    created: datetime

    @property
    def tables(self) -> list[str]:
        return [t if isinstance(t, str) else t[0] for t in self.definition["tables"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "datastack": self.datastack,
            "name": self.name,
            "description": self.description,
            "created": self.created.isoformat(),
            "definition": self.definition,
        }


def _check(engine: Engine, datastack: str, definition: Any) -> dict[str, Any]:
    """The definition, normalised, or :class:`InvalidInput` naming what is wrong."""
    import json

    if not isinstance(definition, Mapping):
        raise InvalidInput("a view definition is a JSON object")
    if len(json.dumps(definition)) > MAX_DEFINITION_BYTES:
        raise InvalidInput(f"a view definition is at most {MAX_DEFINITION_BYTES} bytes")
    unknown = sorted(set(definition) - {"tables", "suffixes", "filters", "select_columns", "rename"})
    if unknown:
        raise InvalidInput(f"unknown keys {unknown}", field="definition")
    raw = definition.get("tables")
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        pairs: list[list[str]] = []
        names = [raw[0]]
    elif (
        isinstance(raw, list)
        and len(raw) == 2
        and all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in raw)
    ):
        pairs = [list(p) for p in raw]
        names = [p[0] for p in pairs]
        if names[0] == names[1]:
            raise InvalidInput("a view cannot join a table with itself", field="tables")
    else:
        raise InvalidInput('expected ["table"] or [["t1", "col1"], ["t2", "col2"]]', field="tables")
    cols = {}
    for t in names:
        validate_name(t, "table name")
        cols[t] = table_columns(catalog.get_table(engine, datastack, t).schema)
    for t, c in pairs:
        validate_name(c, "join column")
        if c not in cols[t].by_name():
            raise InvalidInput(f"table {t!r} has no column {c!r}", field="tables")
    filters = definition.get("filters") or {}
    if not isinstance(filters, Mapping) or set(filters) - set(FILTER_KEYS):
        raise InvalidInput(f"filters: keys among {sorted(FILTER_KEYS)}", field="filters")
    select_columns = definition.get("select_columns")
    for t in names:
        parse_filters(filters, t, cols[t], tables=names)
        parse_select(select_columns, t, cols[t], tables=names if len(names) > 1 else ())
    suffixes = definition.get("suffixes") or {}
    if not isinstance(suffixes, Mapping) or not all(isinstance(v, str) for v in suffixes.values()):
        raise InvalidInput("suffixes: {table: suffix}", field="suffixes")
    rename = definition.get("rename") or {}
    if not isinstance(rename, Mapping) or not all(isinstance(v, str) for v in rename.values()):
        raise InvalidInput("rename: {column: new name}", field="rename")
    for new in rename.values():
        validate_name(new, "view column")
    out = {"tables": raw, "filters": dict(filters), "rename": dict(rename), "suffixes": dict(suffixes)}
    if select_columns is not None:
        out["select_columns"] = select_columns
    return out


def define_view(engine: Engine, datastack: str, name: str, definition: Any, description: str = "") -> View:
    """Create view ``name`` (or replace its current definition)."""
    validate_name(name, "view name")
    catalog.get_datastack(engine, datastack)
    checked = _check(engine, datastack, definition)
    from matengine.query.views import view_columns

    now = utcnow()
    view = View(datastack, name, checked, description, now)
    view_columns(engine, view)  # renamed columns must not collide
    v = m.views
    with engine.begin() as conn:
        conn.execute(
            update(v)
            .where(v.c.datastack == datastack, v.c.name == name, v.c.dropped.is_(None))
            .values(dropped=now)
        )
        conn.execute(
            insert(v).values(
                datastack=datastack, name=name, definition=checked, description=description, created=now
            )
        )
    return view


def drop_view(engine: Engine, datastack: str, name: str) -> None:
    v = m.views
    with engine.begin() as conn:
        done = conn.execute(
            update(v)
            .where(v.c.datastack == datastack, v.c.name == name, v.c.dropped.is_(None))
            .values(dropped=utcnow())
        ).rowcount
    if not done:
        raise NotFound(f"datastack {datastack!r} has no view {name!r}")


def list_views(engine: Engine, datastack: str, at: datetime | None = None) -> list[View]:
    """Views in force at ``at`` (a version's creation time), or now."""
    v = m.views
    stmt = select(v).where(v.c.datastack == datastack)
    if at is None:
        stmt = stmt.where(v.c.dropped.is_(None))
    else:
        stmt = stmt.where(v.c.created <= at, (v.c.dropped.is_(None)) | (v.c.dropped > at))
    with engine.connect() as conn:
        rows = conn.execute(stmt.order_by(v.c.name)).all()
    return [View(r.datastack, r.name, dict(r.definition), r.description, r.created) for r in rows]


def get_view(engine: Engine, datastack: str, name: str, at: datetime | None = None) -> View:
    for view in list_views(engine, datastack, at):
        if view.name == name:
            return view
    when = "now" if at is None else f"in that version (made {at.isoformat()})"
    raise NotFound(f"datastack {datastack!r} has no view {name!r} {when}")
