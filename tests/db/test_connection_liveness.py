"""Pooled connections are checked without a round trip: one its server ended (a restart,
``pg_terminate_backend``) is replaced at checkout, so the next statement just works."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import text

from matengine.db.connection import get_engine, raw_connection, stale


def _terminate(database_url: str, pid: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_a_connection_ended_by_the_server_is_replaced_at_checkout(database_url):
    engine = get_engine(database_url)
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    _terminate(database_url, pid)
    time.sleep(0.2)  # the FATAL message and the close reach our socket
    with engine.connect() as conn:  # the same pooled connection would fail here
        assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_a_raw_connection_ended_by_the_server_is_replaced_too(database_url):
    engine = get_engine(database_url)
    with raw_connection(engine) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    _terminate(database_url, pid)
    time.sleep(0.2)
    with raw_connection(engine) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_idle_healthy_connection_is_not_stale_and_a_closed_one_is(database_url):
    conn = psycopg.connect(database_url)
    conn.execute("SELECT 1")
    conn.rollback()
    assert not stale(conn)
    conn.close()
    assert stale(conn)
