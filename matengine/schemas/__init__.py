"""Annotation schemas of the field (the ``emannotationschemas`` types), by the same names and
fields, without its SQLAlchemy 1.4 / marshmallow pins.

A schema is a list of fields. Point fields flatten to columns the way the field names them:
``pre_pt`` (a bound point) gives ``pre_pt_position`` in the annotation table and
``pre_pt_supervoxel_id``, ``pre_pt_root_id`` in the segmentation table; a plain point
(``ctr_pt`` of ``synapse``) gives only ``ctr_pt_position``.

Positions are stored as three ``float8`` columns ``<pt>_position_x/_y/_z`` (voxels of the
table's resolution): plain PostgreSQL, the layout caveclient receives on the wire, and a GiST
index on ``point(x, y)`` with a ``z`` range check answers bounding boxes (see
:mod:`matengine.db.annotation_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from matengine.errors import NotFound


class Kind(StrEnum):
    BOUND_POINT = "bound_point"  # position + supervoxel_id + root_id
    POINT = "point"  # position only
    FLOAT = "float"
    INT = "int"
    STRING = "string"
    BOOL = "bool"
    REFERENCE = "reference"  # bigint id of a row in the table's reference_table


SQL_TYPES = {
    Kind.FLOAT: "double precision",
    Kind.INT: "bigint",
    Kind.STRING: "text",
    Kind.BOOL: "boolean",
    Kind.REFERENCE: "bigint",
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    required: bool = True
    index: bool = False

    @property
    def is_point(self) -> bool:
        return self.kind in (Kind.BOUND_POINT, Kind.POINT)


@dataclass(frozen=True)
class Column:
    """A flat column as stored and as queried (``position`` columns expand to x/y/z)."""

    name: str
    sql_type: str
    field: str


@dataclass(frozen=True)
class AnnotationSchema:
    name: str
    fields: tuple[Field, ...]
    description: str = ""

    @property
    def is_reference(self) -> bool:
        return any(f.kind is Kind.REFERENCE for f in self.fields)

    @property
    def points(self) -> list[Field]:
        return [f for f in self.fields if f.is_point]

    @property
    def bound_points(self) -> list[str]:
        """Names of the points that get supervoxel and root ids (``pre_pt``, ``post_pt``)."""
        return [f.name for f in self.fields if f.kind is Kind.BOUND_POINT]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def annotation_columns(self) -> list[Column]:
        """Schema columns of the live annotation table (after the CRUD columns)."""
        cols: list[Column] = []
        for f in self.fields:
            if f.is_point:
                for axis in "xyz":
                    cols.append(Column(f"{f.name}_position_{axis}", "double precision", f.name))
            else:
                cols.append(Column(f.name, SQL_TYPES[f.kind], f.name))
        return cols

    def segmentation_columns(self) -> list[Column]:
        cols: list[Column] = []
        for pt in self.bound_points:
            cols.append(Column(f"{pt}_supervoxel_id", "bigint", pt))
            cols.append(Column(f"{pt}_root_id", "bigint", pt))
        return cols

    def position_names(self) -> list[str]:
        """``<pt>_position`` for every point: the logical (unsplit) column names."""
        return [f"{f.name}_position" for f in self.points]


def _bp(name: str) -> Field:
    return Field(name, Kind.BOUND_POINT, index=True)


def _sp(name: str) -> Field:
    return Field(name, Kind.POINT)


_SCHEMAS = [
    AnnotationSchema(
        "synapse",
        (_bp("pre_pt"), _sp("ctr_pt"), _bp("post_pt"), Field("size", Kind.FLOAT, required=False)),
        "a synapse: pre- and postsynaptic points bound to the segmentation, a center point, size",
    ),
    AnnotationSchema(
        "cell_type_local",
        (
            _bp("pt"),
            Field("cell_type", Kind.STRING),
            Field("classification_system", Kind.STRING, required=False),
        ),
        "a cell type label at a point",
    ),
    AnnotationSchema("bound_tag", (_bp("pt"), Field("tag", Kind.STRING)), "a tag at a point"),
    AnnotationSchema(
        "bound_double_tag",
        (_bp("pt"), Field("tag", Kind.STRING), Field("tag2", Kind.STRING)),
        "two tags at a point",
    ),
    AnnotationSchema(
        "nucleus_detection",
        (_bp("pt"), Field("volume", Kind.FLOAT, required=False), _sp("bb_start"), _sp("bb_end")),
        "a detected nucleus: center point, volume and bounding box",
    ),
    AnnotationSchema(
        "reference_tag",
        (Field("target_id", Kind.REFERENCE, index=True), Field("tag", Kind.STRING)),
        "a tag on a row of another table",
    ),
    AnnotationSchema(
        "reference_point",
        (Field("target_id", Kind.REFERENCE, index=True), _bp("pt")),
        "a bound point attached to a row of another table",
    ),
]

SCHEMAS: dict[str, AnnotationSchema] = {s.name: s for s in _SCHEMAS}


def get_schema(name: str) -> AnnotationSchema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise NotFound(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}") from None
