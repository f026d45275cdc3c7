"""Fixtures of the dashboard tests: two small datastacks (A visible to A's tokens, B with
things that must never show to them) served by the real app, with auth on and off."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from sqlalchemy import insert

from matengine import auth, catalog
from matengine.annotations import insert_annotations
from matengine.db import metadata as m
from matengine.timeutil import utcnow
from matengine.workflows import runs

SECRET_ERROR_B = "bucket gs://secret-b-bucket/missing.npy unreadable"
ERROR_A = "worker lost contact with gs://a-bucket/part-7.npy"


@dataclass
class Stacks:
    a: str
    b: str
    table_a: str = "synapses"
    table_b: str = "hidden_cells_b"
    runs: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)


def _point(x: float) -> dict:
    return {"position": [x, 2.0, 3.0]}


def _finished_run(engine, kind: str, datastack: str, table: str | None, error: str) -> int:
    run_id = runs.create_run(
        engine, kind, {"timestamp": utcnow().isoformat()}, datastack=datastack, table_name=table
    )
    with engine.begin() as conn:
        runs.mark_running(conn, run_id, "step")
    runs.finish_run(engine, run_id, "FAILED", error)
    return run_id


def _version(engine, datastack: str, version: int, rows: dict[str, int]) -> None:
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(m.versions).values(
                datastack=datastack,
                version=version,
                time_stamp=now,
                status="AVAILABLE",
                valid=True,
                expires_on=None,
                finished=now,
            )
        )
        for table, n in rows.items():
            conn.execute(
                insert(m.version_tables).values(
                    datastack=datastack,
                    version=version,
                    table_name=table,
                    schema_type="synapse",
                    row_count=n,
                    voxel_resolution=[4.0, 4.0, 40.0],
                )
            )


@pytest.fixture(scope="module")
def stacks(engine):
    tag = uuid.uuid4().hex[:6]
    st = Stacks(a=f"dsha_{tag}", b=f"dshb_{tag}")
    for name, table, schema in ((st.a, st.table_a, "synapse"), (st.b, st.table_b, "cell_type_local")):
        catalog.add_datastack(
            engine,
            name,
            segmentation_source="precomputed://file:///nowhere/seg",
            voxel_resolution=(4, 4, 40),
            description=f"stack {name}",
        )
        catalog.create_table(engine, name, table, schema=schema, description=f"table of {name}")
    insert_annotations(
        engine,
        st.a,
        st.table_a,
        [{"pre_pt": _point(i), "ctr_pt": _point(i), "post_pt": _point(i + 1), "size": 1.0} for i in range(7)],
    )
    _version(engine, st.a, 1, {st.table_a: 7})
    _version(engine, st.b, 1, {st.table_b: 12345})
    st.runs["a"] = _finished_run(engine, "ingest", st.a, st.table_a, ERROR_A)
    st.runs["b"] = _finished_run(engine, "bulk_upload", st.b, st.table_b, SECRET_ERROR_B)
    for who, ds, perm in (
        ("view_a", st.a, "view"),
        ("admin_a", st.a, "admin"),
        ("view_b", st.b, "view"),
        ("view_all", "*", "view"),
    ):
        st.tokens[who] = auth.create_token(engine, ds, perm, f"dashboard test {who}")[1]
    yield st
    for name in (st.a, st.b):
        catalog.drop_datastack(engine, name)


@pytest.fixture(scope="module")
def served(engine, stacks):
    """The real app with auth on, on a free loopback port."""
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    with ThreadedServer(create_app(get_settings(), engine=engine)) as srv:
        yield srv.url


@pytest.fixture(scope="module")
def served_open(engine, stacks):
    """The real app with auth off (loopback only)."""
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    with ThreadedServer(create_app(get_settings(), engine=engine, auth_enabled=False)) as srv:
        yield srv.url
