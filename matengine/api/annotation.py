"""Annotation routes (``/annotation/api/v2/aligned_volume/{av}/...``) as caveclient's
annotation client calls them: tables (list, create, metadata, count) and annotations (post,
update, delete, get), on the live tables through :mod:`matengine.catalog` and
:mod:`matengine.annotations`.

Tables belong to datastacks; an aligned volume is resolved to the datastack holding the
table. Reading needs ``view`` on it, writing ``edit``, and the table's own read/write
permission (:mod:`matengine.table_permissions`); deleting a table or changing its metadata
needs its owner. A deleted table is gone from these routes (its rows stay for old versions).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from matengine import annotations as ann
from matengine import catalog
from matengine.api.deps import engine_of
from matengine.api.info import datastacks_of_aligned_volume
from matengine.api.materialize import table_metadata
from matengine.api.schema_service import known_schema
from matengine.auth import Principal, get_principal
from matengine.db.identifiers import validate_name
from matengine.errors import Conflict, InvalidInput, NotFound, TooLarge
from matengine.immediate_lookup import lookup_after_post
from matengine.table_permissions import Access, allows, require, require_owner

router = APIRouter(tags=["annotation"])
base = "/annotation/api/v2/aligned_volume/{aligned_volume_name}"
MAX_BATCH = 10_000


def _datastack_for(
    request: Request, av: str, principal: Principal, table: str | None, permission: str
) -> str:
    """The datastack of ``av`` holding ``table`` (or the only one, to create a table)."""
    candidates = datastacks_of_aligned_volume(request, av, principal)
    if table is not None:
        engine = engine_of(request)
        holding = []
        for ds in candidates:
            try:
                if catalog.get_table(engine, ds.name, table).deleted is None:
                    holding.append(ds)
            except NotFound:
                pass
        if not holding:
            raise NotFound(f"no table {table!r} in aligned volume {av!r}")
        candidates = holding
    if len(candidates) > 1:
        raise Conflict(
            f"aligned volume {av!r} has several datastacks "
            f"({', '.join(d.name for d in candidates)}); use the materialize or admin "
            "routes of one of them"
        )
    name = candidates[0].name
    principal.require(name, permission)
    return name


def _batch(body: Any, key: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise InvalidInput(f'expected {{"{key}": [...]}}', field=key)
    rows = body[key]
    if len(rows) > MAX_BATCH:
        raise TooLarge(f"at most {MAX_BATCH} {key} per request, got {len(rows)}")
    return rows


@router.get(base + "/table")
def list_tables(
    aligned_volume_name: str, request: Request, principal: Principal = Depends(get_principal)
) -> list[str]:
    engine = engine_of(request)
    out: list[str] = []
    for ds in datastacks_of_aligned_volume(request, aligned_volume_name, principal):
        out += [
            t.table_name
            for t in catalog.list_tables(engine, ds.name)
            if allows(engine, principal, t, Access.READ)
        ]
    return sorted(set(out))


@router.post(base + "/table")
def create_table(
    aligned_volume_name: str,
    request: Request,
    body: dict[str, Any] = Body(...),
    principal: Principal = Depends(get_principal),
) -> PlainTextResponse:
    name = body.get("table_name")
    schema = body.get("schema_type")
    if not isinstance(name, str):
        raise InvalidInput("missing table name", field="table_name")
    validate_name(name, "table name")
    if not isinstance(schema, str):
        raise InvalidInput("missing schema type", field="schema_type")
    known_schema(schema)
    md = body.get("metadata") or {}
    if not isinstance(md, dict):
        raise InvalidInput("expected an object", field="metadata")
    # caveclient sends the reference inside metadata.table_metadata (the field's
    # MetadataSchema); older callers sent table_metadata beside metadata: both are read
    table_md = md.get("table_metadata") or body.get("table_metadata") or {}
    if not isinstance(table_md, dict):
        raise InvalidInput("expected an object", field="table_metadata")
    reference = table_md.get("reference_table")
    if reference is not None and not isinstance(reference, str):
        raise InvalidInput("expected a table name", field="reference_table")
    res = None
    if any(f"voxel_resolution_{a}" in md for a in "xyz"):
        res = [md.get(f"voxel_resolution_{a}") for a in "xyz"]
    ds = _datastack_for(request, aligned_volume_name, principal, None, "edit")
    if reference is not None:
        require(engine_of(request), principal, ds, reference, Access.READ)
    catalog.create_table(
        engine_of(request),
        ds,
        name,
        schema=schema,
        voxel_resolution=res,
        description=_text(md, "description") or "",
        reference_table=reference,
        # the owner is who the token speaks for, never a user_id the body claims
        owner=principal.identity,
        notice_text=_text(md, "notice_text") or None,
        # caveclient's (and the field's) defaults
        read_permission=md.get("read_permission") or "PUBLIC",
        write_permission=md.get("write_permission") or "PRIVATE",
        flat_segmentation_source=_text(md, "flat_segmentation_source"),
    )
    return PlainTextResponse(name)


def _text(md: dict[str, Any], key: str) -> str | None:
    value = md.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput("expected a string", field=key)
    return value


@router.put(base + "/table")
def update_table_metadata(
    aligned_volume_name: str,
    request: Request,
    body: dict[str, Any] = Body(...),
    principal: Principal = Depends(get_principal),
) -> dict[str, Any]:
    """caveclient's ``update_metadata``: the owner changes what the field lets them change;
    answers the table's metadata after the change."""
    name = body.get("table_name")
    md = body.get("metadata")
    if not isinstance(name, str):
        raise InvalidInput("missing table name", field="table_name")
    validate_name(name, "table name")
    if not isinstance(md, dict):
        raise InvalidInput("expected an object", field="metadata")
    ds = _datastack_for(request, aligned_volume_name, principal, name, "edit")
    engine = engine_of(request)
    require_owner(engine, principal, ds, name)
    changes: dict[str, Any] = {}
    for key in (
        "description",
        "notice_text",
        "read_permission",
        "write_permission",
        "flat_segmentation_source",
    ):
        if key in md:
            changes[key] = md[key]
    if "notice_text" in changes and changes["notice_text"] == "":
        changes["notice_text"] = None  # caveclient sends "" for "none"
    if any(f"voxel_resolution_{a}" in md for a in "xyz"):
        changes["voxel_resolution"] = [md.get(f"voxel_resolution_{a}") for a in "xyz"]
    # user_id (ownership) is not changed here: the owner is whoever created the table
    catalog.update_table_metadata(engine, ds, name, **changes)
    return table_metadata(request, ds, name, None)


