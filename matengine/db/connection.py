"""Which PostgreSQL we talk to, and the engine that talks to it.

``MATENGINE_DATABASE_URL`` set: that server, never an embedded one. Unset: the embedded server
in ``MATENGINE_HOME`` is started (or reused). Either way the metadata schema is migrated once
per process before first use.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import PoolProxiedConnection

from matengine.config import Settings, get_settings

_lock = threading.Lock()
_engines: dict[str, Engine] = {}
# (database URL, config file) pairs whose declared datastacks are in the catalog already: the
# TOML file is read and synced once per process, not on every call (every Celery task calls)
_synced: set[tuple[str, str]] = set()


def sqlalchemy_url(url: str) -> str:
    """``postgresql://…`` → ``postgresql+psycopg://…`` (psycopg 3 on every path)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The URL as psycopg/libpq take it (no SQLAlchemy driver suffix)."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def resolve_database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    from matengine.db import embedded

    return embedded.start(settings.home)


def get_engine(url: str | None = None, settings: Settings | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: from ``settings``, default: the process's
    settings), migrated on first use; datastacks declared in the settings' TOML file exist
    from the first connection on."""
    settings = settings or get_settings()
    url = url or resolve_database_url(settings)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(
                sqlalchemy_url(url),
                # no ping round trip per checkout: _check_alive below costs no round trip
                pool_pre_ping=False,
                pool_size=5,
                max_overflow=10,
                # timestamps come back in UTC whatever the server's default zone; a backend
                # whose client (this process) vanished stops within seconds, even while it
                # computes rows it has not sent yet
                connect_args={"options": "-c timezone=UTC -c client_connection_check_interval=2000"},
            )
            event.listen(engine, "checkout", _check_alive)
            from matengine import metadata_cache

            metadata_cache.watch(engine)
            from matengine.db.migrate import upgrade

            with engine.connect() as conn:
                upgrade(conn)
            _engines[url] = engine
    if settings.config is not None and (url, str(settings.config)) not in _synced:
        declared = settings.datastacks()
        if declared:
            # catalog sits above db/: imported here, at the one call that needs it
            from matengine.catalog import sync_declared_datastacks

            sync_declared_datastacks(engine, declared)
        _synced.add((url, str(settings.config)))
    return engine


def stale(conn: psycopg.Connection) -> bool:
    """Whether an idle pooled connection is unusable, without a round trip to the server.

    An idle session receives nothing unless its server ends it: a restart or
    ``pg_terminate_backend`` sends a FATAL message and closes the socket, which makes the socket
    readable. So a closed or broken connection, or one whose socket has bytes waiting, is
    stale. (A connection that LISTENs can have notifications waiting; none of ours do, and a
    healthy connection judged stale only costs a reconnect.)"""
    if conn.closed or conn.broken:
        return True
    try:
        poller = select.poll()  # not select.select: that fails on descriptors above 1023
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def _check_alive(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout hook: a stale connection is discarded and replaced by a new one (the pool
    retries the checkout on :class:`DisconnectionError`). What dies while in use fails its
    statement once; SQLAlchemy then invalidates the pool, so the next checkout reconnects."""
    if isinstance(dbapi_connection, psycopg.Connection) and stale(dbapi_connection):
        raise DisconnectionError("pooled connection closed by the server")


def dispose_engines(close: bool = True) -> None:
    """Drop pooled connections (after fork, or before stopping a server). After a fork pass
    ``close=False``: the sockets are the parent's too, and closing them would end its sessions."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        _engines.clear()
        _synced.clear()


def driver_connection(conn: Connection | PoolProxiedConnection) -> psycopg.Connection:
    """The psycopg connection under a SQLAlchemy connection (same transaction): the one way
    matengine reaches the driver, for COPY and for SQL that :mod:`matengine.query.sqlbuild`
    writes with psycopg placeholders."""
    pooled = conn.connection if isinstance(conn, Connection) else conn
    driver = pooled.driver_connection
    assert isinstance(driver, psycopg.Connection)
    return driver


@contextmanager
def raw_connection(engine: Engine) -> Iterator[psycopg.Connection]:
    """A pooled psycopg connection for COPY and other driver-level work; committed on success."""
    conn = engine.raw_connection()
    try:
        yield driver_connection(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
