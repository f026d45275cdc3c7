"""Schema-service routes (``/schema/...``): the annotation schemas as JSON Schema (draft-07),
in the shape marshmallow-jsonschema gives the field's ``emannotationschemas`` server.

Public: schemas describe formats, not data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from matengine.errors import InvalidInput
from matengine.schemas import SCHEMAS, AnnotationSchema, Kind, get_schema

router = APIRouter(tags=["schema"])
v2 = "/schema/api/v2"

_SCALARS = {
    Kind.FLOAT: {"type": "number", "format": "float"},
    Kind.INT: {"type": "integer"},
    Kind.REFERENCE: {"type": "integer"},
    Kind.STRING: {"type": "string"},
    Kind.BOOL: {"type": "boolean"},
}
_POSITION = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_DEFINITIONS = {
    "SpatialPoint": {
        "type": "object",
        "additionalProperties": False,
        "required": ["position"],
        "properties": {"position": _POSITION},
    },
    "BoundSpatialPoint": {
        "type": "object",
        "additionalProperties": False,
        "required": ["position"],
        "properties": {
            "position": _POSITION,
            "supervoxel_id": {"type": ["integer", "null"]},
            "root_id": {"type": ["integer", "null"]},
        },
    },
}


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_")) + "Schema"


def json_schema(schema: AnnotationSchema) -> dict[str, Any]:
    props: dict[str, Any] = {"valid": {"type": ["boolean", "null"]}}
    required = []
    for f in schema.fields:
        if f.kind is Kind.BOUND_POINT:
            props[f.name] = {"$ref": "#/definitions/BoundSpatialPoint"}
        elif f.kind is Kind.POINT:
            props[f.name] = {"$ref": "#/definitions/SpatialPoint"}
        else:
            props[f.name] = dict(_SCALARS[f.kind])
        if f.required:
            required.append(f.name)
    name = _camel(schema.name)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {
            name: {
                "type": "object",
                "additionalProperties": True,
                "required": required,
                "properties": props,
                "description": schema.description,
            },
            **_DEFINITIONS,
        },
        "$ref": f"#/definitions/{name}",
    }


@router.get("/schema/versions")
def schema_api_versions() -> list[int]:
    return [1, 2]


@router.get(v2 + "/type")
def schema_types() -> list[str]:
    return sorted(SCHEMAS)


@router.get(v2 + "/type/{schema_type}")
def schema_type(schema_type: str) -> dict[str, Any]:
    return json_schema(get_schema(schema_type))


@router.get(v2 + "/types")
def schema_types_many(schema_names: str = "") -> dict[str, Any]:
    names = [n for n in schema_names.split(",") if n]
    if not names:
        raise InvalidInput("give schema_names=a,b,…", field="schema_names")
    return {n: json_schema(get_schema(n)) for n in names}


@router.get(v2 + "/types_all")
def schema_types_all() -> dict[str, Any]:
    return {n: json_schema(s) for n, s in sorted(SCHEMAS.items())}
