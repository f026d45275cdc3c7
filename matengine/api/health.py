"""Health probes: ``/health/live``, ``/health/ready`` and ``/health/ready/{service}``.

* ``live``: the process answers (restart it if not). Touches nothing else.
* ``ready``: every part the deployment needs is up — the metadata database, the broker (when
  one is configured) and at least one live worker on the queue (a heartbeat in ``workers``
  within ``worker_dead_after`` seconds; without a broker the in-process worker is this server).
  503 otherwise, in the API's error shape, saying which part is down.
* ``ready/{service}``: the same for one API service, naming only the parts it depends on, so a
  ``/materialize`` that cannot answer says why (its database) while queries of a deployment
  whose workers are down still count as ready.

No token is needed; the answers name parts and states only, never URLs, hosts or error texts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select, text
from starlette.concurrency import run_in_threadpool

from matengine.api.deps import engine_of, settings_of
from matengine.config import Settings
from matengine.db import metadata as m

CHECK_TIMEOUT = 3.0  # seconds per component; a probe must answer before its caller gives up

# which components each service needs
SERVICES: dict[str, tuple[str, ...]] = {
    "info": ("database",),
    "schema": (),
    "materialize": ("database",),
    "annotation": ("database",),
    "segmentation": ("database",),
    "admin": ("database",),
    "workflows": ("database", "broker", "workers"),
}

router = APIRouter(prefix="/health", tags=["operations"])


@dataclass(frozen=True)
class Component:
    up: bool
    reason: str | None = None  # a fixed phrase: never an exception's text

    def to_dict(self) -> dict[str, Any]:
        return {"status": "up" if self.up else "down"} | ({"reason": self.reason} if self.reason else {})


def _database(engine: Engine) -> Component:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT set_config('statement_timeout', '2000', false)"))
            conn.execute(select(m.workers.c.name).limit(1))  # our schema is there, not just a server
            conn.rollback()
        return Component(True)
    except Exception:
        return Component(False, "unreachable")


def _broker(settings: Settings) -> Component:
    if not settings.broker_url:
        return Component(True, "none configured: workflows run in-process")
    from matengine.workflows.celery_app import client

    try:
        with client(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT)
        return Component(True)
    except Exception:
        return Component(False, "unreachable")


def _workers(engine: Engine, settings: Settings, database: Component) -> Component:
    if not settings.broker_url:
        return Component(True, "in-process")
    if not database.up:
        return Component(False, "unknown: the database is down")
    from matengine.workflows.leases import live_workers

    try:
        with engine.connect() as conn:
            names = live_workers(conn, settings.queue, settings)
    except Exception:
        return Component(False, "unknown: the database is down")
    if not names:
        return Component(False, "no live worker on the queue")
    return Component(True, f"{len(names)} live")


async def _timed(fn: Any, *args: Any) -> Component:
    try:
        return await asyncio.wait_for(run_in_threadpool(fn, *args), CHECK_TIMEOUT + 1)
    except TimeoutError:
        return Component(False, "no answer in time")


async def components(request: Request, needed: tuple[str, ...]) -> dict[str, Component]:
    engine, settings = engine_of(request), settings_of(request)
    out: dict[str, Component] = {}
    if "database" in needed or "workers" in needed:
        out["database"] = await _timed(_database, engine)
    if "broker" in needed:
        out["broker"] = await _timed(_broker, settings)
    if "workers" in needed:
        out["workers"] = await _timed(_workers, engine, settings, out["database"])
    return {k: out[k] for k in needed if k in out}


def _answer(what: str, parts: dict[str, Component], **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"components": {k: c.to_dict() for k, c in parts.items()}, **extra}
    down = [k for k, c in parts.items() if not c.up]
    if not down:
        return JSONResponse({"status": "ready", **body})
    message = f"{what} not ready: {', '.join(down)} down"
    return JSONResponse({"message": message, "error": "NotReady", **body}, status_code=503)


@router.get("/live", summary="The process answers")
def live() -> dict[str, str]:
    return {"status": "live"}


@router.get("/ready", summary="Database, broker and workers are up (503 and which part if not)")
async def ready(request: Request) -> JSONResponse:
    parts = await components(request, ("database", "broker", "workers"))
    services = {name: "up" if all(parts[n].up for n in needs) else "down" for name, needs in SERVICES.items()}
    return _answer("matengine", parts, services=services)


@router.get("/ready/{service}", summary="One API service is ready (503 and which part if not)")
async def service_ready(service: str, request: Request) -> JSONResponse:
    needs = SERVICES.get(service)
    if needs is None:
        known = ", ".join(SERVICES)
        return JSONResponse({"message": f"unknown service; known: {known}", "error": "NotFound"}, 404)
    return _answer(service, await components(request, needs))
