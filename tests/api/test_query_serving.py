"""How query answers are served: the server's own time in ``Server-Timing``, a small result in
one body, compression only for callers that are not on this machine, and the metadata cache
(tokens, table permissions, versions) honouring every change: at once when this process made
it, within ``MATENGINE_METADATA_CACHE_SECONDS`` when another process did, and expiry exactly."""

from __future__ import annotations

import re
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pyarrow as pa
import pytest

from matengine import auth, catalog, metadata_cache
from matengine.query import version_query
from matengine.query.reader import BATCH_ROWS

REPO = Path(__file__).resolve().parents[2]
ROWS = 3000
ZSTD_FRAME = b"\x28\xb5\x2f\xfd"


@pytest.fixture(scope="module")
def stack(engine):
    """A datastack with version 1 of a table owned by bob (generated as the benchmark does)."""
    sys.path.insert(0, str(REPO))
    from bench.bench_query import make_version

    name = f"srv_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, name, segmentation_source="precomputed://file:///none", voxel_resolution=(4, 4, 40)
    )
    catalog.create_table(engine, name, "synapses", schema="synapse", owner="bob")
    roots = make_version(engine, name, "synapses", ROWS, rows_per_root=100, spatial_index=False)
    yield name, roots
    catalog.drop_datastack(engine, name)


@pytest.fixture(scope="module")
def app_url(engine, stack):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    with ThreadedServer(create_app(get_settings(), engine=engine)) as srv:
        yield srv.url


@pytest.fixture
def long_cache(monkeypatch):
    """Entries live 30 s: anything seen sooner was not the cache expiring."""
    monkeypatch.setattr(metadata_cache, "ttl", lambda: 30.0)
    metadata_cache.CACHE.clear()
    yield
    metadata_cache.CACHE.clear()


def _query(url: str, ds: str, token: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/materialize/api/v3/datastack/{ds}/version/1/table/synapses/query"
        "?return_pyarrow=True&arrow_format=True",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "zstd", **headers},
        timeout=60,
    )


