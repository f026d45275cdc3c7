"""Annotation routes (``/annotation/api/v2/aligned_volume/{av}/...``) as caveclient's
annotation client calls them: tables (list, create, metadata, count) and annotations (post,
update, delete, get), on the live tables through :mod:`matengine.catalog` and
:mod:`matengine.annotations`.

Tables belong to datastacks; an aligned volume is resolved to the datastack holding the
table. Reading needs ``view`` on it, writing ``edit``.
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
from matengine.auth import Principal, get_principal
from matengine.db.identifiers import validate_name
from matengine.errors import Conflict, InvalidInput, NotFound, TooLarge

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
                catalog.get_table(engine, ds.name, table)
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
        out += [t.table_name for t in catalog.list_tables(engine, ds.name)]
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
    md = body.get("metadata") or {}
    if not isinstance(md, dict):
        raise InvalidInput("expected an object", field="metadata")
    table_md = body.get("table_metadata") or {}
    res = None
    if any(f"voxel_resolution_{a}" in md for a in "xyz"):
        res = [md.get(f"voxel_resolution_{a}") for a in "xyz"]
    ds = _datastack_for(request, aligned_volume_name, principal, None, "edit")
    catalog.create_table(
        engine_of(request),
        ds,
        name,
        schema=schema,
        voxel_resolution=res,
        description=str(md.get("description") or ""),
        reference_table=table_md.get("reference_table") if isinstance(table_md, dict) else None,
        owner=str(md.get("user_id") or body.get("user_id") or f"token:{principal.token_id}"),
        notice_text=md.get("notice_text"),
    )
    return PlainTextResponse(name)


@router.get(base + "/table/{table_name}")
def get_table_metadata(
    aligned_volume_name: str, table_name: str, request: Request, principal: Principal = Depends(get_principal)
) -> dict[str, Any]:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "view")
    return table_metadata(request, ds, table_name, None)


@router.get(base + "/table/{table_name}/count")
def count(
    aligned_volume_name: str, table_name: str, request: Request, principal: Principal = Depends(get_principal)
) -> int:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "view")
    table = catalog.get_table(engine_of(request), ds, table_name)
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
    return ann.insert_annotations(engine_of(request), ds, table_name, _batch(body, "annotations"))


@router.put(base + "/table/{table_name}/annotations")
def update_annotations(
    aligned_volume_name: str,
    table_name: str,
    request: Request,
    body: Any = Body(...),
    principal: Principal = Depends(get_principal),
) -> dict[str, int]:
    ds = _datastack_for(request, aligned_volume_name, principal, table_name, "edit")
    mapping = ann.update_annotations(engine_of(request), ds, table_name, _batch(body, "annotations"))
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
    table = catalog.get_table(engine_of(request), ds, table_name)
    seg = {c.name for c in table.schema.segmentation_columns()}
    out = []
    for row in ann.get_annotations(engine_of(request), ds, table_name, _ids(annotation_ids)):
        # the field's server answers annotation columns only, datetimes as str()
        flat = {k: v for k, v in row.items() if k not in seg}
        flat["created"] = str(flat["created"])
        flat["deleted"] = str(flat["deleted"])
        out.append(flat)
    return out
