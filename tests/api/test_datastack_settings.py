"""Datastack settings: the info fields Neuroglancer and caveclient's info client read (set by
CLI, admin route and config) and the live schedule (ingest + update-roots, no version)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import text
from typer.testing import CliRunner

from matengine import annotations as ann
from matengine import auth, catalog
from matengine.config import DatastackConfig
from matengine.query import meta


@pytest.fixture(scope="module")
def stack(engine, loaded, server):
    from caveclient import CAVEclient

    logging.getLogger("caveclient").setLevel(logging.ERROR)
    ds = f"info_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        ds,
        segmentation_source=loaded.info.graph_url,
        voxel_resolution=loaded.info.annotation_resolution,
    )
    tokens = {p: auth.create_token(engine, ds, p, p)[1] for p in ("view", "admin")}
    yield (
        ds,
        tokens,
        lambda: CAVEclient(
            ds, server_address=server.url, auth_token=tokens["view"], write_server_cache=False
        ),
    )
    catalog.drop_datastack(engine, ds)


def test_info_set_by_cli_is_what_caveclient_reads(stack):
    from matengine.cli import app

    ds, _, make_client = stack
    result = CliRunner().invoke(
        app,
        [
            "datastack", "set-info", ds,
            "--image-source", "precomputed://gs://bucket/em",
            "--viewer-site", "https://neuroglancer.example.org",
            "--skeleton-source", "precomputed://gs://bucket/skeletons",
            "--synapse-table", "synapses_v2",
            "--soma-table", "nuclei",
            "--description", "a moved-in lab",
            "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["info"]["soma_table"] == "nuclei"
    client = make_client()
    assert client.info.image_source() == "precomputed://gs://bucket/em"
    assert client.info.viewer_site() == "https://neuroglancer.example.org"
    info = client.info.get_datastack_info()
    assert info["skeleton_source"] == "precomputed://gs://bucket/skeletons"
    assert (info["synapse_table"], info["soma_table"]) == ("synapses_v2", "nuclei")
    assert info["description"] == "a moved-in lab"


def test_info_set_by_admin_route_and_refusals(stack, server, engine):
    ds, tokens, make_client = stack
    url = f"{server.url}/admin/api/v1/datastack/{ds}/info"
    r = requests.put(url, json={"viewer_site": "https://ng2.example.org", "soma_table": ""},
                     headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert make_client().info.viewer_site() == "https://ng2.example.org"
    before = catalog.get_datastack(engine, ds)
    assert "soma_table" not in before.info
    for body, status, message in (
        ({"viewer_site": "javascript:alert(1)"}, 400, "viewer_site must be an http(s) URL"),
        ({"image_source": "no-scheme"}, 400, "image_source must be a URL"),
        ({"synapse_table": "Robert'); --"}, 400, "synapse_table must be a table name"),
        ({"viewer_site": "https://x/" + "a" * 3000}, 422, None),
        ({"unknown": "x"}, 422, None),
    ):
        r = requests.put(url, json=body, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30)
        assert r.status_code == status, r.text
        if message:
            assert message in r.json()["message"]
            assert "alert" not in r.text and "Robert" not in r.text  # never echoed
    viewer = {"Authorization": f"Bearer {tokens['view']}"}
    r = requests.put(url, json={"viewer_site": "https://evil"}, headers=viewer, timeout=30)
    assert r.status_code == 403
    assert catalog.get_datastack(engine, ds) == before


def test_info_from_config(engine, stack):
    ds, _, _ = stack
    declared = catalog.get_datastack(engine, ds)
    config = DatastackConfig(
        segmentation_source=declared.segmentation_source,
        voxel_resolution=declared.voxel_resolution,
        image_source="precomputed://gs://bucket/em-config",
        live_schedule="0 * * * *",
    )
    assert catalog.sync_declared_datastacks(engine, {ds: config}) == []
    after = catalog.get_datastack(engine, ds)
    assert after.info["image_source"] == "precomputed://gs://bucket/em-config"
    assert after.live_schedule == "0 * * * *"
    catalog.set_live_schedule(engine, ds, None)


def test_live_schedule_ingests_and_updates_roots_without_a_version(engine, loaded, stack):
    from matengine.workflows.schedule import run_due
    from matengine.workflows.submit import wait_for

    ds, _, _ = stack
    catalog.create_table(engine, ds, "tags", schema="bound_tag")
    positions = loaded.rows.base["pre_pt_position"][:5]
    ann.insert_annotations(
        engine, ds, "tags", [{"pt": {"position": p.tolist()}, "tag": "x"} for p in positions]
    )
    catalog.set_live_schedule(engine, ds, "* * * * *")
    try:
        now = datetime.now(UTC)
        started = run_due(engine, now=now)
        mine = [r for r in started if wait_for(engine, r, timeout=60).datastack == ds]
        assert len(mine) == 1
        run = wait_for(engine, mine[0], timeout=60)
        assert (run.kind, run.state, run.parameters["scheduled"]) == ("sync_live", "SUCCESS", True)
        t = catalog.get_table(engine, ds, "tags")
        with engine.connect() as conn:
            pending = conn.execute(
                text(f"SELECT count(*) FROM {t.names.segmentation_q} WHERE pt_supervoxel_id IS NULL")
            ).scalar_one()
        assert pending == 0
        assert t.roots_last_updated is not None and t.roots_last_updated >= now - timedelta(seconds=5)
        assert meta.list_versions(engine, ds) == []  # no version made
    finally:
        catalog.set_live_schedule(engine, ds, None)
