"""Bearer tokens with per-datastack permissions, and the FastAPI dependencies that check them.

A token is a random string shown once at creation; only its sha256 is stored (table
``matengine.tokens``), so a leaked database does not leak usable tokens. Each token grants one
permission on one datastack, or on every datastack (``"*"``). Permissions are ordered:
``admin`` ⊃ ``edit`` ⊃ ``view``.

caveclient sends the token as ``Authorization: Bearer <token>`` and as the cookie
``middle_auth_token``; both are read here.

Auth can be switched off for a demo bound to loopback only: :func:`principal_from_request`
then refuses any request that did not arrive on a loopback address, so a server that was
exposed by mistake still answers nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from matengine.db import metadata as m
from matengine.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from matengine.timeutil import utcnow

PERMISSIONS = ("view", "edit", "admin")
_RANK = {p: i + 1 for i, p in enumerate(PERMISSIONS)}
ALL_DATASTACKS = "*"
TOKEN_PREFIX = "me_"
COOKIE_NAME = "middle_auth_token"
# path parameter names under which routes carry a datastack (ours and the admin router's)
DATASTACK_PARAMS = ("datastack_name", "datastack", "ds")


def check_permission(permission: str) -> str:
    if permission not in _RANK:
        raise InvalidInput(f"unknown permission {permission!r}; use one of {', '.join(PERMISSIONS)}")
    return permission


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id and its one grant (or everything, when auth is off), and
    the user it speaks for with the user's groups (table permissions are decided on these)."""

    token_id: int | None
    datastack: str
    permission: str
    auth_disabled: bool = False
    user_id: int | None = None
    user_name: str | None = None
    groups: frozenset[str] = frozenset()

    @property
    def identity(self) -> str:
        """The name recorded as a table's owner: the user, else the token."""
        if self.user_name is not None:
            return self.user_name
        return "matengine" if self.token_id is None else f"token:{self.token_id}"

    def allows(self, datastack: str, permission: str) -> bool:
        if self.datastack != ALL_DATASTACKS and self.datastack != datastack:
            return False
        return _RANK[self.permission] >= _RANK[check_permission(permission)]

    def require(self, datastack: str, permission: str) -> None:
        """Raise :class:`Forbidden` unless this caller holds ``permission`` on ``datastack``."""
        if not self.allows(datastack, permission):
            where = "every datastack" if datastack == ALL_DATASTACKS else f"datastack {datastack!r}"
            raise Forbidden(f"this token does not grant {permission!r} on {where}")


OPEN_PRINCIPAL = Principal(token_id=None, datastack=ALL_DATASTACKS, permission="admin", auth_disabled=True)


# ------------------------------------------------------------------ users and groups
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")


def _check_user_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _USER_NAME.match(name):
        raise InvalidInput(
            f"invalid {what} {name!r}: up to 128 letters, digits and _.@+-, starting with a letter or digit"
        )
    return name


def ensure_user(conn: Connection, name: str, groups: Iterable[str] = ()) -> int:
    """The id of user ``name`` (created if new), now also a member of ``groups``."""
    _check_user_name(name, "user name")
    wanted = [_check_user_name(g, "group name") for g in groups]
    user_id = conn.execute(
        pg_insert(m.users)
        .values(name=name)
        .on_conflict_do_update(index_elements=["name"], set_={"name": name})
        .returning(m.users.c.id)
    ).scalar_one()
    for group in wanted:
        conn.execute(
            pg_insert(m.user_groups).values(user_id=user_id, group_name=group).on_conflict_do_nothing()
        )
    return int(user_id)


def user_id_of(engine_or_conn: Engine | Connection, name: str) -> int | None:
    stmt = select(m.users.c.id).where(m.users.c.name == name)
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return conn.execute(stmt).scalar_one_or_none()
    return engine_or_conn.execute(stmt).scalar_one_or_none()


def groups_of(engine_or_conn: Engine | Connection, name: str) -> frozenset[str]:
    """The groups of user ``name`` (none for an unknown user or a token owner)."""
    u, g = m.users, m.user_groups
    stmt = select(g.c.group_name).join(u, u.c.id == g.c.user_id).where(u.c.name == name)
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            return frozenset(conn.execute(stmt).scalars())
    return frozenset(engine_or_conn.execute(stmt).scalars())


