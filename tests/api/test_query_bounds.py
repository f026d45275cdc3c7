"""Bounded work per query: the query timeout cancels SQL that produces no rows in time, a
client that hangs up cancels its query at once, and under a mixed load (pathological
regexes, filters at the size limit, oversize filters, gzip bombs) other clients stay fast
and no PostgreSQL backend outlives its request."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from matengine.config import Settings
from matengine.errors import QueryTimeout
from matengine.query.columns import ColKind
from matengine.query.reader import Fetch, QueryGuard, read_batches

HEAVY_VALUES = 100_000  # the default MATENGINE_MAX_FILTER_VALUES


def _active(database_url: str, needle: str) -> list[tuple]:
    """Backends of the test database running a statement containing ``needle``."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, state, now() - query_start FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state = 'active' AND query LIKE %s",
            (f"%{needle}%",),
        ).fetchall()


def _wait_idle(database_url: str, needle: str, seconds: float) -> float:
    """Seconds until no backend runs ``needle`` (fails after ``seconds``)."""
    t0 = time.monotonic()
    while _active(database_url, needle):
        assert time.monotonic() - t0 < seconds, _active(database_url, needle)
        time.sleep(0.05)
    return time.monotonic() - t0


def test_the_default_timeout_is_a_minute():
    assert Settings().query_timeout == 60.0


def test_a_guard_cancels_sql_that_delivers_no_batch_in_time(database_url):
    with psycopg.connect(database_url) as conn:
        t0 = time.monotonic()
        with pytest.raises(QueryTimeout, match=r"within 0.5 s \(MATENGINE_QUERY_TIMEOUT\)"):
            list(
                read_batches(
                    conn,
                    "FROM (SELECT 1::bigint AS x, pg_sleep(20) AS s) AS q",
                    {},
                    [Fetch("x", "q.x", ColKind.INT, nullable=False)],
                    guard=QueryGuard(0.5),
                )
            )
        assert time.monotonic() - t0 < 5
    assert _wait_idle(database_url, "pg_sleep(20)", 3) < 3


def test_a_guard_does_not_cut_a_stream_that_keeps_delivering(database_url):
    """The clock runs only while rows are awaited: a slow reader is never cut."""
    with psycopg.connect(database_url) as conn:
        got = 0
        for batch in read_batches(
            conn,
            "FROM generate_series(1, 40000) AS g(x)",
            {},
            [Fetch("x", "g.x::bigint", ColKind.INT, nullable=False)],
            batch_rows=10_000,
            guard=QueryGuard(0.3),
        ):
            got += len(batch)
            time.sleep(0.4)  # longer than the timeout, between batches
    assert got == 40_000


def _heavy_body(columns: int) -> dict:
    """notin filters at the size limit on several columns: seconds of PostgreSQL CPU."""
    names = ["id", "pre_pt_supervoxel_id", "post_pt_supervoxel_id", "pre_pt_root_id", "post_pt_root_id"]
    values = list(range(10**15, 10**15 + HEAVY_VALUES))
    return {"filter_notin_dict": {"synapses": {n: values for n in names[:columns]}}}


@pytest.fixture(scope="module")
def bounded(engine, server, loaded):
    """The app again, with a query timeout of 0.5 s."""
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    settings = get_settings().model_copy(update={"query_timeout": 0.5})
    with ThreadedServer(create_app(settings, engine=engine)) as srv:
        yield srv.url


def _vq(loaded) -> str:
    return f"/materialize/api/v3/datastack/{loaded.datastack}/version/1/table/synapses/query"


def test_a_query_over_the_timeout_answers_503(bounded, server, loaded, database_url):
    headers = {"Authorization": f"Bearer {server.tokens['view']}"}
    t0 = time.monotonic()
    r = httpx.post(bounded + _vq(loaded), json=_heavy_body(5), headers=headers, timeout=60)
    assert r.status_code == 503, r.text[:300]
    assert r.json()["error"] == "QueryTimeout"
    assert "MATENGINE_QUERY_TIMEOUT" in r.json()["message"]
    assert time.monotonic() - t0 < 10
    _wait_idle(database_url, "<> ALL", 3)


def test_a_client_that_hangs_up_cancels_its_query(server, loaded, database_url):
    """Default timeout (a minute); the client leaves after 0.5 s: its backend stops at once."""
    headers = {"Authorization": f"Bearer {server.tokens['view']}"}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + _vq(loaded),
            json=_heavy_body(5),
            headers=headers,
            timeout=httpx.Timeout(30, read=0.5),
        )
    left = time.monotonic()
    assert _wait_idle(database_url, "<> ALL", 5) < 5
    assert time.monotonic() - left < 5


