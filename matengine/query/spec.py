"""A query request, parsed and checked against the table's columns before any SQL is built.

Every name must be a column of the table and every value must fit its column's type;
anything else is refused with :class:`~matengine.errors.InvalidInput` naming the field.
So nothing the caller sends reaches SQL except as a bound parameter or a column we
listed ourselves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matengine.config import Settings, get_settings
from matengine.errors import InvalidInput, TooLarge
from matengine.query.columns import ColKind, OutColumn, TableColumns
from matengine.query.regex_guard import check_regex
from matengine.timeutil import to_utc

# request key -> operator; caveclient sends filter_notin_dict, older clients filter_out_dict
FILTER_KEYS = {
    "filter_in_dict": "in",
    "filter_notin_dict": "notin",
    "filter_out_dict": "notin",
    "filter_equal_dict": "equal",
    "filter_greater_dict": "gt",
    "filter_less_dict": "lt",
    "filter_greater_equal_dict": "ge",
    "filter_less_equal_dict": "le",
    "filter_spatial_dict": "bbox",
    "filter_regex_dict": "regex",
}
INT64 = 2**63
_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: "²".isdigit() is True
# keys of a query body that matengine does not implement: refused, never silently ignored
UNSUPPORTED_KEYS = ("order_by", "direction")


@dataclass(frozen=True)
class Limits:
    """Per-request size limits (``MATENGINE_MAX_*`` settings; docs/security.md)."""

    filter_values: int = 100_000
    regex_length: int = 256
    text_length: int = 65_536

    @classmethod
    def of(cls, settings: Settings | None = None) -> Limits:
        s = settings or get_settings()
        return cls(s.max_filter_values, s.max_regex_length, s.max_text_length)


@dataclass(frozen=True)
class Filter:
    op: str  # in notin equal gt lt ge le bbox regex
    logical: str
    columns: tuple[OutColumn, ...]  # one column, or x/y/z of a position for bbox
    value: Any  # list for in/notin, ((x0,y0,z0),(x1,y1,z1)) for bbox, else a scalar

    @property
    def column(self) -> OutColumn:
        return self.columns[0]

    @property
    def on_root(self) -> bool:
        return self.op != "bbox" and self.column.is_root


@dataclass
class QuerySpec:
    select: list[OutColumn]
    filters: list[Filter] = field(default_factory=list)
    offset: int = 0
    limit: int | None = None
    desired_resolution: tuple[float, float, float] | None = None
    random_sample: int | None = None


def _where(key: str, column: str | None = None) -> str:
    return f"{key}[{column!r}]" if column else key


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_text(value: str, where: str, max_length: int = 65_536) -> str:
    """Text PostgreSQL can store and a request may carry: no NUL, valid UTF-8, bounded."""
    if len(value) > max_length:
        raise TooLarge(f"text longer than {max_length} characters", field=where)
    if "\x00" in value:
        raise InvalidInput("text contains a NUL character, which PostgreSQL text cannot hold", field=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("text is not valid Unicode (a lone surrogate)", field=where) from None
    return value


def coerce_value(col: OutColumn, value: Any, where: str, limits: Limits | None = None) -> Any:
    """``value`` as the Python type bound for ``col``, or :class:`InvalidInput`."""
    limits = limits or Limits()
    kind = col.kind
    if value is None:
        raise InvalidInput("null is not a filter value", field=where)
    if kind is ColKind.INT:
        if isinstance(value, bool):
            raise InvalidInput(f"expected an integer, got {value!r}", field=where)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and len(value) < 40 and _INTEGER.fullmatch(value.strip()):
            value = int(value)
        if not isinstance(value, int) or not -INT64 <= value < INT64:
            raise InvalidInput(f"expected a 64-bit integer, got {_shown(value)}", field=where)
        if value < 0 and (col.name.endswith("_root_id") or col.name.endswith("_supervoxel_id")):
            raise InvalidInput(f"segmentation ids are not negative, got {value}", field=where)
        return value
    if kind is ColKind.FLOAT:
        if isinstance(value, bool):
            raise InvalidInput(f"expected a number, got {value!r}", field=where)
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(f"expected a number, got {_shown(value)}", field=where) from None
        if not math.isfinite(number):
            raise InvalidInput(f"expected a finite number, got {value!r}", field=where)
        return number
    if kind is ColKind.BOOL:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            value = value.strip().lower() == "true"  # from the command line
        if not isinstance(value, bool):
            raise InvalidInput(f"expected true or false, got {value!r}", field=where)
        return value
    if kind is ColKind.TEXT:
        if not isinstance(value, str):
            raise InvalidInput(f"expected a string, got {_shown(value)}", field=where)
        return check_text(value, where, limits.text_length)
    try:
        return to_utc(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"expected an ISO timestamp, got {_shown(value)}", field=where) from None


def _column(cols: TableColumns, name: Any, where: str, *, allow_position: bool) -> list[OutColumn]:
    if not isinstance(name, str):
        raise InvalidInput(f"column names are strings, got {name!r}", field=where)
    by_name, by_logical = cols.by_name(), cols.by_logical()
    if name in by_name:
        return [by_name[name]]
    if name in by_logical and allow_position:
        return by_logical[name]
    if name in by_logical:
        raise InvalidInput(
            f"{name!r} is a position: filter it with filter_spatial_dict, or use one of "
            f"{', '.join(c.name for c in by_logical[name])}",
            field=where,
        )
    raise InvalidInput(f"unknown column {name!r}; columns are {', '.join(cols.logical_names())}", field=where)


def _bbox(value: Any, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    try:
        lo, hi = value
        box = [[float(v) for v in corner] for corner in (lo, hi)]
    except (TypeError, ValueError):
        box = []
    if len(box) != 2 or any(len(c) != 3 for c in box) or not all(math.isfinite(v) for c in box for v in c):
        raise InvalidInput(
            f"a bounding box is [[x0, y0, z0], [x1, y1, z1]] of finite numbers, got {value!r}", field=where
        )
    return tuple(box[0]), tuple(box[1])


def _filter(cols: TableColumns, key: str, op: str, name: Any, value: Any, limits: Limits) -> Filter:
    where = _where(key, name if isinstance(name, str) else None)
    if op == "bbox":
        parts = _column(cols, name, where, allow_position=True)
        if len(parts) != 3:
            raise InvalidInput(f"{name!r} is not a position column", field=where)
        return Filter(op, name, tuple(parts), _bbox(value, where))
    col = _column(cols, name, where, allow_position=False)[0]
    if op in ("in", "notin"):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise InvalidInput(f"expected a list of values, got {_shown(value)}", field=where)
        if len(value) > limits.filter_values:
            raise TooLarge(
                f"{len(value)} values, more than the {limits.filter_values} one filter may list "
                "(MATENGINE_MAX_FILTER_VALUES); split the query",
                field=where,
            )
        return Filter(op, name, (col,), [coerce_value(col, v, where, limits) for v in value])
    if op == "regex":
        if col.kind is not ColKind.TEXT:
            raise InvalidInput(f"regex filters need a text column; {name!r} is {col.kind}", field=where)
        pattern = coerce_value(col, value, where, limits)
        return Filter(op, name, (col,), check_regex(pattern, max_length=limits.regex_length, where=where))
    if op in ("gt", "lt", "ge", "le") and col.kind in (ColKind.BOOL, ColKind.TEXT):
        raise InvalidInput(f"cannot compare {col.kind} column {name!r} by order", field=where)
    return Filter(op, name, (col,), coerce_value(col, value, where, limits))


def parse_filters(
    body: Mapping[str, Any],
    table: str,
    cols: TableColumns,
    *,
    tables: Collection[str] = (),
    limits: Limits | None = None,
) -> list[Filter]:
    """Filters of ``table`` from a request body (each filter dict nested by table name);
    ``tables``: every table of the query (a join), whose filters are parsed separately."""
    limits = limits or Limits.of()
    allowed = {table, *tables}
    out: list[Filter] = []
    for key, op in FILTER_KEYS.items():
        by_table = body.get(key)
        if by_table is None:
            continue
        if not isinstance(by_table, Mapping):
            raise InvalidInput("expected {table: {column: value}}", field=key)
        for tname, conds in by_table.items():
            if tname not in allowed:
                raise InvalidInput(
                    f"unknown table {tname!r} (this query reads {', '.join(sorted(allowed))})", field=key
                )
            if conds is None or tname != table:
                continue
            if not isinstance(conds, Mapping):
                raise InvalidInput("expected {column: value}", field=_where(key, tname))
            out.extend(_filter(cols, key, op, name, value, limits) for name, value in conds.items())
    return out


def parse_select(
    value: Any, table: str, cols: TableColumns, key: str = "select_columns", *, tables: Collection[str] = ()
) -> list[OutColumn]:
    """Wire columns for ``select_columns`` (a list, or ``{table: [...]}``); all if absent.
    In a join (``tables`` given) a table left out of the mapping contributes nothing."""
    if value is None:
        return list(cols.columns)
    if isinstance(value, Mapping):
        allowed = {table, *tables}
        unknown = [t for t in value if t not in allowed]
        if unknown:
            raise InvalidInput(
                f"unknown table {unknown[0]!r} (this query reads {', '.join(sorted(allowed))})", field=key
            )
        value = value.get(table)
        if value is None:
            return [] if tables else list(cols.columns)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidInput(f"expected a list of column names, got {value!r}", field=key)
    chosen: list[OutColumn] = []
    for name in value:
        for c in _column(cols, name, f"{key}[{name!r}]", allow_position=True):
            if c not in chosen:
                chosen.append(c)
    if not chosen:
        raise InvalidInput("select at least one column", field=key)
    return chosen


def _int(value: Any, key: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < INT64:
        raise InvalidInput(f"expected an integer >= {minimum} and < 2**63, got {_shown(value)}", field=key)
    return value


def parse_resolution(value: Any, key: str = "desired_resolution") -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        res = tuple(float(v) for v in value)
    except (TypeError, ValueError, OverflowError):
        res = ()
    if len(res) != 3 or not all(math.isfinite(v) and v > 0 for v in res):
        raise InvalidInput(f"expected three positive numbers, got {value!r}", field=key)
    return (res[0], res[1], res[2])


def refuse_unsupported(body: Mapping[str, Any]) -> None:
    for key in UNSUPPORTED_KEYS:
        if body.get(key) is not None:
            raise InvalidInput(f"{key} is not supported: rows come ordered by id; sort the result", field=key)


def parse_query(
    body: Mapping[str, Any],
    table: str,
    cols: TableColumns,
    *,
    random_sample: Any = None,
    limits: Limits | None = None,
) -> QuerySpec:
    if not isinstance(body, Mapping):
        raise InvalidInput("the request body must be a JSON object")
    refuse_unsupported(body)
    select_key = "select_column_map" if "select_column_map" in body else "select_columns"
    return QuerySpec(
        select=parse_select(body.get(select_key), table, cols, select_key),
        filters=parse_filters(body, table, cols, limits=limits),
        offset=_int(body.get("offset"), "offset", 0) or 0,
        limit=_int(body.get("limit"), "limit", 1),
        desired_resolution=parse_resolution(body.get("desired_resolution")),
        random_sample=_int(random_sample, "random_sample", 1),
    )
