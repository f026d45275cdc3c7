"""The export admin route (202 + run id), its refusals, and the Neuroglancer annotation
sources served per datastack/version/table with the same auth."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from matengine import auth
from matengine.workflows import runs


@pytest.fixture(scope="module")
def served(engine, versioned, tmp_path_factory):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    ds, when = versioned
    tokens = {p: auth.create_token(engine, ds, p, f"export test {p}")[1] for p in ("view", "admin")}
    settings = get_settings().model_copy(update={"home": tmp_path_factory.mktemp("home")})
    with ThreadedServer(create_app(settings, engine=engine)) as srv:
        yield srv.url, ds, when, tokens


def _client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


def _wait(client: httpx.Client, url: str) -> dict:
    for _ in range(600):
        run = client.get(url).json()
        if run["state"] not in ("PENDING", "RUNNING"):
            return run
        time.sleep(0.1)
    raise TimeoutError(url)


def test_export_over_rest_returns_202_and_finishes(served, tmp_path):
    url, ds, _, tokens = served
    admin = _client(url, tokens["admin"])
    body = {"version": 1, "to": f"file://{tmp_path}/out", "format": "parquet", "neuroglancer": True}
    r = admin.post(f"/admin/api/v1/datastack/{ds}/export", json=body)
    assert r.status_code == 202, r.text
    run = _wait(admin, r.headers["Location"])
    assert run["state"] == "SUCCESS", run["errors"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["tables"]["synapses"]["neuroglancer"] == "synapses.neuroglancer"
    info = json.loads((tmp_path / "out" / "synapses.neuroglancer" / "info").read_text())
    assert info["@type"] == "neuroglancer_annotations_v1" and info["annotation_type"] == "line"


def test_a_view_token_cannot_export(served, tmp_path):
    url, ds, _, tokens = served
    r = _client(url, tokens["view"]).post(
        f"/admin/api/v1/datastack/{ds}/export", json={"version": 1, "to": f"file://{tmp_path}/out"}
    )
    assert r.status_code == 403
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("file:///tmp/a/../b", "destination must not contain '..' segments or backslashes"),
        ("http://example.org/x", "destination must start with file://, gs:// or s3://"),
        ("file://relative/x", "file:// destinations must be an absolute folder, not /"),
        ("file:///", "file:// destinations must be an absolute folder, not /"),
        ("s3://user@bucket/x", "bucket destinations must be <scheme>://bucket/prefix"),
        ("gs://bucket/x?y=1", "destination must not have a query or fragment"),
    ],
)
def test_bad_destinations_are_refused_before_a_run(served, engine, to, message):
    url, ds, _, tokens = served
    before = len(runs.list_runs(engine, ds))
    route = f"/admin/api/v1/datastack/{ds}/export"
    r = _client(url, tokens["admin"]).post(route, json={"version": 1, "to": to})
    assert r.status_code == 400 and r.json()["message"] == f"field 'to': {message}"
    assert to not in r.text  # the caller's URL is not echoed
    assert len(runs.list_runs(engine, ds)) == before


def test_a_destination_outside_the_source_roots_is_refused(served, engine, tmp_path_factory):
    url, ds, _, tokens = served
    before = len(runs.list_runs(engine, ds))
    route = f"/admin/api/v1/datastack/{ds}/export"
    r = _client(url, tokens["admin"]).post(route, json={"version": 1, "to": "gs://someone-elses-bucket/x"})
    assert r.status_code == 400
    assert "is outside the configured source roots (MATENGINE_SOURCE_ROOTS)" in r.json()["message"]
    assert len(runs.list_runs(engine, ds)) == before


def test_unknown_table_and_version_are_refused(served):
    url, ds, _, tokens = served
    admin = _client(url, tokens["admin"])
    route = f"/admin/api/v1/datastack/{ds}/export"
    r = admin.post(route, json={"version": 1, "to": "file:///x", "tables": ["nope"]})
    assert r.status_code == 404 and "has no table 'nope'" in r.json()["message"]
    r = admin.post(route, json={"version": 9, "to": "file:///x"})
    assert r.status_code == 404 and "has no version 9" in r.json()["message"]
    r = admin.post(route, json={"version": 1, "to": "file:///x", "format": "csv"})
    assert r.status_code == 400
    assert r.json()["message"] == "field 'format': format must be one of parquet, delta"


def test_a_bad_order_is_refused_over_rest(served, engine, tmp_path):
    url, ds, _, tokens = served
    before = len(runs.list_runs(engine, ds))
    route = f"/admin/api/v1/datastack/{ds}/export"
    r = _client(url, tokens["admin"]).post(
        route, json={"version": 1, "to": f"file://{tmp_path}/out", "order": "x"}
    )
    assert r.status_code == 400
    assert r.json()["message"] == (
        "field 'order': order must be one of root, space (root: one root reads little; "
        "space: one box reads little)"
    )
    assert len(runs.list_runs(engine, ds)) == before
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_an_export_is_left_alone(engine, versioned, tmp_path):
    from workflows.helpers import run_inline  # noqa: F401  (registers workflows)

    from matengine.workflows.engine import execute_inline
    from matengine.workflows.export import export_lock, export_parameters

    ds, _ = versioned
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "thesis.tex").write_text("mine")
    params = export_parameters(engine, ds, 1, to=f"file://{tmp_path}/theirs")
    run_id = runs.create_run(engine, "export", params, datastack=ds, table_name=export_lock(1))
    run = execute_inline(engine, run_id)
    assert run.state == "FAILED"
    assert run.errors[-1]["message"] == (
        "field 'to': destination is not empty and holds no matengine export: choose an empty folder"
    )
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["thesis.tex"]


def test_the_cli_refuses_dotdot(versioned, tmp_path):
    from matengine.cli import app

    ds, _ = versioned
    result = CliRunner().invoke(app, ["export", ds, "--version", "1", "--to", f"file://{tmp_path}/a/../b"])
    assert result.exit_code != 0
    assert "'..'" in str(result.exception) or "'..'" in result.output
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ Neuroglancer sources


def _ids_of(blob: bytes) -> list[int]:
    """Annotation ids of a spatial or relationship file: count, records, then the ids."""
    (count,) = np.frombuffer(blob[:8], "<u8")
    return np.frombuffer(blob[len(blob) - 8 * int(count) :], "<u8").astype(np.int64).tolist()


def test_annotations_are_served_per_version_table_with_auth(served, oracle):
    url, ds, when, tokens = served
    base = f"/neuroglancer/annotations/{ds}/1/synapses"
    assert _client(url, None).get(f"{base}/info").status_code == 401
    viewer = _client(url, tokens["view"])
    info = viewer.get(f"{base}/info").json()
    assert [r["id"] for r in info["relationships"]] == ["pre_pt_root_id", "post_pt_root_id"]
    assert {p["id"] for p in info["properties"]} == {"size"}
    want = oracle.table_at("synapses", when)
    assert sorted(_ids_of(viewer.get(f"{base}/spatial0/0_0_0").content)) == want["id"].tolist()
    roots, counts = np.unique(want["post_pt_root_id"][want["post_pt_root_id"] != 0], return_counts=True)
    root = int(roots[np.argmax(counts)])
    got = _ids_of(viewer.get(f"{base}/rel_post_pt_root_id/{root}").content)
    assert sorted(got) == want["id"][want["post_pt_root_id"] == root].tolist()
    one = int(want["id"][0])
    assert viewer.get(f"{base}/by_id/{one}").status_code == 200
    assert viewer.get(f"{base}/..%2F..%2Finfo").status_code == 404
    assert viewer.get(f"/neuroglancer/annotations/{ds}/1/nope/info").status_code == 404


def test_the_dashboard_links_each_version_table_to_a_neuroglancer_state(served, engine):
    import urllib.parse

    url, ds, _, tokens = served
    state = _client(url, tokens["view"]).get("/dashboard/api/state").json()
    (version,) = [v for v in state["versions"] if v["datastack"] == ds]
    links = version["neuroglancer"]
    assert sorted(links) == ["cells", "synapses"]
    client, _, fragment = links["synapses"].partition("#!")
    ng = json.loads(urllib.parse.unquote(fragment))
    seg, ann = ng["layers"]
    assert ann["source"] == f"precomputed://{url}/neuroglancer/annotations/{ds}/1/synapses"
    assert ann["filterBySegmentation"] == ["pre_pt_root_id", "post_pt_root_id"]
    assert seg["source"].startswith(f"precomputed://{url}/segmentation/table/")


def test_a_text_column_becomes_an_enum_property(served, oracle):
    url, ds, when, tokens = served
    info = _client(url, tokens["view"]).get(f"/neuroglancer/annotations/{ds}/1/cells/info").json()
    assert info["annotation_type"] == "point"
    (prop,) = [p for p in info["properties"] if p["id"] == "cell_type"]
    labels = sorted({str(v) for v in oracle.table_at("cells", when)["cell_type"]})
    assert prop["type"] == "uint32" and prop["enum_labels"] == labels
    assert prop["enum_values"] == list(range(len(labels)))


def test_only_the_neuroglancer_sources_answer_cross_origin(served):
    url, ds, _, tokens = served
    viewer = _client(url, tokens["view"])
    origin = {"Origin": "http://neuroglancer.example"}
    r = viewer.get(f"/neuroglancer/annotations/{ds}/1/synapses/info", headers=origin)
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers
    r = viewer.get(f"/materialize/api/v3/datastack/{ds}/versions", headers=origin)
    assert "access-control-allow-origin" not in r.headers


def test_neuroglancer_annotations_of_a_table_too_big_are_refused_before_a_run(engine, versioned, monkeypatch):
    from matengine.export import neuroglancer
    from matengine.workflows.export import export_parameters

    ds, _ = versioned
    monkeypatch.setattr(neuroglancer, "MAX_ROWS", 100)
    before = len(runs.list_runs(engine, ds))
    with pytest.raises(Exception) as err:
        export_parameters(engine, ds, 1, to="file:///x", neuroglancer=True)
    assert str(err.value) == (
        "field 'neuroglancer': table 'cells' has 200 rows; Neuroglancer annotations are written for at "
        "most 100 (leave out --neuroglancer, or that table)"
    )
    assert len(runs.list_runs(engine, ds)) == before
