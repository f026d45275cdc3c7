"""Tokens on every route class (401 without / with an unknown or revoked token, 403 without
the permission or for another datastack, and nothing changes), and hostile input: names and
filters that try to reach SQL are refused with a 4xx naming the field, and change nothing."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from matengine import annotations as ann
from matengine import catalog


def _routes(ds: str, pcg: str) -> list[tuple[str, str, str, dict | None]]:
    """(needed permission, method, path, json body) for one route of each class."""
    mat = f"/materialize/api/v3/datastack/{ds}"
    anno = f"/annotation/api/v2/aligned_volume/{ds}/table"
    seg = f"/segmentation/api/v1/table/{pcg}"
    return [
        ("view", "GET", f"/info/api/v2/datastack/full/{ds}", None),
        ("view", "GET", f"{mat}/versions", None),
        ("view", "GET", f"{mat}/version/1/table/synapses/metadata", None),
        ("view", "POST", f"{mat}/version/1/table/synapses/query", {"limit": 2}),
        (
            "view",
            "POST",
            f"{mat}/query",
            {"table": "synapses", "limit": 2, "timestamp": "2024-01-15T00:00:00+00:00"},
        ),
        ("view", "GET", f"/materialize/api/v2/datastack/{ds}/version/1/table/synapses/count", None),
        ("view", "GET", anno, None),
        ("view", "GET", f"{anno}/synapses/annotations?annotation_ids=1,2", None),
        ("view", "POST", f"{seg}/is_latest_roots", {"node_ids": [1]}),
        (
            "edit",
            "POST",
            f"{anno}/authcheck/annotations",
            {
                "annotations": [
                    {
                        "pre_pt": {"position": [1, 2, 3]},
                        "ctr_pt": {"position": [1, 2, 3]},
                        "post_pt": {"position": [1, 2, 3]},
                        "size": 1.0,
                    }
                ]
            },
        ),
        ("edit", "DELETE", f"{anno}/authcheck/annotations", {"annotation_ids": [1]}),
        ("admin", "GET", f"/admin/api/v1/datastack/{ds}/runs", None),
    ]


RANK = {"view": 1, "edit": 2, "admin": 3}


def _count(engine, ds: str, table: str = "synapses") -> tuple[int, int]:
    t = catalog.get_table(engine, ds, table)
    with engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*), count(deleted) FROM {t.names.live_q}")).one())


def _call(
    server, method: str, path: str, body: dict | None, token: str | None = None, cookie: bool = False
) -> httpx.Response:
    headers, cookies = {}, {}
    if token and cookie:
        cookies["middle_auth_token"] = token
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=server.url, cookies=cookies, timeout=30) as h:
        return h.request(method, path, json=body, headers=headers)


def test_every_route_class_checks_tokens(server, loaded, engine):
    ds, pcg = loaded.datastack, loaded.info.pcg_name
    catalog.create_table(engine, ds, "authcheck", schema="synapse")
    ann.insert_annotations(
        engine,
        ds,
        "authcheck",
        [
            {
                "pre_pt": {"position": [1, 2, 3]},
                "ctr_pt": {"position": [1, 2, 3]},
                "post_pt": {"position": [1, 2, 3]},
            }
        ],
    )

    def state():
        return _count(engine, ds), _count(engine, ds, "authcheck")

    before = state()
    for needed, method, path, body in _routes(ds, pcg):
        assert _call(server, method, path, body).status_code == 401, path
        assert _call(server, method, path, body, "me_not_a_token").status_code == 401, path
        assert _call(server, method, path, body, server.tokens["revoked"]).status_code == 401
        assert _call(server, method, path, body, server.tokens["other"]).status_code == 403, path
        for role in ("view", "edit"):
            if RANK[role] < RANK[needed]:
                r = _call(server, method, path, body, server.tokens[role])
                assert r.status_code == 403, (path, role, r.text)
                assert "does not grant" in r.json()["message"]
        assert state() == before, f"refused {method} {path} changed a table"
    # allowed calls succeed, through the header and through caveclient's cookie alike
    for needed, method, path, body in _routes(ds, pcg):
        r = _call(server, method, path, body, server.tokens[needed], cookie=(needed == "view"))
        assert r.status_code == 200, (path, r.text)
    assert state()[1] == (2, 1)  # one posted, one deleted by the edit token
    assert _call(server, "GET", "/info/version", None).status_code == 200  # public


def test_openapi_docs(server):
    r = httpx.get(server.url + "/docs")
    assert r.status_code == 200
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/materialize/api/v3/datastack/{datastack_name}/query" in spec["paths"]


HOSTILE_NAMES = ["synapses; DROP TABLE synapses", 'synapses"--', "Synapses", "../etc", "synapses' OR '1'='1"]


def test_hostile_names_refused(server, loaded, engine):
    ds = loaded.datastack
    token = server.tokens["admin"]
    before = _count(engine, ds)
    for name in HOSTILE_NAMES:
        for method, path, body in [
            ("POST", f"/materialize/api/v3/datastack/{ds}/version/1/table/{name}/query", {}),
            (
                "POST",
                f"/materialize/api/v3/datastack/{ds}/query",
                {"table": name, "timestamp": "2024-01-15T00:00:00Z"},
            ),
            (
                "POST",
                f"/annotation/api/v2/aligned_volume/{ds}/table",
                {"table_name": name, "schema_type": "synapse", "metadata": {}},
            ),
        ]:
            r = _call(server, method, path, body, token)
            assert r.status_code in (400, 404), (name, path, r.status_code, r.text)
    bad_ds = f"{ds}; DROP SCHEMA {ds} CASCADE"
    r = _call(server, "GET", f"/materialize/api/v3/datastack/{bad_ds}/versions", None, token)
    assert r.status_code == 403
    assert _count(engine, ds) == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({"filter_in_dict": {"synapses": {"id; DROP TABLE x": [1]}}}, "id; DROP TABLE x"),
        ({"filter_in_dict": {"synapses": {"id": ["1); DELETE FROM x; --"]}}}, "filter_in_dict"),
        ({"filter_equal_dict": {"synapses": {"size": "1 OR 1=1"}}}, "size"),
        ({"filter_equal_dict": {"other_table": {"id": 1}}}, "filter_equal_dict"),
        ({"filter_spatial_dict": {"synapses": {"pre_pt_position": [[0, 0], [1, 1, 1]]}}}, "pre_pt_position"),
        ({"filter_spatial_dict": {"synapses": {"size": [[0, 0, 0], [1, 1, 1]]}}}, "size"),
        ({"filter_in_dict": {"synapses": {"pre_pt_position": [1]}}}, "pre_pt_position"),
        ({"select_columns": ["id", "1; DROP TABLE x"]}, "select_columns"),
        ({"desired_resolution": [4, 4]}, "desired_resolution"),
        ({"limit": -3}, "limit"),
        ({"filter_regex_dict": {"synapses": {"size": ".*"}}}, "size"),
    ],
)
def test_bad_filters_name_the_field(server, loaded, engine, body, field):
    ds = loaded.datastack
    before = _count(engine, ds)
    for path, extra in [
        (f"/materialize/api/v3/datastack/{ds}/version/2/table/synapses/query", {}),
        (
            f"/materialize/api/v3/datastack/{ds}/query",
            {"table": "synapses", "timestamp": "2024-01-15T00:00:00Z"},
        ),
    ]:
        r = _call(server, "POST", path, {**body, **extra}, server.tokens["view"])
        assert r.status_code == 400, r.text
        assert field in r.json()["message"], r.json()
    assert _count(engine, ds) == before


def test_string_values_are_bound(server, loaded, engine):
    """A value full of quotes matches exactly the row holding it, nothing more."""
    ds = loaded.datastack
    catalog.create_table(engine, ds, "tags", schema="bound_tag")
    evil = "x' OR '1'='1"
    ann.insert_annotations(
        engine,
        ds,
        "tags",
        [
            {"pt": {"position": [1, 2, 3]}, "tag": evil},
            {"pt": {"position": [4, 5, 6]}, "tag": "plain"},
            {"pt": {"position": [7, 8, 9]}, "tag": "x"},
        ],
    )
    path = f"/materialize/api/v3/datastack/{ds}/query?return_pyarrow=False&allow_missing_lookups=True"
    for filt, want in [
        ({"filter_equal_dict": {"tags": {"tag": evil}}}, [evil]),
        ({"filter_in_dict": {"tags": {"tag": [evil, "nope"]}}}, [evil]),
        ({"filter_regex_dict": {"tags": {"tag": "^x$"}}}, ["x"]),
        ({"filter_notin_dict": {"tags": {"tag": [evil]}}}, ["plain", "x"]),
    ]:
        r = _call(
            server,
            "POST",
            path,
            {"table": "tags", "timestamp": "2100-01-01T00:00:00Z"} | filt,
            server.tokens["view"],
        )
        assert r.status_code == 400 and "future" in r.text  # the far future is refused…
        from datetime import UTC, datetime

        r = _call(
            server,
            "POST",
            path,
            {"table": "tags", "timestamp": datetime.now(UTC).isoformat()} | filt,
            server.tokens["view"],
        )
        assert r.status_code == 200, r.text  # …now is answered
        assert sorted(row["tag"] for row in r.json()) == sorted(want)
