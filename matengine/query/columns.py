"""The columns a query returns, derived from the table's schema.

Each output column knows its wire name (positions split: ``pre_pt_position_x``), its logical
name (what filters and ``select_columns`` use: ``pre_pt_position``), its type, and where it
comes from (annotation or segmentation table). Version tables hold both in one table; live
queries join the two.

Supervoxel and root ids are never null on the wire: a missing lookup is 0, the field's
convention (a chunkedgraph answers 0 for unknown ids). A null would turn the whole pandas
column into float64 and silently corrupt every root id above 2**53.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import pyarrow as pa

from matengine.schemas import AnnotationSchema, Kind


class ColKind(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    TEXT = "text"
    TIME = "time"


ARROW_TYPES = {
    ColKind.INT: pa.int64(),
    ColKind.FLOAT: pa.float64(),
    ColKind.BOOL: pa.bool_(),
    ColKind.TEXT: pa.string(),
    ColKind.TIME: pa.timestamp("us", tz="UTC"),
}

_SCALAR_KINDS = {
    Kind.FLOAT: ColKind.FLOAT,
    Kind.INT: ColKind.INT,
    Kind.STRING: ColKind.TEXT,
    Kind.BOOL: ColKind.BOOL,
    Kind.REFERENCE: ColKind.INT,
}


@dataclass(frozen=True)
class OutColumn:
    name: str  # on the wire
    logical: str  # in filters and select_columns
    kind: ColKind
    source: str  # "a": annotation columns, "s": segmentation columns
    db_column: str  # stored column name
    nullable: bool = True
    zero_for_null: bool = False  # ids: null is sent as 0
    axis: int | None = None  # 0/1/2 for the split parts of a position

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.kind]

    @property
    def is_position(self) -> bool:
        return self.axis is not None

    @property
    def is_root(self) -> bool:
        return self.source == "s" and self.name.endswith("_root_id")


@dataclass(frozen=True)
class TableColumns:
    """All output columns of one table, in wire order, with lookups by logical name."""

    columns: tuple[OutColumn, ...]
    bound_points: tuple[str, ...]

    def by_logical(self) -> dict[str, list[OutColumn]]:
        out: dict[str, list[OutColumn]] = {}
        for c in self.columns:
            out.setdefault(c.logical, []).append(c)
        return out

    def by_name(self) -> dict[str, OutColumn]:
        return {c.name: c for c in self.columns}

    def logical_names(self) -> list[str]:
        return list(self.by_logical())


def table_columns(schema: AnnotationSchema) -> TableColumns:
    """Wire columns of a table of ``schema``: ``id, created, valid``, then each field in schema
    order (a bound point's supervoxel and root ids right after its position)."""
    cols = [
        OutColumn("id", "id", ColKind.INT, "a", "id", nullable=False),
        OutColumn("created", "created", ColKind.TIME, "a", "created", nullable=False),
        OutColumn("valid", "valid", ColKind.BOOL, "a", "valid", nullable=False),
    ]
    for f in schema.fields:
        if f.is_point:
            logical = f"{f.name}_position"
            for axis, letter in enumerate("xyz"):
                name = f"{logical}_{letter}"
                # required positions are finite numbers from every writer, so they travel
                # without a null flag (a third less data for a synapse row); optional ones
                # (``bb_start`` of a nucleus) may be null
                cols.append(
                    OutColumn(name, logical, ColKind.FLOAT, "a", name, nullable=not f.required, axis=axis)
                )
            if f.kind is Kind.BOUND_POINT:
                for suffix in ("supervoxel_id", "root_id"):
                    name = f"{f.name}_{suffix}"
                    cols.append(
                        OutColumn(name, name, ColKind.INT, "s", name, nullable=False, zero_for_null=True)
                    )
        else:
            cols.append(OutColumn(f.name, f.name, _SCALAR_KINDS[f.kind], "a", f.name))
    return TableColumns(tuple(cols), tuple(schema.bound_points))


def arrow_schema(columns: list[OutColumn]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in columns])


def duplicate_names(names: list[str]) -> list[str]:
    """Output names that appear more than once (sorted): a joined or renamed result may not
    carry two columns of one name, so its caller refuses them, naming its own parameter."""
    return sorted({n for n in names if names.count(n) > 1})
