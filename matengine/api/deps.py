"""What every route needs: the engine, the settings, our own base URL, boolean query flags,
and the errors mapped to HTTP."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from matengine.config import Settings
from matengine.errors import MatengineError, SegmentationError

log = logging.getLogger("matengine.api")


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def base_url(request: Request) -> str:
    """Our own origin as the caller reached it (what caveclient must use as local_server)."""
    return str(request.base_url).rstrip("/")


def flag(value: str | bool | None, default: bool = False) -> bool:
    """caveclient sends booleans as ``True``/``False`` (requests' str of a bool)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return value.strip().lower() in ("1", "true", "t", "yes", "y")


def _error(status: int, message: str, kind: str) -> JSONResponse:
    # caveclient shows "message" of 5xx answers and the raw content of 4xx ones
    return JSONResponse({"message": message, "error": kind}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MatengineError)
    async def _matengine_error(request: Request, exc: MatengineError) -> JSONResponse:
        headers = {}
        response = _error(exc.status_code, str(exc), type(exc).__name__)
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="matengine"'
            response.headers.update(headers)
        return response

    @app.exception_handler(SegmentationError)
    async def _segmentation_error(request: Request, exc: SegmentationError) -> JSONResponse:
        # the segmentation source (a chunkedgraph server, a graph on disk) failed us
        return _error(502, f"segmentation source: {exc}", type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg')}")
        return _error(422, "; ".join(parts) or "invalid request", "InvalidInput")
