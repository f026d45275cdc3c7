"""Migration 0007 (the version store) on a database laid out by the previous code: full-copy
version tables (one schema ``<ds>__mat<N>`` of plain tables per version) are folded into the
version store, every
version still equals the oracle, the next build is incremental, and the downgrade gives the
full copies back."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic import command
from psycopg import sql
from sqlalchemy import create_engine, text

from matengine import version_store as store
from matengine.db.identifiers import quote, version_schema
from matengine.db.migrate import alembic_config, upgrade
from matengine.schemas import get_schema
from matengine.workflows.submit import sync_parameters

from .helpers import TABLE_SCHEMAS, assert_same_rows, load_dataset, make_datastack, read_version, run_inline


def _previous_merge(ds: str, table: str, pcg: str) -> str:
    """The merge of the previous code (commit ed29c4c), as it wrote a version table."""
    schema = get_schema(TABLE_SCHEMAS[table])
    cols = [
        "a.id",
        "a.created",
        "NULL::timestamptz AS deleted",
        "NULL::bigint AS superceded_id",
        "true AS valid",
    ]
    cols += [f"a.{quote(c.name)}" for c in schema.annotation_columns()]
    cols += [f"s.{quote(c.name)}" for c in schema.segmentation_columns()]
    return (
        f"SELECT {', '.join(cols)} FROM {quote(ds, table)} a "
        f"LEFT JOIN {quote(ds, table + '__' + pcg)} s ON s.id = a.id "
        "WHERE a.created <= :t AND (a.deleted IS NULL OR a.deleted > :t)"
    )


def _build_full_copy(conn, ds: str, number: int, when, status: str = "AVAILABLE") -> None:
    """What the previous ``complete`` left: a schema of plain, indexed tables and metadata."""
    target_schema = version_schema(ds, number)
    conn.execute(text(f"CREATE SCHEMA {quote(target_schema)}"))
    conn.execute(
        text(
            "INSERT INTO matengine.versions (datastack, version, time_stamp, status, valid, expires_on) "
            "VALUES (:d, :n, :t, :s, :v, NULL)"
        ),
        {"d": ds, "n": number, "t": when, "s": status, "v": status == "AVAILABLE"},
    )
    for table, schema_type in TABLE_SCHEMAS.items():
        target = quote(target_schema, table)
        conn.execute(text(f"CREATE TABLE {target} AS {_previous_merge(ds, table, 'synth_pcg')}"), {"t": when})
        for ddl in store.full_copy_indexes(get_schema(schema_type), table, target):
            conn.execute(text(ddl))
        rows = conn.execute(text(f"SELECT count(*) FROM {target}")).scalar_one()
        conn.execute(
            text(
                "INSERT INTO matengine.version_tables (datastack, version, table_name, schema_type, "
                "row_count, voxel_resolution, description) VALUES (:d, :n, :tb, :st, :r, '{4,4,40}', '')"
            ),
            {"d": ds, "n": number, "tb": table, "st": schema_type, "r": rows},
        )


def _previous() -> str:
    """The revision before the version store: the full-copy layout's last."""
    from alembic.script import ScriptDirectory

    down = ScriptDirectory.from_config(alembic_config()).get_revision("0007").down_revision
    assert isinstance(down, str)
    return down


@pytest.fixture
def old_database():
    from tests.conftest import ADMIN_URL

    name = f"matengine_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = ADMIN_URL.rpartition("/")[0] + "/" + name
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, _previous())
        conn.commit()
    yield engine
    engine.dispose()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _kinds(engine, ds: str, numbers) -> set[str]:
    with engine.connect() as conn:
        return {
            conn.execute(
                text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:r)"),
                {"r": f"{version_schema(ds, n)}.{t}"},
            ).scalar_one()
            for n in numbers
            for t in TABLE_SCHEMAS
        }


def test_full_copies_of_the_previous_code_become_store_versions_equal_to_the_oracle(
    old_database, synth, oracle
):
    engine = old_database
    ds = f"mig_{uuid.uuid4().hex[:6]}"
    make_datastack(engine, ds, synth)
    load_dataset(engine, ds, synth)
    edits = sorted(synth.edit_timestamps)
    times = {1: edits[10], 2: edits[25], 3: edits[50], 4: edits[70]}
    for n in (1, 2, 3):
        run_inline(
            engine,
            "update_roots",
            sync_parameters(engine, "update_roots", ds, timestamp=times[n].isoformat()),
            datastack=ds,
        )
        with engine.begin() as conn:
            _build_full_copy(conn, ds, n, times[n])
    with engine.begin() as conn:  # version 2 expired under the old code: its schema is gone
        conn.execute(text(f"DROP SCHEMA {quote(version_schema(ds, 2))} CASCADE"))
        conn.execute(
            text("DELETE FROM matengine.version_tables WHERE datastack = :d AND version = 2"), {"d": ds}
        )
        conn.execute(
            text("UPDATE matengine.versions SET status = 'EXPIRED' WHERE datastack = :d AND version = 2"),
            {"d": ds},
        )
    with engine.connect() as conn:
        upgrade(conn)
    assert _kinds(engine, ds, (1, 3)) == {"v"}
    for n in (1, 3):
        for table in TABLE_SCHEMAS:
            assert_same_rows(read_version(engine, ds, n, table), oracle.table_at(table, times[n]))
    with engine.connect() as conn:
        head = store.store_state(conn, ds, "synapses")
        in_store = conn.execute(text(f"SELECT count(*) FROM {store.store_q(ds, 'synapses')}")).scalar_one()
    assert (head.head_version, head.head_time, head.indexed) == (3, times[3], True)
    v1, v3 = (len(oracle.table_at("synapses", times[n])["id"]) for n in (1, 3))
    assert in_store < v1 + v3  # the rows the two versions share are stored once
    # the next build starts from the migrated head and writes only what changed
    params = sync_parameters(engine, "complete", ds, timestamp=times[4].isoformat())
    result = run_inline(engine, "complete", params, datastack=ds).result
    assert result["version"] == 4 and result["merge:synapses"]["written"] < v1
    for n in (1, 3, 4):
        for table in TABLE_SCHEMAS:
            assert_same_rows(read_version(engine, ds, n, table), oracle.table_at(table, times[n]))
    # and back: the downgrade writes full copies again
    with engine.connect() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, _previous())
        conn.commit()
    assert _kinds(engine, ds, (1, 3, 4)) == {"r"}
    for n in (1, 3, 4):
        assert_same_rows(read_version(engine, ds, n, "synapses"), oracle.table_at("synapses", times[n]))
