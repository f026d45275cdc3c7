"""The alembic migrations build exactly the schema the SQLAlchemy models describe, from an
empty database and from the previous release's schema (with its rows kept)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import Engine, create_engine, text

from matengine.db.connection import sqlalchemy_url
from matengine.db.metadata import SCHEMA, metadata
from matengine.db.migrate import alembic_config, upgrade

ADMIN_URL = os.environ.get("MATENGINE_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def empty_db() -> Iterator[Engine]:
    name = f"matengine_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = create_engine(sqlalchemy_url(ADMIN_URL.rpartition("/")[0] + "/" + name))
    yield engine
    engine.dispose()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _differences(engine: Engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "version_table_schema": SCHEMA,
                "include_name": lambda name, type_, parent: type_ != "schema" or name == SCHEMA,
            },
        )
        return compare_metadata(ctx, metadata)


def _upgrade_to(engine: Engine, revision: str) -> None:
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def _head_and_previous() -> tuple[str, str]:
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_revision(script.get_current_head())
    assert head is not None and isinstance(head.down_revision, str)
    return head.revision, head.down_revision


def _current(engine: Engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text(f'SELECT version_num FROM "{SCHEMA}".alembic_version')).scalar_one()


def test_upgrade_from_an_empty_database_matches_the_models(empty_db):
    with empty_db.connect() as conn:
        upgrade(conn)
    assert _current(empty_db) == _head_and_previous()[0]
    assert _differences(empty_db) == []


def test_upgrade_from_the_previous_release_keeps_rows_and_matches_the_models(empty_db):
    head, previous = _head_and_previous()
    _upgrade_to(empty_db, previous)
    assert _current(empty_db) == previous
    with empty_db.begin() as conn:
        conn.execute(
            text(
                f'INSERT INTO "{SCHEMA}".datastacks (name, aligned_volume, segmentation_source, '
                "voxel_resolution) VALUES ('kept', 'kept', 'precomputed://file:///seg', ARRAY[4, 4, 40])"
            )
        )
    with empty_db.connect() as conn:
        upgrade(conn)
    assert _current(empty_db) == head
    assert _differences(empty_db) == []
    with empty_db.connect() as conn:
        kept = conn.execute(text(f'SELECT segmentation_source FROM "{SCHEMA}".datastacks')).scalars().all()
    assert kept == ["precomputed://file:///seg"]


def test_upgrade_twice_changes_nothing(empty_db):
    with empty_db.connect() as conn:
        upgrade(conn)
        upgrade(conn)
    assert _differences(empty_db) == []
