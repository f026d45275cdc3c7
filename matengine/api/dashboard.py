"""The web dashboard at ``/``: datastacks, tables (live row counts, age of their roots),
versions, workflow runs with live progress, and two charts.

The page is a server-rendered shell (``templates/``) with the first state embedded as JSON;
``static/dashboard.js`` renders it and polls ``/dashboard/api/state`` about once a second.
No build step, no CDN: three small static files.

Auth: the same bearer tokens as the API. A browser logs in by posting a token to
``/dashboard/login``, which checks it and stores it in the ``middle_auth_token`` cookie
(HttpOnly, SameSite=Lax) that every route already accepts. Without a valid token the page is
the login form and nothing else; with one, only datastacks the token may ``view`` are shown
(run error texts need ``admin``). With auth off (loopback only) everything is shown.
"""

from __future__ import annotations

import html
import json
import threading
import time
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection, Engine, select, text

from matengine import catalog
from matengine.api.deps import base_url, engine_of
from matengine.auth import (
    ALL_DATASTACKS,
    COOKIE_NAME,
    Forbidden,
    Principal,
    Unauthorized,
    authenticate,
    check_same_origin,
    get_principal,
    principal_from_request,
)
from matengine.db import metadata as m
from matengine.errors import MatengineError
from matengine.timeutil import utcnow
from matengine.versions import list_versions
from matengine.workflows import runs as runs_mod

router = APIRouter(tags=["dashboard"])

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
COOKIE_MAX_AGE = 7 * 24 * 3600
RUN_LIMIT = 30
# exact counts below this many rows (estimated by the planner); above, the planner's estimate
EXACT_COUNT_LIMIT = 2_000_000
COUNT_TTL = 2.0  # seconds a table's count is reused (many open tabs cost one count)
COUNT_TIMEOUT_MS = 2000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# ------------------------------------------------------------------ state
def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _age(value: datetime | None, now: datetime) -> float | None:
    return round((now - value).total_seconds(), 1) if value else None