# ------------------------------------------------------------------ token store
_DURATION = re.compile(r"([0-9]+)\s*([smhdw]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``3600s`` or plain seconds, as a positive timedelta."""
    m = _DURATION.fullmatch(str(text).strip().lower())
    if m is None or int(m.group(1)) <= 0 or len(m.group(1)) > 9:
        raise InvalidInput(
            f"expected a duration such as 90d, 12h, 30m or 3600s, got {text!r}", field="expires_in"
        )
    return timedelta(seconds=int(m.group(1)) * _UNIT[m.group(2)])


def create_token(
    engine: Engine,
    datastack: str,
    permission: str,
    description: str = "",
    *,
    expires_in: timedelta | None = None,
    user: str | None = None,
    groups: Iterable[str] = (),
) -> tuple[int, str]:
    """Store a new token; returns ``(id, token)``. The token itself is never stored.
    With ``expires_in`` it is refused from that long after now on.

    ``user`` (created if new, and added to ``groups``) is who the token speaks for: the owner
    of tables it creates, and whom table permissions are checked against."""
    check_permission(permission)
    if datastack != ALL_DATASTACKS:
        from matengine.catalog import get_datastack

        get_datastack(engine, datastack)
    if groups and user is None:
        raise InvalidInput("groups belong to a user: give --user with --group")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        user_id = ensure_user(conn, user, groups) if user is not None else None
        token_id = conn.execute(
            insert(m.tokens)
            .values(
                token_sha256=hash_token(token),
                datastack=datastack,
                permission=permission,
                description=description,
                expires=utcnow() + expires_in if expires_in is not None else None,
                user_id=user_id,
            )
            .returning(m.tokens.c.id)
        ).scalar_one()
    return int(token_id), token


def list_tokens(engine: Engine, *, include_revoked: bool = False) -> list[dict[str, Any]]:
    t = m.tokens
    u = m.users
    stmt = (
        select(
            t.c.id,
            t.c.datastack,
            t.c.permission,
            t.c.description,
            t.c.created,
            t.c.expires,
            t.c.revoked,
            u.c.name.label("user"),
        )
        .select_from(t.outerjoin(u, u.c.id == t.c.user_id))
        .order_by(t.c.id)
    )
    if not include_revoked:
        stmt = stmt.where(t.c.revoked.is_(None))
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    return [
        {
            **dict(r),
            "created": r["created"].isoformat(),
            "expires": r["expires"].isoformat() if r["expires"] else None,
            "expired": r["expires"] is not None and r["expires"] <= utcnow(),
            "revoked": r["revoked"].isoformat() if r["revoked"] else None,
        }
        for r in rows
    ]


def revoke_token(engine: Engine, token_id: int) -> None:
    with engine.begin() as conn:
        done = conn.execute(
            update(m.tokens)
            .where(m.tokens.c.id == int(token_id), m.tokens.c.revoked.is_(None))
            .values(revoked=utcnow())
        ).rowcount
    if not done:
        raise NotFound(f"no active token with id {token_id}")


@dataclass(frozen=True)
class _TokenRow:
    id: int
    datastack: str
    permission: str
    expires: Any
    user_id: int | None
    user_name: str | None
    groups: frozenset[str]


def _token_row(engine: Engine, token_sha256: str) -> _TokenRow | None:
    t, u = m.tokens, m.users
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.id, t.c.datastack, t.c.permission, t.c.expires, t.c.user_id, u.c.name)
            .select_from(t.outerjoin(u, u.c.id == t.c.user_id))
            .where(t.c.token_sha256 == token_sha256, t.c.revoked.is_(None))
        ).first()
        if row is None:
            return None
        groups = groups_of(conn, row.name) if row.name is not None else frozenset()
    return _TokenRow(row.id, row.datastack, row.permission, row.expires, row.user_id, row.name, groups)


def authenticate(engine: Engine, token: str, *, cached: bool = False) -> Principal:
    """The principal of ``token``; :class:`Unauthorized` if unknown, revoked or expired.

    ``cached``: read the token through :mod:`matengine.metadata_cache` (the API's requests);
    its expiry is checked at every use all the same."""
    digest = hash_token(token)
    if cached:
        from matengine import metadata_cache

        row = metadata_cache.cached(engine, ("token", digest), lambda: _token_row(engine, digest))
    else:
        row = _token_row(engine, digest)
    return _principal_of(row)


def _principal_of(row: _TokenRow | None) -> Principal:
    if row is None or row.permission not in _RANK:
        raise Unauthorized("unknown or revoked token")
    if row.expires is not None and row.expires <= utcnow():
        raise Unauthorized("token expired: create a new one with 'matengine token create'")
    return Principal(
        token_id=row.id,
        datastack=row.datastack,
        permission=row.permission,
        user_id=row.user_id,
        user_name=row.user_name,
        groups=row.groups,
    )


