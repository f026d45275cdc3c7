"""Writeback pacing against the test server: it finds the database's own folder when the
server is on this machine, paces a chunk's writes there, and stays off when told or remote."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from matengine.config import get_settings
from matengine.db import writeback

pytestmark = pytest.mark.skipif(not writeback.supported(), reason="sync_file_range is Linux's")


def test_the_database_folder_holds_its_tables_files(engine):
    folder = writeback.database_directory(engine)
    assert folder is not None, "the test server runs on this machine; its data folder is readable"
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS pacing_probe (x bigint)"))
        rel = conn.execute(text("SELECT pg_relation_filepath('pacing_probe')")).scalar_one()
        conn.execute(text("DROP TABLE pacing_probe"))
    assert rel.split("/")[-2] == folder.name and rel.startswith("base/")


def test_a_bulk_write_inside_the_block_is_paced(engine):
    folder = writeback.database_directory(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE pacing_bulk AS SELECT g AS x FROM generate_series(1, 200000) g"))
    try:
        with writeback.pacing(engine):
            with engine.begin() as conn:  # ~7 MB of new index, written around shared buffers
                conn.execute(text("CREATE INDEX pacing_bulk_x ON pacing_bulk (x)"))
            time.sleep(0.25)
        pacer = writeback._pacers[folder]
        assert pacer.passes >= 1 and pacer.files >= 1
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE pacing_bulk"))


def test_pacing_is_off_when_the_setting_says_so(engine, monkeypatch):
    monkeypatch.setenv("MATENGINE_WRITEBACK_PACING", "false")
    get_settings.cache_clear()
    try:
        assert get_settings().writeback_pacing is False
        with writeback.pacing(engine):
            assert all(p._holders == 0 for p in writeback._pacers.values())
    finally:
        monkeypatch.delenv("MATENGINE_WRITEBACK_PACING")
        get_settings.cache_clear()


def test_a_server_on_another_machine_is_not_paced():
    remote = create_engine("postgresql+psycopg://postgres@db.example.invalid:5432/x")
    assert writeback.database_directory(remote) is None
