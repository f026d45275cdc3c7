"""The FastAPI application: caveclient-compatible routes (info, schema, materialize,
annotation, chunkedgraph), the admin routes when present, OpenAPI at ``/docs``.

Mounted:

==================================  ==============================================
``/info/...``                       :mod:`matengine.api.info`
``/schema/...``                     :mod:`matengine.api.schema_service`
``/materialize/...`` (v2, v3)       :mod:`matengine.api.materialize`
``/annotation/api/v2/...``          :mod:`matengine.api.annotation`
``/segmentation/...``               :mod:`matengine.api.chunkedgraph` (local graphs served,
                                    graphene sources proxied)
``/admin/...``                      :mod:`matengine.api.admin` (if importable)
``/neuroglancer/...``               :mod:`matengine.api.neuroglancer` (annotation
                                    sources of version tables)
``/`` and ``/dashboard/...``        :mod:`matengine.api.dashboard`
``/metrics``                        :mod:`matengine.api.metrics`
``/health/...``                     :mod:`matengine.api.health` (no token)
``/docs``, ``/openapi.json``        FastAPI
==================================  ==============================================

Trailing-slash redirects are off: caveclient treats any redirect as a failed login.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from sqlalchemy import Engine

from matengine.api import (
    annotation,
    chunkedgraph,
    dashboard,
    datastack_settings,
    health,
    info,
    materialize,
    metrics,
    neuroglancer,
    schema_service,
)
from matengine.api.body_limit import BodyLimit
from matengine.api.deps import install_error_handlers
from matengine.api.server_timing import ServerTiming
from matengine.config import Settings, get_settings

log = logging.getLogger("matengine.api")


def _version() -> str:
    try:
        return version("matengine")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def create_app(
    settings: Settings | None = None, *, auth_enabled: bool = True, engine: Engine | None = None
) -> FastAPI:
    """Build the app. ``auth_enabled=False`` makes it answer loopback requests only."""
    settings = settings or get_settings()
    if engine is None:
        from matengine.db.connection import get_engine, resolve_database_url

        engine = get_engine(resolve_database_url(settings))
    app = FastAPI(
        title="matengine",
        version=_version(),
        description="Materialization engine for connectomics: caveclient-compatible API.",
        docs_url="/docs",
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.auth_enabled = auth_enabled
    if not auth_enabled:
        log.warning("auth is OFF: every loopback caller is admin; non-loopback requests are refused")
    install_error_handlers(app)
    app.include_router(info.router)
    app.include_router(schema_service.router)
    app.include_router(materialize.router)
    app.include_router(annotation.router)
    app.include_router(chunkedgraph.make_router(app), tags=["chunkedgraph"])
    try:  # the admin routes are written alongside; optional until they land
        admin = importlib.import_module("matengine.api.admin")
    except ModuleNotFoundError as exc:
        if exc.name != "matengine.api.admin":
            raise
    else:
        app.include_router(admin.router)
    app.include_router(neuroglancer.router)
    app.include_router(datastack_settings.router)
    app.include_router(dashboard.router)
    app.include_router(metrics.make_router(app))
    app.include_router(health.router)
    app.add_middleware(chunkedgraph.GrapheneProxy)
    app.add_middleware(neuroglancer.NeuroglancerCors)
    # outermost: every body is bounded before anything (the proxy included) reads it
    app.add_middleware(BodyLimit)
    # the server's own time per request, measured around everything else
    app.add_middleware(ServerTiming)
    return app
