"""Admin routes over HTTP: start workflows (202 + run id), follow the run, refuse non-admins."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from sqlalchemy import text

from matengine import auth, catalog

from .helpers import TABLE_SCHEMAS, assert_same_rows, make_datastack, read_version, upload_params


@pytest.fixture
def served(engine, synth):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    name = f"adm_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, synth)
    tokens = {p: auth.create_token(engine, name, p, f"admin test {p}")[1] for p in ("view", "edit", "admin")}
    with ThreadedServer(create_app(get_settings(), engine=engine)) as srv:
        yield srv.url, name, tokens
    catalog.drop_datastack(engine, name)


def _wait(client: httpx.Client, url: str) -> dict:
    for _ in range(300):
        run = client.get(url).json()
        if run["state"] not in ("PENDING", "RUNNING"):
            return run
        time.sleep(0.1)
    raise TimeoutError(url)


def test_workflows_start_over_rest_and_finish(served, engine, synth, oracle):
    url, name, tokens = served
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30)
    for table in TABLE_SCHEMAS:
        roots = synth.initial_timestamp.isoformat() if table == "synapses" else None
        body = upload_params(name, synth.directory, table, synth.start.isoformat(), roots)
        body.pop("datastack")
        r = admin.post(f"/admin/api/v1/datastack/{name}/bulk_upload", json=body)
        assert r.status_code == 202, r.text
        assert _wait(admin, r.headers["Location"])["state"] == "SUCCESS"
    r = admin.post(f"/admin/api/v1/datastack/{name}/ingest", json={"timestamp": synth.start.isoformat()})
    assert _wait(admin, r.headers["Location"])["state"] == "SUCCESS"
    when = synth.edit_timestamps[20]
    r = admin.post(f"/admin/api/v1/datastack/{name}/complete", json={"timestamp": when.isoformat()})
    assert r.status_code == 202
    run = _wait(admin, f"/admin/api/v1/runs/{r.json()['run_id']}")
    assert run["state"] == "SUCCESS" and run["result"]["version"] == 1
    versions = admin.get(f"/admin/api/v1/datastack/{name}/versions").json()
    assert [(v["version"], v["status"]) for v in versions] == [(1, "AVAILABLE")]
    for table in TABLE_SCHEMAS:
        assert_same_rows(read_version(engine, name, 1, table), oracle.table_at(table, when))


def test_bad_upload_is_refused_at_once_with_the_file_named(served, tmp_path, engine):
    url, name, tokens = served

    def upload(source: str, mapping: dict) -> httpx.Response:
        return httpx.post(
            f"{url}/admin/api/v1/datastack/{name}/bulk_upload",
            headers={"Authorization": f"Bearer {tokens['admin']}"},
            json={"table": "t", "schema": "synapse", "source": source, "column_mapping": mapping},
        )

    with engine.connect() as conn:
        runs_before = conn.execute(text("SELECT count(*) FROM matengine.workflow_runs")).scalar()
    r = upload(f"file://{tmp_path}/nonexistent", {"id": "id"})
    assert r.status_code == 400
    assert "missing file id.npy" in r.json()["message"]
    # outside the source roots, or a name leaving the folder: refused before anything is read
    r = upload("file:///etc", {"passwd": "id"})
    assert r.status_code == 400 and "outside the configured source roots" in r.json()["message"]
    r = upload(f"file://{tmp_path}", {"../../etc/passwd": "id"})
    assert r.status_code == 400 and "must be a plain name in the source folder" in r.json()["message"]
    r = upload(f"http://127.0.0.1:{22}/x", {"id": "id"})
    assert r.status_code == 400 and "outside the configured source roots" in r.json()["message"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM matengine.workflow_runs")).scalar() == runs_before


@pytest.mark.parametrize("who", [None, "view", "edit"])
def test_non_admins_cannot_start_workflows(served, engine, who):
    url, name, tokens = served
    headers = {"Authorization": f"Bearer {tokens[who]}"} if who else {}
    r = httpx.post(f"{url}/admin/api/v1/datastack/{name}/complete", json={}, headers=headers)
    assert r.status_code == (401 if who is None else 403)
    from matengine.workflows import runs

    assert not [x for x in runs.list_runs(engine, name)]