@pytest.fixture(scope="module")
def load_tags(engine, loaded):
    from matengine import annotations as ann
    from matengine import catalog

    catalog.create_table(engine, loaded.datastack, "load_tags", schema="bound_tag")
    ann.insert_annotations(
        engine,
        loaded.datastack,
        "load_tags",
        [{"pt": {"position": [i, 1, 1]}, "tag": "a" * 30} for i in range(50)],
    )
    return "load_tags"


def test_load_with_hostile_requests_mixed_in(server, loaded, database_url, load_tags):
    """6 clients x 40 requests on loopback: 2 hostile clients (a backreference regex, an
    oversize filter, a gzip bomb, filters at the size limit) and 4 plain ones. The plain
    clients' p99 stays under 4 s (the 2 cores are shared with the hostile work) and every
    backend ends with its request."""
    import gzip

    ds = loaded.datastack
    headers = {"Authorization": f"Bearer {server.tokens['view']}"}
    live = f"/materialize/api/v3/datastack/{ds}/query?allow_missing_lookups=True"
    hostile = [
        (
            "POST",
            live,
            {
                "json": {
                    "table": load_tags,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "filter_regex_dict": {load_tags: {"tag": "(a*)*(a*)*\\1\\2b"}},
                }
            },
            (400,),
        ),
        (
            "POST",
            _vq(loaded),
            {"json": {"filter_in_dict": {"synapses": {"id": list(range(HEAVY_VALUES + 1))}}}},
            (413,),
        ),
        (
            "POST",
            _vq(loaded),
            {
                "content": gzip.compress(b"[" + b"0," * 20_000_000 + b"0]"),
                "headers": {"Content-Encoding": "gzip", "Content-Type": "application/json"},
            },
            (413,),
        ),
        ("POST", _vq(loaded) + "?return_pyarrow=False", {"json": _heavy_body(1)}, (200, 503)),
    ]
    plain = [
        ("POST", _vq(loaded) + "?return_pyarrow=False", {"json": {"limit": 50}}, (200,)),
        (
            "POST",
            _vq(loaded) + "?return_pyarrow=False",
            {"json": {"filter_in_dict": {"synapses": {"id": list(range(1, 200))}}}},
            (200,),
        ),
        ("GET", f"/materialize/api/v3/datastack/{ds}/versions", {}, (200,)),
    ]
    plain_times: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(requests: list, rounds: int, timed: bool) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as h:
            for i in range(rounds):
                method, path, kw, ok = requests[i % len(requests)]
                kw = {**kw, "headers": {**headers, **kw.get("headers", {})}}
                t0 = time.monotonic()
                r = h.request(method, path, **kw)
                dt = time.monotonic() - t0
                with lock:
                    if r.status_code not in ok:
                        failures.append(f"{path}: {r.status_code} {r.text[:200]}")
                    if timed:
                        plain_times.append(dt)

    with ThreadPoolExecutor(6) as pool:
        jobs = [pool.submit(client, hostile, 40, False) for _ in range(2)]
        jobs += [pool.submit(client, plain, 40, True) for _ in range(4)]
        for j in jobs:
            j.result()
    assert not failures, failures[:5]
    plain_times.sort()
    p99 = plain_times[int(len(plain_times) * 0.99) - 1]
    print(
        f"plain requests: {len(plain_times)}, median {statistics.median(plain_times):.3f} s, p99 {p99:.3f} s"
    )
    assert p99 < 4.0, p99
    # every backend of the load ended with its request
    _wait_idle(database_url, "<> ALL", 3)
    _wait_idle(database_url, "COPY (SELECT", 3)


def test_batches_read_many_copy_rows_at_once_are_exact_and_full(database_url):
    """The COPY reader takes a batch's worth of rows per wait: every row once, in order, each
    batch full but the last, and the connection usable after."""
    with psycopg.connect(database_url) as conn:
        batches = list(
            read_batches(
                conn,
                "FROM generate_series(1, 25000) AS g(x)",
                {},
                [
                    Fetch("x", "g.x::bigint", ColKind.INT, nullable=False),
                    Fetch("h", "CASE WHEN g.x % 7 = 0 THEN NULL ELSE g.x * 0.5 END", ColKind.FLOAT),
                ],
                batch_rows=10_000,
            )
        )
        assert [len(b) for b in batches] == [10_000, 10_000, 5_000]
        xs = [int(v) for b in batches for v in b.values["x"]]
        assert xs == list(range(1, 25_001))
        nulls = sum(int(b.nulls["h"].sum()) for b in batches)
        assert nulls == 25_000 // 7
        assert conn.execute("SELECT 42").fetchone() == (42,)