@router.delete(base + "/table/{table_name}")
def delete_table(
    aligned_volume_name: str, table_name: str, request: Request, principal: Principal = Depends(get_principal)
) -> bool:
    """caveclient's ``delete_table``: a soft delete by the owner (see :func:`catalog.delete_table`)."""
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "edit")
    require_owner(engine_of(request), principal, ds, table_name)
    catalog.delete_table(engine_of(request), ds, table_name)
    return True


@router.get(base + "/table/{table_name}")
def get_table_metadata(
    aligned_volume_name: str, table_name: str, request: Request, principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "view")
    require(engine_of(request), principal, ds, table_name, Access.READ)
    return table_metadata(request, ds, table_name, None)


@router.get(base + "/table/{table_name}/count")
def count(
    aligned_volume_name: str, table_name: str, request: Request, principal: Principal = Depends(get_principal)
) -> int:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "view")
    table = require(engine_of(request), principal, ds, table_name, Access.READ)
    with engine_of(request).connect() as conn:
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM {table.names.live_q} WHERE deleted IS NULL")
            ).scalar_one()
        )


@router.post(base + "/table/{table_name}/annotations")
def post_annotations(
    aligned_volume_name: str,
    table_name: str,
    request: Request,
    body: Any = Body(...),
    principal: Principal = Depends(get_principal),
) -> list[int]:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "edit")
    require(engine_of(request), principal, ds, table_name, Access.WRITE)
    rows = _batch(body, "annotations")
    ids = ann.insert_annotations(engine_of(request), ds, table_name, rows, user_id=principal.user_id)
    lookup_after_post(engine_of(request), ds, table_name, ids)
    return ids


@router.put(base + "/table/{table_name}/annotations")
def update_annotations(
    aligned_volume_name: str,
    table_name: str,
    request: Request,
    body: Any = Body(...),
    principal: Principal = Depends(get_principal),
) -> dict[str, int]:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "edit")
    require(engine_of(request), principal, ds, table_name, Access.WRITE)
    rows = _batch(body, "annotations")
    mapping = ann.update_annotations(engine_of(request), ds, table_name, rows, user_id=principal.user_id)
    lookup_after_post(engine_of(request), ds, table_name, list(mapping.values()))
    return {str(old): new for old, new in mapping.items()}


@router.delete(base + "/table/{table_name}/annotations")
def delete_annotations(
    aligned_volume_name: str,
    table_name: str,
    request: Request,
    body: Any = Body(...),
    principal: Principal = Depends(get_principal),
) -> list[int]:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "edit")
    require(engine_of(request), principal, ds, table_name, Access.WRITE)
    return ann.delete_annotations(engine_of(request), ds, table_name, _batch(body, "annotation_ids"))


def _ids(value: str) -> list[int]:
    try:
        ids = [int(v) for v in value.split(",") if v.strip()]
        if any(not 0 < i < 2**63 for i in ids):
            raise ValueError
    except ValueError:
        raise InvalidInput(
            f"expected comma-separated positive 64-bit integers, got {value[:80]!r}", field="annotation_ids"
        ) from None
    if len(ids) > MAX_BATCH:
        raise TooLarge(f"at most {MAX_BATCH} annotation_ids per request")
    return ids


@router.get(base + "/table/{table_name}/annotations")
def get_annotations(
    aligned_volume_name: str,
    table_name: str,
    request: Request,
    annotation_ids: str = "",
    principal: Principal = Depends(get_principal),
) -> list[dict[str, Any]]:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "view")
    table = require(engine_of(request), principal, ds, table_name, Access.READ)
    posted = table.schema.posted_names()
    seg = {posted.get(c.name, c.name) for c in table.schema.segmentation_columns()}
    out = []
    for row in ann.get_annotations(engine_of(request), ds, table_name, _ids(annotation_ids)):
        # the field's server answers annotation columns only, datetimes as str()
        flat = {k: v for k, v in row.items() if k not in seg}
        flat["created"] = str(flat["created"])
        flat["deleted"] = str(flat["deleted"])
        out.append(flat)
    return out
