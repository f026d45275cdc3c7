"""Annotation schemas of the field (the ``emannotationschemas`` types), by the same names and
fields, without its SQLAlchemy 1.4 / marshmallow pins: the shape in
:mod:`matengine.schemas.model`, the 57 types in :mod:`matengine.schemas.registry`.
"""

from __future__ import annotations

from matengine.errors import NotFound
from matengine.schemas.model import SQL_TYPES, AnnotationSchema, Column, Field, Kind
from matengine.schemas.registry import ALL

__all__ = ["SCHEMAS", "SQL_TYPES", "AnnotationSchema", "Column", "Field", "Kind", "get_schema"]

SCHEMAS: dict[str, AnnotationSchema] = {s.name: s for s in ALL}


def get_schema(name: str) -> AnnotationSchema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise NotFound(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}") from None