class RowCounts:
    """Live row counts, cached briefly: exact for small tables, the planner's estimate for big
    ones (a ``count(*)`` of 300M rows every second would be a load of its own)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, int | None, bool]] = {}
        self._lock = threading.Lock()

    def get(self, conn: Connection, table: catalog.AnnotationTable) -> tuple[int | None, bool]:
        key = table.names.live_q
        with self._lock:
            hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < COUNT_TTL:
            return hit[1], hit[2]
        count, exact = self._count(conn, key)
        with self._lock:
            self._cache[key] = (time.monotonic(), count, exact)
        return count, exact

    @staticmethod
    def _count(conn: Connection, table_q: str) -> tuple[int | None, bool]:
        estimate = conn.execute(
            text("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(:t)"),
            {"t": table_q},
        ).scalar()
        if estimate is not None and estimate >= EXACT_COUNT_LIMIT:
            return int(estimate), False
        timeout = "SELECT set_config('statement_timeout', :v, true)"
        previous = conn.execute(text("SELECT current_setting('statement_timeout')")).scalar_one()
        try:
            with conn.begin_nested():  # a timeout rolls back to here, the setting with it
                conn.execute(text(timeout), {"v": str(COUNT_TIMEOUT_MS)})
                n = conn.execute(text(f"SELECT count(*) FROM {table_q} WHERE deleted IS NULL")).scalar_one()
                conn.execute(text(timeout), {"v": previous})
            return int(n), True
        except Exception:  # a timeout (or a table dropped meanwhile): show the estimate
            return (int(estimate) if estimate is not None and estimate >= 0 else None), False


def _run_dict(run: runs_mod.Run, principal: Principal, now: datetime) -> dict[str, Any]:
    d = run.to_dict()
    params = d.pop("parameters") or {}
    d["timestamp"] = params.get("timestamp")
    d["error_count"] = len(run.errors)
    if not principal.allows(run.datastack or ALL_DATASTACKS, "admin"):
        d["errors"] = []  # error texts can name files and hosts: admins only
    else:
        d["errors"] = run.errors[-5:]
    d["progress"] = (
        round(run.chunks_done / run.chunks_total, 4)
        if run.chunks_total
        else (1.0 if run.state == "SUCCESS" else 0.0)
    )
    d["eta_seconds"] = None
    if run.state == "RUNNING" and run.started and 0 < run.chunks_done < run.chunks_total:
        elapsed = (now - run.started).total_seconds()
        d["eta_seconds"] = round(elapsed / run.chunks_done * (run.chunks_total - run.chunks_done), 1)
    return d


def _runs(
    conn: Connection, principal: Principal, visible: list[str], limit: int, now: datetime
) -> list[dict[str, Any]]:
    wr = m.workflow_runs
    stmt = select(wr).order_by(wr.c.id.desc()).limit(limit)
    if principal.datastack != ALL_DATASTACKS:
        stmt = stmt.where(wr.c.datastack.in_(visible))
    out = []
    for r in conn.execute(stmt).all():
        if r.state in runs_mod.ACTIVE:  # progress lives in the chunk markers
            run = runs_mod.get_run(conn, r.id)
        else:  # finish_run stored the final counts on the row
            run = runs_mod.run_from_row(r)
        out.append(_run_dict(run, principal, now))
    return out


def dashboard_state(
    engine: Engine,
    principal: Principal,
    counts: RowCounts,
    run_limit: int = RUN_LIMIT,
    base: str | None = None,
) -> dict[str, Any]:
    """Everything the page shows, restricted to what ``principal`` may view."""
    now = utcnow()
    stacks = [d for d in catalog.list_datastacks(engine) if principal.allows(d.name, "view")]
    visible = [d.name for d in stacks]
    datastacks = []
    with engine.connect() as conn:
        for ds in stacks:
            tables = []
            for t in catalog.list_tables(engine, ds.name):
                rows, exact = counts.get(conn, t)
                tables.append(
                    {
                        "name": t.table_name,
                        "schema": t.schema_type,
                        "rows": rows,
                        "rows_exact": exact,
                        "description": t.description,
                        "last_modified": _iso(t.last_modified),
                        "roots_last_updated": _iso(t.roots_last_updated),
                        "roots_age_seconds": _age(t.roots_last_updated, now),
                    }
                )
            datastacks.append(
                {
                    "name": ds.name,
                    "description": ds.description,
                    "segmentation_source": ds.segmentation_source,
                    "voxel_resolution": list(ds.voxel_resolution),
                    "schedule": ds.schedule,
                    "days_to_expire": ds.days_to_expire,
                    "tables": tables,
                }
            )
        run_list = _runs(conn, principal, visible, run_limit, now)
    versions = []
    for v in list_versions(engine):
        if v.datastack not in visible:
            continue
        d = v.to_dict()
        d["build_seconds"] = round((v.finished - v.created).total_seconds(), 2) if v.finished else None
        d["expires_in_seconds"] = round((v.expires_on - now).total_seconds(), 1) if v.expires_on else None
        if base is not None and v.queryable:  # each table as a Neuroglancer state
            from matengine.api.neuroglancer import version_links

            d["neuroglancer"] = version_links(engine, base, v.datastack, v.version)
        versions.append(d)
    versions.sort(key=lambda v: (v["datastack"], -v["version"]))
    return {
        "now": now.isoformat(),
        "auth": {
            "enabled": not principal.auth_disabled,
            "datastack": principal.datastack,
            "permission": principal.permission,
        },
        "datastacks": datastacks,
        "versions": versions,
        "runs": run_list,
    }


def _counts(request: Request) -> RowCounts:
    state = request.app.state
    if not isinstance(getattr(state, "dashboard_counts", None), RowCounts):
        state.dashboard_counts = RowCounts()
    return state.dashboard_counts


# ------------------------------------------------------------------ pages
def _page(name: str, status: int = 200, **values: str) -> HTMLResponse:
    body = Template((TEMPLATES / name).read_text(encoding="utf-8")).substitute(values)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def _login_page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    response = _page("login.html", status, error=message)
    if error and request.cookies.get(COOKIE_NAME):
        response.delete_cookie(COOKIE_NAME, path="/")
    return response


def _who(principal: Principal) -> str:
    if principal.auth_disabled:
        return "auth off (loopback only): everything is shown"
    where = "all datastacks" if principal.datastack == ALL_DATASTACKS else principal.datastack
    return f"token {principal.token_id}: {principal.permission} on {where}"


def _embed(data: Any) -> str:
    """JSON safe inside a <script type="application/json"> element."""
    return (
        json.dumps(data, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard(request: Request) -> Response:
    try:
        principal = principal_from_request(request)
    except Unauthorized as exc:
        has_token = bool(request.headers.get("authorization") or request.cookies.get(COOKIE_NAME))
        return _login_page(request, str(exc) if has_token else "", 401 if has_token else 200)
    except Forbidden as exc:  # auth off, reached from outside loopback
        return HTMLResponse(
            f"<!doctype html><title>matengine</title><p>{html.escape(str(exc))}</p>",
            status_code=403,
            headers=SECURITY_HEADERS,
        )
    state = dashboard_state(engine_of(request), principal, _counts(request), base=base_url(request))
    logout = (
        ""
        if principal.auth_disabled
        else '<form method="post" action="/dashboard/logout" class="logout">'
        '<button type="submit">Log out</button></form>'
    )
    return _page("dashboard.html", who=html.escape(_who(principal)), logout=logout, state=_embed(state))


@router.get("/dashboard/api/state", summary="Everything the dashboard shows, as JSON")
def state(request: Request, runs: int = RUN_LIMIT, principal: Principal = Depends(get_principal)) -> Response:
    data = dashboard_state(
        engine_of(request), principal, _counts(request), max(1, min(int(runs), 500)), base=base_url(request)
    )
    return Response(
        json.dumps(data, default=str), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


@router.post("/dashboard/login", include_in_schema=False)
async def login(request: Request) -> Response:
    if not getattr(request.app.state, "auth_enabled", True):
        return RedirectResponse("/", status_code=303)
    # another site must not log the browser in with a token of its choosing (login CSRF)
    check_same_origin(request, ambient=True)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    if not token:
        return _login_page(request, "enter a token", 401)
    try:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(authenticate, engine_of(request), token)
    except MatengineError as exc:
        return _login_page(request, str(exc), 401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/dashboard/logout", include_in_schema=False)
def logout() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/")
    return response


@router.get("/dashboard/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    if name not in STATIC_FILES:
        return Response("not found", status_code=404)
    return FileResponse(STATIC / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})
