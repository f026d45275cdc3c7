"""The shape of an annotation schema: fields, their kinds, and the flat columns they give.

A schema is a list of fields. Point fields flatten to columns the way the field names them:
``pre_pt`` (a bound point) gives ``pre_pt_position`` in the annotation table and
``pre_pt_supervoxel_id``, ``pre_pt_root_id`` in the segmentation table; a plain point
(``ctr_pt`` of ``synapse``) gives only ``ctr_pt_position``. A point class with extra values
(the field's ``DerivedSpatialPoint``: ``dependent_chunk``, ``level``) carries them as scalar
fields named ``<pt>_<key>`` with ``parent`` set to the point, so they are stored and queried
flat (``pt_dependent_chunk``) and posted nested (``{"pt": {"dependent_chunk": …}}``).

The field also registers that point class as a type of its own (``derived_spatial_point``):
a table of it holds one derived bound point, modelled here as the point ``pt`` (columns
``pt_position``, ``pt_dependent_chunk``, … like ``derived_tag`` without its tag), whose values
a row gives at the top level (``{"position": …, "dependent_chunk": …}``, the field's shape):
:meth:`AnnotationSchema.top_level_names` maps those names onto ours.

Positions are stored as three ``float8`` columns ``<pt>_position_x/_y/_z`` (voxels of the
table's resolution): plain PostgreSQL, the layout caveclient receives on the wire, and a GiST
index on ``point(x, y)`` with a ``z`` range check answers bounding boxes (see
:mod:`matengine.db.annotation_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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

# the field's point classes (marshmallow schemas nested in annotation schemas)
SPATIAL_POINT = "SpatialPoint"
BOUND_SPATIAL_POINT = "BoundSpatialPoint"
DERIVED_SPATIAL_POINT = "DerivedSpatialPoint"


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    required: bool = True
    index: bool = False
    description: str = ""
    # allowed values (the field's OneOf validators); None: any value of the kind
    choices: tuple[Any, ...] | None = None
    # points: the field's point class; scalars inside a point: that point's name, and the key
    point_class: str | None = None
    parent: str | None = None
    key: str | None = None
    # the field's AutoUserIdField: the server writes the caller's user id, never the client
    auto_user: bool = False

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
    # the field's marshmallow class name: the JSON schema's definition name
    class_name: str = ""
    # the field registers one point class (DerivedSpatialPoint) as a type of its own: its JSON
    # schema is the point's definition, and a table's row gives the point's values at the top
    # level (see top_level_names)
    is_point_class: bool = False

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

    @property
    def user_fields(self) -> list[Field]:
        return [f for f in self.fields if f.auto_user]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def point_extras(self, point: str) -> list[Field]:
        """Scalar fields nested in ``point`` (``pt_dependent_chunk`` of a derived point)."""
        return [f for f in self.fields if f.parent == point]

    def top_level_names(self) -> dict[str, str]:
        """A point class's own table: the field's names of its values, as a row gives them at
        the top level, -> our column names (``position`` -> ``pt_position``,
        ``dependent_chunk`` -> ``pt_dependent_chunk``, ``root_id`` -> ``pt_root_id``, …).
        Empty for every other schema."""
        if not self.is_point_class:
            return {}
        (point,) = self.points
        names = {"position": f"{point.name}_position"}
        if point.kind is Kind.BOUND_POINT:
            names["supervoxel_id"] = f"{point.name}_supervoxel_id"
            names["root_id"] = f"{point.name}_root_id"
        for extra in self.point_extras(point.name):
            assert extra.key is not None
            names[extra.key] = extra.name
        return names

    def posted_names(self) -> dict[str, str]:
        """The inverse of :meth:`top_level_names`: our column names -> the names a point
        class's own table gives at the top level. Empty for every other schema."""
        return {ours: theirs for theirs, ours in self.top_level_names().items()}

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