def _other_process(database_url: str, sql: str, params: tuple) -> None:
    """A change made outside this process's engines (as the CLI or a worker would)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql, params)


def test_a_small_result_is_one_body_with_the_servers_own_time(engine, stack, app_url):
    ds, _ = stack
    token = auth.create_token(engine, ds, "view")[1]
    root = 864691135000000000 + 7
    body = {"filter_in_dict": {"synapses": {"pre_pt_root_id": [root]}}}
    r = _query(app_url, ds, token, body)
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"app;dur=[0-9]+\.[0-9]{2}", r.headers["server-timing"])
    assert int(r.headers["content-length"]) == len(r.content)
    got = pa.ipc.open_stream(r.content).read_all()
    expected = version_query(engine, ds, 1, "synapses", body).to_table()
    assert len(got) > 0 and got.equals(expected)


def test_errors_carry_the_servers_time_too(engine, stack, app_url):
    ds, _ = stack
    r = _query(app_url, ds, "me_not_a_token", {})
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    assert r.headers["server-timing"].startswith("app;dur=")


def test_results_are_compressed_only_for_callers_not_on_this_machine(engine, stack, app_url, monkeypatch):
    ds, _ = stack
    token = auth.create_token(engine, ds, "view")[1]
    local = _query(app_url, ds, token, {})
    forwarded = _query(app_url, ds, token, {}, **{"X-Forwarded-For": "203.0.113.9"})
    assert ZSTD_FRAME not in local.content and ZSTD_FRAME in forwarded.content
    assert len(forwarded.content) < len(local.content)
    frames = [pa.ipc.open_stream(r.content).read_all() for r in (local, forwarded)]
    assert len(frames[0]) == ROWS and frames[0].equals(frames[1])

    from matengine.config import get_settings

    monkeypatch.setattr(get_settings(), "query_compress_loopback", True)
    assert ZSTD_FRAME in _query(app_url, ds, token, {}).content


def test_a_permission_change_made_here_is_honoured_at_once(engine, stack, app_url, long_cache):
    ds, _ = stack
    alice = auth.create_token(engine, ds, "view", user="alice")[1]
    try:
        assert _query(app_url, ds, alice, {"limit": 5}).status_code == 200
        catalog.update_table_metadata(engine, ds, "synapses", read_permission="PRIVATE")
        r = _query(app_url, ds, alice, {"limit": 5})
        assert r.status_code == 403 and r.json()["error"] == "Forbidden"
    finally:
        catalog.update_table_metadata(engine, ds, "synapses", read_permission="PUBLIC")
    assert _query(app_url, ds, alice, {"limit": 5}).status_code == 200


def test_a_revocation_made_here_is_honoured_at_once(engine, stack, app_url, long_cache):
    ds, _ = stack
    token_id, token = auth.create_token(engine, ds, "view")
    assert _query(app_url, ds, token, {"limit": 5}).status_code == 200
    auth.revoke_token(engine, token_id)
    assert _query(app_url, ds, token, {"limit": 5}).status_code == 401


def test_changes_by_another_process_are_honoured_within_the_cache_lifetime(
    engine, stack, app_url, database_url, monkeypatch
):
    ds, _ = stack
    monkeypatch.setattr(metadata_cache, "ttl", lambda: 0.5)
    alice = auth.create_token(engine, ds, "view", user="alice")[1]
    token_id, token = auth.create_token(engine, ds, "view")
    assert _query(app_url, ds, alice, {"limit": 5}).status_code == 200
    assert _query(app_url, ds, token, {"limit": 5}).status_code == 200
    _other_process(database_url, "UPDATE matengine.tokens SET revoked = now() WHERE id = %s", (token_id,))
    _other_process(
        database_url,
        "UPDATE matengine.annotation_tables SET read_permission = 'PRIVATE' "
        "WHERE datastack = %s AND table_name = 'synapses'",
        (ds,),
    )
    try:
        time.sleep(0.6)
        assert _query(app_url, ds, token, {"limit": 5}).status_code == 401
        assert _query(app_url, ds, alice, {"limit": 5}).status_code == 403
    finally:
        catalog.update_table_metadata(engine, ds, "synapses", read_permission="PUBLIC")


def test_a_cached_version_is_refused_the_moment_it_expires(engine, stack, app_url, database_url, long_cache):
    ds, _ = stack
    token = auth.create_token(engine, ds, "view")[1]
    until = "now() + interval '1.5 seconds'"
    _other_process(
        database_url, f"UPDATE matengine.versions SET expires_on = {until} WHERE datastack = %s", (ds,)
    )
    try:
        assert _query(app_url, ds, token, {"limit": 5}).status_code == 200  # now cached for 30 s
        time.sleep(1.7)
        r = _query(app_url, ds, token, {"limit": 5})
        assert r.status_code == 410 and r.json()["error"] == "Gone"
    finally:
        _other_process(
            database_url,
            "UPDATE matengine.versions SET expires_on = now() + interval '100 years' WHERE datastack = %s",
            (ds,),
        )
        metadata_cache.CACHE.clear()


def test_a_token_cached_past_its_expiry_is_refused(engine, stack, app_url, long_cache):
    from datetime import timedelta

    ds, _ = stack
    token = auth.create_token(engine, ds, "view", expires_in=timedelta(seconds=1))[1]
    assert _query(app_url, ds, token, {"limit": 5}).status_code == 200
    time.sleep(1.2)
    r = _query(app_url, ds, token, {"limit": 5})
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_a_repeated_query_reads_no_metadata_from_the_database(engine, stack, app_url, long_cache):
    from sqlalchemy import event

    ds, _ = stack
    token = auth.create_token(engine, ds, "view")[1]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    assert _query(app_url, ds, token, {"limit": 5}).status_code == 200
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert _query(app_url, ds, token, {"limit": 5}).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []  # token, table permissions and version came from the cache


@pytest.fixture(scope="module")
def two_batches(engine, stack):
    """Version 2 of the same table: more rows than one batch."""
    from bench.bench_query import make_version

    ds, _ = stack
    make_version(engine, ds, "synapses", 20_000, version=2, spatial_index=False)
    return ds


@pytest.mark.parametrize("limit", [BATCH_ROWS - 1, BATCH_ROWS, None])
def test_one_body_up_to_a_batch_and_a_stream_beyond_with_the_same_rows(engine, two_batches, app_url, limit):
    ds = two_batches
    token = auth.create_token(engine, ds, "view")[1]
    body = {} if limit is None else {"limit": limit}
    r = httpx.post(
        f"{app_url}/materialize/api/v3/datastack/{ds}/version/2/table/synapses/query?arrow_format=True",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    one_body = limit is not None and limit < BATCH_ROWS
    assert ("content-length" in r.headers) == one_body
    assert r.headers["server-timing"].startswith("app;dur=")
    got = pa.ipc.open_stream(r.content).read_all()
    expected = version_query(engine, ds, 2, "synapses", body).to_table()
    assert len(got) == (limit or 20_000) and got.equals(expected)