# ------------------------------------------------------------------ requests
def token_from_request(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = request.cookies.get(COOKIE_NAME)
    return cookie or None


def _bearer(request: Request) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(value.strip())


_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# POSTs that only read (queries carry their filters in a body; the chunkedgraph routes too):
# another site cannot read their answers, so they are no state change to guard
_READ_ONLY_POSTS = re.compile(r"/materialize/.+/query|/segmentation/.+")


def check_same_origin(request: Request, *, ambient: bool) -> None:
    """CSRF: a state change whose credentials a browser adds by itself (a cookie, or no
    token at all on a loopback server without auth) must come from a page of this server:
    its ``Origin`` (else ``Referer``) must name our own host. A foreign origin is refused;
    so is a cookie-authenticated change that names no origin at all. Bearer-token calls
    (caveclient, scripts) cannot be forged by another site and are not checked."""
    if request.method.upper() not in _UNSAFE_METHODS or not ambient:
        return
    if request.method.upper() == "POST" and _READ_ONLY_POSTS.fullmatch(request.url.path):
        return
    origin = request.headers.get("origin") or request.headers.get("referer")
    own = request.headers.get("host", "").lower()
    if origin == "null":  # sandboxed frames and some redirects: never our own page
        raise Forbidden("cross-site request refused: the Origin is not this server")
    if origin is None:
        if request.cookies.get(COOKIE_NAME) and not _bearer(request):
            raise Forbidden(
                "cross-site request refused: a cookie-authenticated change must send an Origin "
                "header of this server (or use 'Authorization: Bearer <token>')"
            )
        return
    if urlsplit(origin).netloc.lower() != own:
        raise Forbidden("cross-site request refused: the Origin is not this server")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def principal_from_request(request: Request) -> Principal:
    """Authenticate the request (cached on it, so several dependencies cost one lookup)."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    app_state = request.app.state
    if not getattr(app_state, "auth_enabled", True):
        # auth off is only for a loopback-bound demo: refuse anything that reached us otherwise
        server = request.scope.get("server") or (None, None)
        client = request.scope.get("client") or (None, None)
        if not (is_loopback(server[0]) and is_loopback(client[0])):
            raise Forbidden("auth is disabled on this server, so it answers loopback requests only")
        check_same_origin(request, ambient=True)
        principal = OPEN_PRINCIPAL
    else:
        token = token_from_request(request)
        if not token:
            raise Unauthorized(
                "no token: send 'Authorization: Bearer <token>' (create one with 'matengine token create')"
            )
        principal = authenticate(app_state.engine, token, cached=True)
        check_same_origin(request, ambient=not _bearer(request))
    request.state.principal = principal
    return principal


def known_principal(request: Request) -> Principal | None:
    """The request's principal if it can be had without a database read (auth off, or the
    token in :mod:`matengine.metadata_cache`); None when it must be read. Refusals (an
    expired token, a foreign origin) are raised as by :func:`principal_from_request`."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    app_state = request.app.state
    if not getattr(app_state, "auth_enabled", True):
        return principal_from_request(request)  # no database read either
    token = token_from_request(request)
    if not token:
        return None
    from matengine import metadata_cache

    found, row = metadata_cache.peek(app_state.engine, ("token", hash_token(token)))
    if not found:
        return None
    principal = _principal_of(row)
    check_same_origin(request, ambient=not _bearer(request))
    request.state.principal = principal
    return principal


def datastack_from_path(request: Request, param: str | None = None) -> str | None:
    params = request.path_params
    if param is not None:
        return params.get(param)
    for name in DATASTACK_PARAMS:
        if name in params:
            return str(params[name])
    return None


def get_principal(request: Request) -> Principal:
    """Dependency: the authenticated caller, without any permission check."""
    return principal_from_request(request)


def require_permission(
    permission: str, *, datastack_param: str | None = None
) -> Callable[[Request], Awaitable[Principal]]:
    """Dependency factory: ``Depends(require_permission("admin"))``.

    The datastack is read from the route's path (``datastack_param``, else the first of
    ``datastack_name``/``datastack``/``ds`` present). A route without one needs the
    permission on every datastack (a ``"*"`` token): the safe default for global routes.
    Handlers that learn the datastack from the body check it with ``principal.require``.
    """
    check_permission(permission)

    async def dependency(request: Request) -> Principal:
        # on the event loop when the caller is known already (no trip to a worker thread)
        principal = known_principal(request)
        if principal is None:
            principal = await run_in_threadpool(principal_from_request, request)
        datastack = datastack_from_path(request, datastack_param)
        principal.require(datastack or ALL_DATASTACKS, permission)
        return principal

    return dependency
