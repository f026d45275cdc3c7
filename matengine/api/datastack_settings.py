"""Admin routes for a datastack's settings beyond its schedule: the info fields served to
Neuroglancer and caveclient (image source, viewer site, skeleton source, synapse and soma
tables, description) and the live schedule (periodic ingest + update-roots, no version).
Datastack ``admin`` only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from matengine import catalog
from matengine.api.deps import engine_of
from matengine.auth import require_permission

router = APIRouter(prefix="/admin/api/v1", tags=["admin"])
ADMIN = Depends(require_permission("admin"))
_URL = Field(default=None, max_length=2048)


class InfoRequest(BaseModel):
    """Fields to set; ``""`` clears one, an absent one stays as it is."""

    model_config = ConfigDict(extra="forbid")
    image_source: str | None = _URL
    viewer_site: str | None = _URL
    skeleton_source: str | None = _URL
    synapse_table: str | None = Field(default=None, max_length=63)
    soma_table: str | None = Field(default=None, max_length=63)
    description: str | None = Field(default=None, max_length=10_000)


class LiveScheduleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    live_schedule: str | None = Field(default=None, max_length=200)


@router.put("/datastack/{datastack}/info", dependencies=[ADMIN])
def set_info(datastack: str, body: InfoRequest, request: Request) -> dict[str, Any]:
    fields = body.model_dump(exclude={"description"})
    return catalog.set_datastack_info(
        engine_of(request), datastack, description=body.description, **fields
    ).to_dict()


@router.put("/datastack/{datastack}/live_schedule", dependencies=[ADMIN])
def set_live_schedule(datastack: str, body: LiveScheduleRequest, request: Request) -> dict[str, Any]:
    from matengine.workflows.schedule import parse_schedule

    if body.live_schedule:
        parse_schedule(body.live_schedule)
    return catalog.set_live_schedule(engine_of(request), datastack, body.live_schedule).to_dict()
