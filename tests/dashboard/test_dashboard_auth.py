"""The dashboard over HTTP: login form without a token, cookie login, and per-datastack
visibility (a view token for A sees nothing of B; error texts need admin)."""

from __future__ import annotations

import json
import re

import httpx

from .conftest import ERROR_A, SECRET_ERROR_B


def _b_markers(stacks) -> list[str]:
    return [stacks.b, stacks.table_b, "12345", SECRET_ERROR_B, "secret-b-bucket"]


def _embedded_state(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="initial-state">(.*?)</script>', page, re.S)
    assert found, "no embedded state in the page"
    return json.loads(found.group(1))


def test_no_token_shows_the_login_form_and_no_data(served, stacks):
    r = httpx.get(served + "/")
    assert r.status_code == 200
    assert 'name="token"' in r.text and 'action="/dashboard/login"' in r.text
    assert "initial-state" not in r.text
    for marker in [stacks.a, stacks.table_a, *_b_markers(stacks)]:
        assert marker not in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["x-frame-options"] == "DENY"
    api = httpx.get(served + "/dashboard/api/state")
    assert api.status_code == 401
    assert stacks.a not in api.text and stacks.b not in api.text


def test_a_bad_token_gets_the_form_with_the_reason_and_loses_its_cookie(served, stacks):
    r = httpx.get(served + "/", cookies={"middle_auth_token": "me_not_a_real_token"})
    assert r.status_code == 401
    assert "unknown or revoked token" in r.text and 'name="token"' in r.text
    assert stacks.a not in r.text
    assert 'middle_auth_token=""' in r.headers.get("set-cookie", "")
    r = httpx.post(served + "/dashboard/login", data={"token": "me_wrong"})
    assert r.status_code == 401 and "unknown or revoked token" in r.text
    assert "set-cookie" not in r.headers


def test_login_stores_the_token_in_the_cookie_and_shows_only_what_it_may_view(served, stacks):
    with httpx.Client(base_url=served) as client:
        r = client.post("/dashboard/login", data={"token": stacks.tokens["view_a"]})
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("middle_auth_token=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie
        page = client.get("/")
        assert page.status_code == 200
        state = _embedded_state(page.text)
        api = client.get("/dashboard/api/state")
    assert api.status_code == 200
    for text in (page.text, api.text):
        for marker in _b_markers(stacks):
            assert marker not in text
    for data in (state, api.json()):
        assert [d["name"] for d in data["datastacks"]] == [stacks.a]
        assert [t["name"] for t in data["datastacks"][0]["tables"]] == [stacks.table_a]
        assert data["datastacks"][0]["tables"][0]["rows"] == 7
        assert {(v["datastack"], v["version"]) for v in data["versions"]} == {(stacks.a, 1)}
        assert [r["id"] for r in data["runs"]] == [stacks.runs["a"]]
        run = data["runs"][0]
        # a viewer sees that the run failed and how often, not the error text
        assert run["state"] == "FAILED" and run["error_count"] == 1 and run["errors"] == []
        assert ERROR_A not in json.dumps(data)


def test_the_bearer_header_works_too_and_admins_see_error_texts(served, stacks):
    r = httpx.get(
        served + "/dashboard/api/state", headers={"Authorization": f"Bearer {stacks.tokens['admin_a']}"}
    )
    assert r.status_code == 200
    runs = {x["id"]: x for x in r.json()["runs"]}
    assert runs[stacks.runs["a"]]["errors"][0]["message"] == ERROR_A
    assert stacks.b not in r.text and SECRET_ERROR_B not in r.text


def test_a_token_for_b_sees_b_and_not_a(served, stacks):
    r = httpx.get(served + "/", cookies={"middle_auth_token": stacks.tokens["view_b"]})
    state = _embedded_state(r.text)
    assert [d["name"] for d in state["datastacks"]] == [stacks.b]
    assert stacks.a not in r.text and ERROR_A not in r.text


def test_a_token_for_every_datastack_sees_both(served, stacks):
    r = httpx.get(
        served + "/dashboard/api/state", headers={"Authorization": f"Bearer {stacks.tokens['view_all']}"}
    )
    names = {d["name"] for d in r.json()["datastacks"]}
    assert {stacks.a, stacks.b} <= names


def test_logout_clears_the_cookie(served, stacks):
    with httpx.Client(base_url=served) as client:
        client.post("/dashboard/login", data={"token": stacks.tokens["view_a"]})
        assert stacks.a in client.get("/").text
        r = client.post("/dashboard/logout")
        assert r.status_code == 303
        page = client.get("/")
    assert 'name="token"' in page.text and stacks.a not in page.text


def test_auth_off_shows_everything_on_loopback(served_open, stacks):
    r = httpx.get(served_open + "/")
    assert r.status_code == 200
    state = _embedded_state(r.text)
    assert {stacks.a, stacks.b} <= {d["name"] for d in state["datastacks"]}
    assert "auth off" in r.text and "Log out" not in r.text
    runs = {x["id"]: x for x in httpx.get(served_open + "/dashboard/api/state").json()["runs"]}
    assert runs[stacks.runs["b"]]["errors"][0]["message"] == SECRET_ERROR_B


def test_static_files_are_served_and_nothing_else(served):
    js = httpx.get(served + "/dashboard/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert httpx.get(served + "/dashboard/static/dashboard.css").status_code == 200
    assert httpx.get(served + "/dashboard/static/..%2Fdashboard.py").status_code == 404
    assert httpx.get(served + "/dashboard/static/login.html").status_code == 404
