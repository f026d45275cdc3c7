"""Shared fixtures. Tests run against the real PostgreSQL service of the machine
(``MATENGINE_TEST_ADMIN_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``):
each test session gets a fresh database, dropped at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from matengine.config import configure, get_settings

ADMIN_URL = os.environ.get("MATENGINE_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _db_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session", autouse=True)
def source_roots(tmp_path_factory) -> Iterator[str]:
    """Bulk upload reads only under MATENGINE_SOURCE_ROOTS (empty by default): the tests'
    files live under pytest's base temp folder, so that is the one root configured. Set in
    the environment, so Celery workers the tests start see it too."""
    root = str(tmp_path_factory.getbasetemp())
    old = os.environ.get("MATENGINE_SOURCE_ROOTS")
    os.environ["MATENGINE_SOURCE_ROOTS"] = root
    get_settings.cache_clear()
    yield root
    if old is None:
        os.environ.pop("MATENGINE_SOURCE_ROOTS", None)
    else:
        os.environ["MATENGINE_SOURCE_ROOTS"] = old
    get_settings.cache_clear()


@pytest.fixture
def admit_sources(monkeypatch):
    """``admit_sources(*roots, private_hosts="127.0.0.1")``: more source roots (and loopback
    hosts, such as a local bucket emulator's) for one test."""

    def admit(*roots: str, private_hosts: str = "") -> None:
        base = os.environ.get("MATENGINE_SOURCE_ROOTS", "")
        monkeypatch.setenv("MATENGINE_SOURCE_ROOTS", ",".join([base, *roots]))
        if private_hosts:
            monkeypatch.setenv("MATENGINE_SOURCE_PRIVATE_HOSTS", private_hosts)
        get_settings.cache_clear()

    yield admit
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"matengine_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _db_url(name)
    os.environ["MATENGINE_DATABASE_URL"] = url
    configure(database_url=url)
    yield url
    from matengine.db.connection import dispose_engines

    dispose_engines()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def engine(database_url: str):
    from matengine.db.connection import get_engine

    return get_engine(database_url)


@pytest.fixture
def datastack(engine) -> Iterator[str]:
    """A fresh datastack with a flat segmentation source, dropped after the test."""
    from matengine import catalog

    name = f"ds_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        name,
        segmentation_source="precomputed://file:///nonexistent/seg",
        voxel_resolution=(4, 4, 40),
    )
    yield name
    catalog.drop_datastack(engine, name)


@pytest.fixture
def settings():
    return get_settings()
