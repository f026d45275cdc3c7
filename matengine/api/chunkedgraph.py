"""Chunkedgraph routes for every datastack (caveclient sends them to ``local_server``).

* ``local://`` and ``precomputed://`` sources: answered here by the segmentation package's
  PyChunkedGraph-compatible router (:func:`matengine.segmentation.server.make_pcg_router`).
* ``graphene://`` sources on another host: proxied there, streaming both ways, with the
  server's own ``settings.segmentation_token`` (never the caller's matengine token, which
  the remote server must not see).

Both need ``view`` on a datastack using that chunkedgraph table. The version routes
(``/segmentation/api/version(s)``) describe the server, not data, and are public.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from matengine import catalog
from matengine.api.info import pcg_names
from matengine.auth import Forbidden, Principal, principal_from_request
from matengine.catalog import Datastack
from matengine.errors import Conflict, MatengineError
from matengine.query import graphs
from matengine.segmentation import Segmentation

_TABLE = re.compile(r"^/segmentation/(?:api/v1/table|table)/([^/]+)(?:/|$)")
# PyChunkedGraph routes that change the graph: proxied only for callers with ``edit``
_EDIT_ROUTES = re.compile(r"/(?:merge|merge_admin|split|undo|redo|rollback_user)$")
# hop-by-hop headers and those httpx/uvicorn set themselves
_DROP = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "te",
    "trailer",
    "authorization",
    "cookie",
}


_CACHE_SECONDS = 2.0
_cache: dict[int, tuple[float, list[Datastack]]] = {}
_cache_lock = threading.Lock()


def _datastacks_using(engine: Any, name: str, *, fresh: bool = False) -> list[Datastack]:
    # every chunkedgraph call asks this (often several times): read the small datastacks
    # table at most every couple of seconds per engine
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(id(engine))
    if not fresh and hit is not None and now - hit[0] <= _CACHE_SECONDS:
        found = [d for d in hit[1] if name in pcg_names(d)]
        if found:  # a miss is re-read at once: a datastack added a moment ago must work
            return found
    listed = catalog.list_datastacks(engine)
    with _cache_lock:
        _cache[id(engine)] = (now, listed)
    return [d for d in listed if name in pcg_names(d)]


def _require(
    engine: Any, principal: Principal, name: str, permission: str, *, fresh: bool = False
) -> list[Datastack]:
    """The datastacks using table ``name``; raise unless the caller holds ``permission`` on
    one of them. A refusal is re-checked against a fresh read: the cached list may predate a
    datastack (and its tokens) added a moment ago."""
    found = _datastacks_using(engine, name, fresh=fresh)
    if not fresh and found and not any(principal.allows(d.name, permission) for d in found):
        found = _datastacks_using(engine, name, fresh=True)
    if found and not any(principal.allows(d.name, permission) for d in found):
        # name only what the caller named: which datastacks use the table is not theirs to learn
        raise Forbidden(f"this token does not grant {permission!r} on chunkedgraph table {name!r}")
    return found


def make_router(app: FastAPI) -> APIRouter:
    """The PCG router over our local/flat datastacks, with the permission check added."""
    from matengine.segmentation.server import make_pcg_router

    def resolve(name: str) -> Segmentation:
        settings = app.state.settings
        for d in _datastacks_using(app.state.engine, name):
            if not d.segmentation_source.startswith("graphene://"):
                return graphs.segmentation(d.segmentation_source, settings.segmentation_token)
        raise KeyError(name)

    def check(request: Request) -> None:
        name = request.path_params.get("name")
        if name is None:
            return
        _require(app.state.engine, principal_from_request(request), name, "view")

    def editor(request: Request, name: str) -> int:
        # proofreading needs ``edit`` on a datastack using the table; the token id is the
        # user recorded in the edit log (0 when auth is off)
        principal = principal_from_request(request)
        found = _require(app.state.engine, principal, name, "edit", fresh=True)  # edits are rare
        # an edit must reach one graph: two datastacks whose different local graphs share
        # a table name (the URL's last component) cannot be told apart by PCG routes
        if (
            len({d.segmentation_source for d in found if not d.segmentation_source.startswith("graphene://")})
            > 1
        ):
            raise Conflict(f"several segmentation sources are named {name!r}: rename one graph directory")
        return int(principal.token_id or 0)

    router = APIRouter()
    router.include_router(make_pcg_router(resolve, editor=editor), dependencies=[Depends(check)])
    return router


class GrapheneProxy:
    """ASGI middleware: ``/segmentation/…/table/<name>/…`` of a graphene datastack is
    forwarded to its server; everything else goes on to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.client: httpx.AsyncClient | None = None

    def _remote(self, engine: Any, name: str) -> tuple[list[Datastack], str] | None:
        from matengine.segmentation.graphene import parse_graphene_url

        found = _datastacks_using(engine, name)
        remote = [d for d in found if d.segmentation_source.startswith("graphene://")]
        if not remote or len(remote) != len(found):
            return None
        base, _ = parse_graphene_url(remote[0].segmentation_source)
        return remote, base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _TABLE.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        app = scope["app"]
        remote = await run_in_threadpool(self._remote, app.state.engine, match.group(1))
        if remote is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response: Response
        try:
            principal = await run_in_threadpool(principal_from_request, request)
            needed = "edit" if _EDIT_ROUTES.search(scope["path"]) else "view"
            await run_in_threadpool(_require, app.state.engine, principal, match.group(1), needed)
            response = await self._forward(request, remote[1], app.state.settings)
        except MatengineError as exc:
            response = JSONResponse(
                {"message": str(exc), "error": type(exc).__name__}, status_code=exc.status_code
            )
        except httpx.HTTPError:
            response = JSONResponse(
                {"message": "chunkedgraph server unreachable", "error": "BadGateway"}, status_code=502
            )
        await response(scope, receive, send)

    async def _forward(self, request: Request, base: str, settings: Any) -> StreamingResponse:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=httpx.Timeout(300.0, connect=10.0))
        token = settings.segmentation_token
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        if token:
            headers["authorization"] = f"Bearer {token}"
            headers["cookie"] = f"middle_auth_token={token}"
        url = base + request.url.path
        upstream_request = self.client.build_request(
            request.method,
            url,
            params=list(request.query_params.multi_items()),
            headers=headers,
            content=request.stream(),
        )
        upstream = await self.client.send(upstream_request, stream=True)
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP}
        return StreamingResponse(
            upstream.aiter_raw(),
            status_code=upstream.status_code,
            headers=out_headers,
            background=BackgroundTask(upstream.aclose),
        )
