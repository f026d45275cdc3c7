"""What every route needs: the engine, the settings, our own base URL, boolean query flags,
and the errors mapped to HTTP."""

from __future__ import annotations

import logging

import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _database_error(exc: BaseException) -> JSONResponse:
    orig = getattr(exc, "orig", exc)
    if isinstance(orig, psycopg.errors.QueryCanceled):
        return _error(503, "the query was cancelled (MATENGINE_QUERY_TIMEOUT)", "QueryTimeout")
    if isinstance(orig, psycopg.errors.DataError):
        # a value PostgreSQL cannot take (out of range, invalid for its type): the
        # caller's input, so a 422; the database's text is logged, not echoed
        log.info("refused by the database: %s", orig)
        return _error(422, "a value in the request is out of range or invalid for its column", "InvalidInput")
    log.error("database error", exc_info=exc)
    return _error(500, "internal error (logged on the server)", "InternalError")


def error_response(exc: BaseException) -> JSONResponse | None:
    """The API's answer to ``exc`` raised outside a route (a streaming response's start);
    None for what is not ours to answer."""
    if isinstance(exc, MatengineError):
        return _error(exc.status_code, str(exc), type(exc).__name__)
    if isinstance(exc, SegmentationError):
        return _error(502, f"segmentation source: {exc}", type(exc).__name__)
    if isinstance(exc, (psycopg.Error, sqlalchemy.exc.DBAPIError)):
        return _database_error(exc)
    return None


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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # routes of the chunkedgraph router and unknown paths: the same shape as ours
        response = _error(exc.status_code, str(exc.detail), "HTTPError")
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(psycopg.Error)
    async def _psycopg_error(request: Request, exc: psycopg.Error) -> JSONResponse:
        return _database_error(exc)

    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    async def _sqlalchemy_error(request: Request, exc: sqlalchemy.exc.DBAPIError) -> JSONResponse:
        return _database_error(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # never a plain-text 500: the API's one error shape, the details in the log
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error (logged on the server)", "InternalError")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg')}")
        return _error(422, "; ".join(parts) or "invalid request", "InvalidInput")
