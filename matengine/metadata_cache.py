"""A short-lived cache of the rows every API request reads: the caller's token, the table's
permissions, the queried version and its table.

Each request would otherwise spend a round trip to PostgreSQL on each of them, several times
the cost of reading a root's synapses. An entry lives ``MATENGINE_METADATA_CACHE_SECONDS``
(default 1 s; 0 turns the cache off) and is dropped at once when this process changes any row
it caches: every INSERT, UPDATE or DELETE on those tables through an engine of
:func:`matengine.db.connection.get_engine` clears the cache when it runs and again when its
transaction commits (so no reader can keep what it read in between). A change made by another
process (a CLI call, a worker) is seen within the entry's lifetime. Time-dependent checks
(token and version expiry) are made on the cached row at each use, so they hold exactly.

Only the API's request path reads through the cache; workflows and the CLI read the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.sql.dml import UpdateBase

T = TypeVar("T")

# the tables whose rows are cached (by name in the matengine schema)
CACHED_TABLES = frozenset(
    {"tokens", "users", "user_groups", "datastacks", "annotation_tables", "versions", "version_tables"}
)
MAX_ENTRIES = 4096


class MetadataCache:
    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._generation = 0

    def get(self, key: Hashable, load: Callable[[], T], ttl: float) -> T:
        """The cached value of ``key``, else ``load()`` (cached for ``ttl`` seconds unless a
        change was made while it loaded). What ``load`` raises is not cached."""
        if ttl <= 0:
            return load()
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            generation = self._generation
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (now + ttl, value)
        return value

    def peek(self, key: Hashable) -> tuple[bool, Any]:
        """``(True, value)`` if ``key`` is cached and fresh, else ``(False, None)``; no load."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1


CACHE = MetadataCache()


def ttl() -> float:
    from matengine.config import get_settings

    return get_settings().metadata_cache_seconds


def cached(engine: Engine, key: tuple[Hashable, ...], load: Callable[[], T]) -> T:
    """``load()`` through the cache, under ``key`` in ``engine``'s database."""
    return CACHE.get((_engine_key(engine), *key), load, ttl())


def peek(engine: Engine, key: tuple[Hashable, ...]) -> tuple[bool, Any]:
    """What :func:`cached` would answer without loading: ``(found, value)``."""
    if ttl() <= 0:
        return False, None
    return CACHE.peek((_engine_key(engine), *key))


def _engine_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _writes_cached_table(statement: Any) -> bool:
    if not isinstance(statement, UpdateBase):
        return False
    table = getattr(statement, "table", None)
    return getattr(table, "schema", None) == "matengine" and getattr(table, "name", None) in CACHED_TABLES


_WRITTEN = "matengine_metadata_written"


def watch(engine: Engine) -> None:
    """Clear the cache whenever ``engine`` writes a cached table, when that transaction
    commits, and when its connection goes back to the pool (after the commit has landed: a
    reader that loaded between the commit event and the commit itself keeps nothing)."""

    @event.listens_for(engine, "before_execute")
    def _written(conn: Any, clauseelement: Any, multiparams: Any, params: Any, options: Any) -> None:
        if _writes_cached_table(clauseelement):
            conn.info[_WRITTEN] = True
            CACHE.clear()

    @event.listens_for(engine, "commit")
    def _committed(conn: Any) -> None:
        if conn.info.get(_WRITTEN):
            CACHE.clear()

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_WRITTEN, False):
            CACHE.clear()
