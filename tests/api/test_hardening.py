"""Every hostile or broken input of issue 17 over HTTP against a served app: each is answered
in the API's one JSON error shape ({"message", "error"}) with a 4xx naming what is wrong,
and leaves the data exactly as it was."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text

from matengine import annotations as ann
from matengine import auth, catalog

TS = "2024-01-15T00:00:00+00:00"
TAGS = "hardening_tags"  # a table of its own: other modules share the datastack


def snapshot(engine, ds: str) -> tuple:
    """What must not change: rows of every table of the datastack, runs, tokens, notices."""
    out = []
    for t in catalog.list_tables(engine, ds):
        with engine.connect() as conn:
            out.append(
                conn.execute(
                    text(f"SELECT count(*), count(deleted), coalesce(sum(id), 0) FROM {t.names.live_q}")
                ).one()
            )
    with engine.connect() as conn:
        out.append(conn.execute(text("SELECT count(*) FROM matengine.workflow_runs")).scalar())
        out.append(conn.execute(text("SELECT count(*) FROM matengine.tokens")).scalar())
        out.append(
            tuple(conn.execute(text("SELECT table_name, notice_text FROM matengine.annotation_tables")).all())
        )
        out.append(conn.execute(text("SELECT count(*) FROM matengine.datastacks")).scalar())
    return tuple(out)


def _request(server, method, path, token="admin", **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {server.tokens[token]}"
    with httpx.Client(base_url=server.url, timeout=60) as h:
        return h.request(method, path, headers=headers, **kw)


def assert_refused(r: httpx.Response, status: int, fragment: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"message", "error"}, body
    assert fragment in body["message"], body["message"]


@pytest.fixture(scope="module", autouse=True)
def root_token(server, engine):
    """An admin token on every datastack (adding datastacks needs one)."""
    server.tokens["root"] = auth.create_token(engine, "*", "admin", "hardening tests")[1]


@pytest.fixture(scope="module")
def tagged(engine, loaded):
    """A live table with a text column (for regex and text filters)."""
    catalog.create_table(engine, loaded.datastack, TAGS, schema="bound_tag")
    ann.insert_annotations(
        engine,
        loaded.datastack,
        TAGS,
        [{"pt": {"position": [10 * i, 10, 10]}, "tag": f"tag{i}"} for i in range(1, 6)],
    )
    return TAGS


def _cases(ds: str, pcg: str) -> dict[str, tuple]:
    """name -> (method, path, json body or raw bytes, status, message fragment)."""
    mat = f"/materialize/api/v3/datastack/{ds}"
    vq = f"{mat}/version/1/table/synapses/query"
    live = f"{mat}/query?allow_missing_lookups=True"
    anno = f"/annotation/api/v2/aligned_volume/{ds}/table"

    def lq(**filters):
        return {"table": "synapses", "timestamp": TS, **filters}

    def tq(**filters):
        return {"table": TAGS, "timestamp": TS, **filters}

    big = 2**70
    return {
        "version beyond int64": (
            "GET",
            f"{mat}/version/{big}/table/synapses/metadata",
            None,
            422,
            "out of range",
        ),
        "version query beyond int64": (
            "POST",
            f"{mat}/version/{big}/table/synapses/query",
            {},
            422,
            "out of range",
        ),
        "int filter --1": (
            "POST",
            vq,
            {"filter_equal_dict": {"synapses": {"id": "--1"}}},
            400,
            "64-bit integer",
        ),
        "int filter superscript": (
            "POST",
            vq,
            {"filter_in_dict": {"synapses": {"id": ["²"]}}},
            400,
            "64-bit",
        ),
        "int filter 2**64": ("POST", vq, {"filter_in_dict": {"synapses": {"id": [2**64]}}}, 400, "64-bit"),
        "time filter list": (
            "POST",
            live,
            lq(filter_greater_dict={"synapses": {"created": [1]}}),
            400,
            "ISO",
        ),
        "time filter object": ("POST", live, lq(filter_less_dict={"synapses": {"created": {}}}), 400, "ISO"),
        "live timestamp null": ("POST", live, {"table": "synapses", "timestamp": None}, 400, "ISO"),
        "live timestamp object": ("POST", live, {"table": "synapses", "timestamp": {}}, 400, "ISO"),
        "live timestamp list": ("POST", live, {"table": "synapses", "timestamp": [1]}, 400, "ISO"),
        "live timestamp 1e308": ("POST", live, {"table": "synapses", "timestamp": 1e308}, 400, "ISO"),
        "negative root": (
            "POST",
            live,
            lq(filter_in_dict={"synapses": {"pre_pt_root_id": [-5]}}),
            400,
            "not negative",
        ),
        "regex unclosed": ("POST", live, tq(filter_regex_dict={TAGS: {"tag": "(["}}), 400, "never closed"),
        "regex counts": (
            "POST",
            live,
            tq(filter_regex_dict={TAGS: {"tag": "a{1000}{1000}"}}),
            400,
            "repetition counts",
        ),
        "regex backreference": (
            "POST",
            live,
            tq(filter_regex_dict={TAGS: {"tag": "(a*)*\\1(b*)*\\2$"}}),
            400,
            "backreferences",
        ),
        "regex too long": (
            "POST",
            live,
            tq(filter_regex_dict={TAGS: {"tag": "a" * 300}}),
            400,
            "longer than 256",
        ),
        "text filter NUL": ("POST", live, tq(filter_equal_dict={TAGS: {"tag": "a\x00b"}}), 400, "NUL"),
        "text filter surrogate": (
            "POST",
            live,
            tq(filter_equal_dict={TAGS: {"tag": "a\ud800"}}),
            400,
            "surrogate",
        ),
        "limit 2**70": ("POST", vq, {"limit": big}, 400, "2**63"),
        "offset 2**70": ("POST", vq, {"offset": big}, 400, "2**63"),
        "random_sample 2**70": ("POST", vq + f"?random_sample={big}", {}, 400, "2**63"),
        "order_by": ("POST", vq, {"order_by": "size"}, 400, "order_by is not supported"),
        "filter_in_dict too large": (
            "POST",
            vq,
            {"filter_in_dict": {"synapses": {"id": list(range(100_001))}}},
            413,
            "100000",
        ),
        "annotation id 2**64": (
            "GET",
            f"{anno}/synapses/annotations?annotation_ids={2**64}",
            None,
            400,
            "64-bit",
        ),
        "annotation text NUL": (
            "POST",
            f"{anno}/{TAGS}/annotations",
            {"annotations": [{"pt": {"position": [1, 2, 3]}, "tag": "a\x00"}]},
            400,
            "NUL",
        ),
        "annotation text surrogate": (
            "POST",
            f"{anno}/{TAGS}/annotations",
            {"annotations": [{"pt": {"position": [1, 2, 3]}, "tag": "\udc80"}]},
            400,
            "surrogate",
        ),
        "annotation position 1e308": (
            "POST",
            f"{anno}/{TAGS}/annotations",
            {"annotations": [{"pt": {"position": [1e308, 2, 3]}, "tag": "x"}]},
            400,
            "magnitude",
        ),
        "annotation text too long": (
            "POST",
            f"{anno}/{TAGS}/annotations",
            {"annotations": [{"pt": {"position": [1, 2, 3]}, "tag": "x" * 70_000}]},
            400,
            "longer than",
        ),
        "runs limit -1": ("GET", f"/admin/api/v1/datastack/{ds}/runs?limit=-1", None, 422, "limit"),
        "run id 2**64": ("GET", f"/admin/api/v1/runs/{2**64}", None, 422, "run_id"),
        "ingest chunk_rows -5": (
            "POST",
            f"/admin/api/v1/datastack/{ds}/ingest",
            {"chunk_rows": -5},
            422,
            "chunk_rows",
        ),
        "notice with CR/LF": (
            "POST",
            anno,
            {
                "table_name": "noticed",
                "schema_type": "bound_tag",
                "metadata": {"notice_text": "a\r\nX-Evil: 1"},
            },
            400,
            "CR/LF",
        ),
        "name with trailing newline": (
            "POST",
            anno,
            {"table_name": "trailing\n", "schema_type": "bound_tag", "metadata": {}},
            400,
            "invalid table name",
        ),
        "voxel resolution inf": (
            "POST",
            "/admin/api/v1/datastacks",
            b'{"name": "infres", "segmentation_source": "precomputed://file:///x", '
            b'"voxel_resolution": [Infinity, 4, 40]}',
            400,
            "finite",
        ),
        "voxel resolution 1e999": (
            "POST",
            "/admin/api/v1/datastacks",
            b'{"name": "infres", "segmentation_source": "precomputed://file:///x", '
            b'"voxel_resolution": [1e999, 4, 40]}',
            400,
            "finite",
        ),
        "chunkedgraph bad body": (
            "POST",
            f"/segmentation/api/v1/table/{pcg}/is_latest_roots",
            {"nodes": 1},
            400,
            "request body must be JSON",
        ),
    }


CASE_NAMES = list(_cases("ds", "pcg"))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_is_a_json_4xx_and_changes_nothing(server, loaded, engine, tagged, case):
    method, path, body, status, fragment = _cases(loaded.datastack, loaded.info.pcg_name)[case]
    before = snapshot(engine, loaded.datastack)
    kw: dict = {}
    if isinstance(body, bytes):
        kw = {"content": body, "headers": {"Content-Type": "application/json"}}
    elif body is not None:
        # ensure_ascii escapes lone surrogates as \udxxx, as any JSON client may send them
        kw = {"content": json.dumps(body).encode(), "headers": {"Content-Type": "application/json"}}
    token = "root" if path.startswith("/admin/api/v1/datastacks") else "admin"
    r = _request(server, method, path, token=token, **kw)
    assert_refused(r, status, fragment)
    assert snapshot(engine, loaded.datastack) == before


def test_a_version_query_streams_whole_or_fails_before_the_first_byte(server, loaded):
    """A value PostgreSQL refuses mid-query is an error answer, never a 200 whose stream breaks."""
    mat = f"/materialize/api/v3/datastack/{loaded.datastack}"
    r = _request(
        server,
        "POST",
        f"{mat}/version/1/table/synapses/query?return_pyarrow=False",
        json={
            "filter_greater_dict": {"synapses": {"pre_pt_position_x": 1e300}},
            "desired_resolution": [1e-300, 1, 1],
        },
    )
    assert r.status_code in (200, 400, 422), r.text[:300]
    if r.status_code == 200:
        json.loads(r.text)  # the whole body arrived and parses (no Infinity, no cut)


def test_gzip_bomb_is_refused_without_inflating_it(server, loaded, engine):
    before = snapshot(engine, loaded.datastack)
    bomb = gzip.compress(b'{"a": "' + b"0" * (64 * 1024 * 1024) + b'"}')
    assert len(bomb) < 200_000
    path = f"/materialize/api/v3/datastack/{loaded.datastack}/version/1/table/synapses/query"
    r = _request(
        server,
        "POST",
        path,
        content=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert_refused(r, 413, "MATENGINE_MAX_BODY_BYTES")
    # a small gzip body is inflated and read as usual
    small = gzip.compress(json.dumps({"limit": 3}).encode())
    r = _request(
        server,
        "POST",
        path + "?return_pyarrow=False",
        content=small,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and len(r.json()) == 3
    assert snapshot(engine, loaded.datastack) == before


def test_plain_bodies_over_the_limit_are_refused(server, loaded):
    path = f"/materialize/api/v3/datastack/{loaded.datastack}/version/1/table/synapses/query"
    r = _request(
        server,
        "POST",
        path,
        content=b" " * (16 * 1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_refused(r, 413, "larger than 16777216 bytes")
    r = _request(server, "POST", path, content=b"{}", headers={"Content-Encoding": "br"})
    assert_refused(r, 415, "unsupported Content-Encoding")


def test_refusals_do_not_name_other_datastacks(server, loaded, engine):
    pcg = loaded.info.pcg_name
    r = _request(
        server,
        "POST",
        f"/segmentation/api/v1/table/{pcg}/is_latest_roots",
        token="other",
        json={"node_ids": [1]},
    )
    assert_refused(r, 403, f"chunkedgraph table {pcg!r}")
    assert loaded.datastack not in r.text
    run_id = _request(server, "GET", f"/admin/api/v1/datastack/{loaded.datastack}/runs").json()[0]["id"]
    for method, path in (
        ("GET", f"/admin/api/v1/runs/{run_id}"),
        ("POST", f"/admin/api/v1/runs/{run_id}/cancel"),
    ):
        r = _request(server, method, path, token="other")
        assert_refused(r, 403, f"on run {run_id}")
        assert loaded.datastack not in r.text


def test_cookie_authenticated_changes_need_our_origin(server, loaded, engine):
    before = snapshot(engine, loaded.datastack)
    path = f"/admin/api/v1/datastack/{loaded.datastack}/remove_expired?dry_run=true"
    cookies = {"middle_auth_token": server.tokens["admin"]}
    own = server.url.removeprefix("http://")

    def post(p, **headers):
        with httpx.Client(base_url=server.url, cookies=cookies, timeout=30) as h:
            return h.post(p, headers=headers)

    assert_refused(post(path), 403, "must send an Origin header of this server")
    assert_refused(post(path, Origin="https://evil.example"), 403, "cross-site request refused")
    assert_refused(post(path, Referer="https://evil.example/page"), 403, "cross-site request refused")
    assert_refused(post(path, Origin="null"), 403, "cross-site request refused")
    run_id = _request(server, "GET", f"/admin/api/v1/datastack/{loaded.datastack}/runs").json()[0]["id"]
    assert_refused(
        post(f"/admin/api/v1/runs/{run_id}/cancel", Origin="https://evil.example"), 403, "cross-site"
    )
    assert snapshot(engine, loaded.datastack) == before
    # a page of this server may; so may a bearer token from anywhere (it cannot be forged)
    assert post(path, Origin=f"http://{own}").status_code == 200
    r = _request(server, "POST", path, headers={"Origin": "https://elsewhere.example"})
    assert r.status_code == 200


def test_expired_tokens_are_refused_and_listed_as_expired(server, loaded, engine):
    import time

    token_id, token = auth.create_token(
        engine, loaded.datastack, "view", "short-lived", expires_in=timedelta(seconds=1)
    )
    url = f"{server.url}/materialize/api/v3/datastack/{loaded.datastack}/versions"
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    time.sleep(1.2)
    r = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert_refused(r, 401, "token expired")
    row = next(t for t in auth.list_tokens(engine) if t["id"] == token_id)
    assert row["expired"] is True and row["expires"] is not None


def test_token_create_expires_in_through_the_cli(engine, loaded):
    from typer.testing import CliRunner

    from matengine.cli import app

    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "token",
            "create",
            "--datastack",
            loaded.datastack,
            "--permission",
            "view",
            "--expires-in",
            "2h",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    made = json.loads(r.stdout)
    listed = json.loads(runner.invoke(app, ["token", "list", "--json"]).stdout)
    row = next(t for t in listed if t["id"] == made["id"])
    assert row["expires"] == made["expires"] and row["expired"] is False
    r = runner.invoke(
        app, ["token", "create", "--datastack", "*", "--permission", "view", "--expires-in", "-5"]
    )
    assert r.exit_code != 0 and "expected a duration" in str(r.exception)
    with pytest.raises(Exception, match="duration"):
        auth.parse_duration("1y")


def test_graphene_proxy_sends_the_servers_token_not_the_callers(engine, loaded):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    seen: list[dict] = []
    remote = FastAPI()

    @remote.post("/segmentation/api/v1/table/rec_pcg/is_latest_roots")
    async def record(request: Request):
        seen.append(dict(request.headers))
        return {"is_latest": [True]}

    name = f"rec_{uuid.uuid4().hex[:8]}"
    settings = get_settings().model_copy(update={"segmentation_token": "server-own-secret"})
    with ThreadedServer(remote) as rsrv, ThreadedServer(create_app(settings, engine=engine)) as srv:
        catalog.add_datastack(
            engine,
            name,
            segmentation_source=f"graphene://{rsrv.url}/segmentation/table/rec_pcg",
            voxel_resolution=(4, 4, 40),
        )
        try:
            caller = auth.create_token(engine, name, "view")[1]
            r = httpx.post(
                f"{srv.url}/segmentation/api/v1/table/rec_pcg/is_latest_roots",
                json={"node_ids": [1]},
                headers={"Authorization": f"Bearer {caller}"},
                cookies={"middle_auth_token": caller},
            )
            assert r.status_code == 200, r.text
        finally:
            catalog.drop_datastack(engine, name)
    [headers] = seen
    assert headers["authorization"] == "Bearer server-own-secret"
    assert caller not in json.dumps(headers)


def test_a_no_auth_server_refuses_changes_from_other_sites(engine, loaded):
    """--no-auth admits every loopback caller: a page of another site open in the same
    machine's browser must not be able to start work on it."""
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    before = snapshot(engine, loaded.datastack)
    path = f"/admin/api/v1/datastack/{loaded.datastack}/remove_expired?dry_run=true"
    with ThreadedServer(create_app(get_settings(), auth_enabled=False, engine=engine)) as srv:
        for origin in ("https://evil.example", "null"):
            assert_refused(
                httpx.post(srv.url + path, headers={"Origin": origin}), 403, "cross-site request refused"
            )
        assert snapshot(engine, loaded.datastack) == before
        # the CLI and scripts send no Origin; a page of the server itself sends its own
        assert httpx.post(srv.url + path).status_code == 200
        own = srv.url.removeprefix("http://")
        assert httpx.post(srv.url + path, headers={"Origin": f"http://{own}"}).status_code == 200


def test_the_dashboard_login_refuses_other_sites(server):
    """Login CSRF: another site must not set the browser's cookie to a token of its choosing."""
    r = httpx.post(
        server.url + "/dashboard/login",
        data={"token": server.tokens["view"]},
        headers={"Origin": "https://evil.example"},
    )
    assert_refused(r, 403, "cross-site request refused")
    assert "set-cookie" not in r.headers
    own = server.url.removeprefix("http://")
    r = httpx.post(
        server.url + "/dashboard/login",
        data={"token": server.tokens["view"]},
        headers={"Origin": f"http://{own}"},
    )
    assert r.status_code == 303 and "middle_auth_token=" in r.headers["set-cookie"]
