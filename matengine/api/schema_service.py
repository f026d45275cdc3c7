"""Schema-service routes (``/schema/...``): the annotation schemas as JSON Schema (draft-07),
in the shape marshmallow-jsonschema gives the field's ``emannotationschemas`` server.

Public: schemas describe formats, not data.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from matengine.errors import InvalidInput, NotFound
from matengine.schemas import SCHEMAS, AnnotationSchema, Field, Kind, get_schema

router = APIRouter(tags=["schema"])
v2 = "/schema/api/v2"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

_SCALARS: dict[Kind, dict[str, Any]] = {
    Kind.FLOAT: {"type": "number"},
    Kind.INT: {"type": "integer"},
    Kind.REFERENCE: {"type": "integer"},
    Kind.STRING: {"type": "string"},
    Kind.BOOL: {"type": "boolean"},
}
_POSITION = {
    "title": "position",
    "type": "array",
    "description": "spatial position in voxels of x,y,z of annotation",
}
_SEGMENTATION = {
    "supervoxel_id": {"title": "supervoxel_id", "type": ["integer", "null"]},
    "root_id": {"title": "root_id", "type": ["integer", "null"]},
}


def _point_definition(schema: AnnotationSchema, point: Field) -> dict[str, Any]:
    props: dict[str, Any] = {"position": dict(_POSITION)}
    required = ["position"]
    if point.kind is Kind.BOUND_POINT:
        props.update({k: dict(v) for k, v in _SEGMENTATION.items()})
    for extra in schema.point_extras(point.name):
        assert extra.key is not None
        props[extra.key] = _scalar_property(extra, extra.key)
        if extra.required:
            required.append(extra.key)
    return {"type": "object", "additionalProperties": False, "required": required, "properties": props}


def _scalar_property(f: Field, title: str) -> dict[str, Any]:
    prop: dict[str, Any] = {"title": title, **_SCALARS[f.kind]}
    if not f.required:  # the field's schemas allow null for every optional value
        prop["type"] = [prop["type"], "null"]
    if f.description:
        prop["description"] = f.description
    if f.choices is not None:
        prop["enum"] = list(f.choices)
    return prop


def json_schema(schema: AnnotationSchema) -> dict[str, Any]:
    """The JSON schema (draft-07) marshmallow-jsonschema gives for the field's class: the
    annotation class and the point classes it nests, under ``definitions``."""
    name = schema.class_name or "".join(p.capitalize() for p in schema.name.split("_")) + "Schema"
    definitions: dict[str, Any] = {}
    if schema.is_point_class:
        # the field registers one point class itself as a type: it is its own definition
        (point,) = schema.points
        definitions[name] = _point_definition(schema, point)
        return {"$schema": DRAFT_07, "definitions": definitions, "$ref": f"#/definitions/{name}"}
    props: dict[str, Any] = {"valid": {"title": "valid", "type": ["boolean", "null"], "default": False}}
    required = []
    for f in schema.fields:
        if f.parent is not None:
            continue  # inside its point's definition
        if f.is_point:
            assert f.point_class is not None
            props[f.name] = {
                "type": "object" if f.required else ["object", "null"],
                "$ref": f"#/definitions/{f.point_class}",
            }
            if f.description:
                props[f.name]["description"] = f.description
            definitions[f.point_class] = _point_definition(schema, f)
        else:
            props[f.name] = _scalar_property(f, f.name)
        if f.required and not f.auto_user:  # the server writes the user id
            required.append(f.name)
    definitions[name] = {
        "type": "object",
        "additionalProperties": True,
        "required": required,
        "properties": props,
        "description": schema.description,
    }
    return {"$schema": DRAFT_07, "definitions": definitions, "$ref": f"#/definitions/{name}"}


@router.get("/schema/versions")
def schema_api_versions() -> list[int]:
    return [1, 2]


@router.get(v2 + "/type")
def schema_types() -> list[str]:
    return sorted(SCHEMAS)


def known_schema(name: str) -> AnnotationSchema:
    """The schema of a type named over the network (404 without echoing the name)."""
    if name not in SCHEMAS:
        raise NotFound(f"unknown schema type; {v2}/type lists the {len(SCHEMAS)} known ones")
    return get_schema(name)


@router.get(v2 + "/type/{schema_type}")
def schema_type(schema_type: str) -> dict[str, Any]:
    return json_schema(known_schema(schema_type))


@router.get(v2 + "/types")
def schema_types_many(schema_names: str = "") -> dict[str, Any]:
    names = [n for n in schema_names.split(",") if n]
    if not names:
        raise InvalidInput("give schema_names=a,b,…", field="schema_names")
    if len(names) > len(SCHEMAS):
        raise InvalidInput(f"at most {len(SCHEMAS)} schema_names", field="schema_names")
    return {n: json_schema(known_schema(n)) for n in names}


@router.get(v2 + "/types_all")
def schema_types_all() -> dict[str, Any]:
    return {n: json_schema(s) for n, s in sorted(SCHEMAS.items())}
