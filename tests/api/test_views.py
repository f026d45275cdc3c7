"""Views through caveclient (``get_views``, ``get_view_metadata``, ``get_view_schema(s)``,
``query_view``, ``client.materialize.views``), frozen with the version they were in, live
at T exactly at an edit and 1 µs before, against the expected rows of the live-join tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
import requests

from matengine import auth, views

from .helpers import complete
from .test_live_joins import _expected_join, _quiet_caveclient, joined  # noqa: F401 (fixtures)

ONE_US = timedelta(microseconds=1)
SYN_VIEW = {
    "tables": ["syn"],
    "filters": {"filter_greater_dict": {"syn": {"size": 9.5}}},
    "select_columns": ["id", "pre_pt_root_id", "pre_pt_position", "size"],
    "rename": {"pre_pt_root_id": "pre_root", "pre_pt_position": "pre_position"},
}
JOIN_VIEW = {
    "tables": [["syn_pts", "target_id"], ["syn", "id"]],
    "suffixes": {"syn_pts": "_ref", "syn": ""},
    "select_columns": {
        "syn_pts": ["id", "target_id", "pt_supervoxel_id", "pt_root_id"],
        "syn": ["id", "pre_pt_root_id", "post_pt_root_id", "size"],
    },
}


@pytest.fixture(scope="module")
def viewed(engine, joined):  # noqa: F811 (the imported fixture)
    client, name, te, expected = joined
    views.define_view(engine, name, "big_syn", SYN_VIEW, "synapses larger than 9.5")
    views.define_view(engine, name, "tagged", JOIN_VIEW, "reference points with their synapse")
    now = datetime.now(UTC)
    version = complete(engine, name, now)
    # defined after the version: not part of it
    views.define_view(engine, name, "late", SYN_VIEW, "made after the version")
    return client, name, te, expected, version, now


def _syn_expected(expected, oracle, t):
    syn = expected["syn"]
    dead = syn["deleted"].map(lambda d: d is not None and d <= t)
    rows = syn[(syn["created"] <= t) & ~dead & (syn["size"] > 9.5)].sort_values("id")
    return rows, oracle.roots_at(rows["pre_sv"].to_numpy(np.uint64), t).astype(np.int64)


def test_views_of_a_version(viewed):
    client, _, _, _, version, _ = viewed
    listed = client.materialize.get_views(version)
    assert sorted(listed) == ["big_syn", "tagged"]  # "late" came after the version
    assert listed["big_syn"]["description"] == "synapses larger than 9.5"
    meta = client.materialize.get_view_metadata("tagged", materialization_version=version)
    assert meta["live_compatible"] is True and meta["table_name"] == "tagged"
    schema = client.materialize.get_view_schema("big_syn", materialization_version=version)
    assert schema == {
        "id": {"type": "integer"},
        "pre_position": {"type": "SpatialPoint"},
        "pre_root": {"type": "integer"},
        "size": {"type": "float"},
    }
    assert set(client.materialize.get_view_schemas(materialization_version=version)) == {"big_syn", "tagged"}


def test_query_view_with_filters_select_limit_and_resolution(viewed, loaded):
    client, _, _, expected, version, now = viewed
    rows, roots = _syn_expected(expected, loaded.oracle, now)
    df = client.materialize.query_view("big_syn", materialization_version=version, split_positions=True)
    assert df.sort_values("id")["id"].tolist() == rows["id"].tolist()
    assert df.sort_values("id")["pre_root"].tolist() == roots.tolist()
    assert {"pre_position_x", "pre_position_y", "pre_position_z"} <= set(df.columns)
    root = int(np.bincount(np.unique(roots, return_inverse=True)[1]).argmax())
    root = int(np.unique(roots)[root])
    got = client.materialize.query_view(
        "big_syn",
        materialization_version=version,
        filter_equal_dict={"pre_root": root},
        select_columns=["id", "pre_root"],
    )
    assert sorted(got["id"]) == rows["id"][roots == root].tolist() and list(got.columns) == ["id", "pre_root"]
    page = client.materialize.query_view(
        "big_syn", materialization_version=version, limit=3, offset=2, split_positions=True
    )
    assert page["id"].tolist() == rows["id"].tolist()[2:5]
    scaled = client.materialize.query_view(
        "big_syn", materialization_version=version, desired_resolution=[1, 1, 1], split_positions=True
    )
    res = np.asarray(loaded.info.annotation_resolution)
    np.testing.assert_allclose(
        scaled.sort_values("id")["pre_position_x"].to_numpy(),
        df.sort_values("id")["pre_position_x"].to_numpy() * res[0],
    )
    counted = client.materialize.query_view("big_syn", materialization_version=version, get_counts=True)
    assert counted["count"].tolist() == [len(rows)]


def test_views_interface(viewed, loaded):
    client, _, _, expected, version, now = viewed
    client.materialize.version = version
    rows, roots = _syn_expected(expected, loaded.oracle, now)
    df = client.materialize.views.big_syn().query(split_positions=True)
    assert df.sort_values("id")["pre_root"].tolist() == roots.tolist()


def test_join_view_at_a_version(viewed, loaded):
    client, _, _, expected, version, now = viewed
    got = client.materialize.query_view("tagged", materialization_version=version)
    want = _expected_join(loaded.oracle, expected, now)
    got = got.sort_values("id_ref").reset_index(drop=True)
    assert got["id_ref"].tolist() == want["id_ref"].tolist()
    assert got["pt_root_id_ref"].tolist() == want["pt_root"].tolist()
    assert got["pre_pt_root_id"].tolist() == want["pre_root"].tolist()


def _live_view(client, name, view, t, body=None):
    mat = client.materialize
    url = f"{mat._server_address}/materialize/api/v3/datastack/{name}/views/{view}/query"
    r = mat.session.post(url, json={"timestamp": t.isoformat(), **(body or {})})
    r.raise_for_status()
    with pa.ipc.open_stream(r.content) as reader:
        return reader.read_pandas()


@pytest.mark.parametrize("shift", [timedelta(0), -ONE_US])
def test_views_live_at_an_edit_and_1us_before(viewed, loaded, shift):
    client, name, te, expected, _, _ = viewed
    t = te + shift
    got = _live_view(client, name, "tagged", t)
    want = _expected_join(loaded.oracle, expected, t)
    got = got.sort_values("id_ref").reset_index(drop=True)
    assert got["id_ref"].tolist() == want["id_ref"].tolist()
    assert got["pt_root_id_ref"].tolist() == want["pt_root"].tolist()
    assert got["post_pt_root_id"].tolist() == want["post_root"].tolist()
    rows, roots = _syn_expected(expected, loaded.oracle, t)
    single = _live_view(client, name, "big_syn", t).sort_values("id")
    assert single["id"].tolist() == rows["id"].tolist() and single["pre_root"].tolist() == roots.tolist()


def test_a_redefined_view_keeps_its_old_definition_in_old_versions(engine, viewed, loaded):
    client, name, _, expected, version, now = viewed
    before = client.materialize.query_view("big_syn", materialization_version=version)
    narrower = dict(SYN_VIEW, filters={"filter_greater_dict": {"syn": {"size": 30.5}}})
    views.define_view(engine, name, "big_syn", narrower, "synapses larger than 30.5")
    try:
        again = client.materialize.query_view("big_syn", materialization_version=version)
        assert sorted(again["id"]) == sorted(before["id"])
        live = _live_view(client, name, "big_syn", datetime.now(UTC))
        assert sorted(live["id"]) == sorted(expected["syn"]["id"][expected["syn"]["size"] > 30.5].tolist())
    finally:
        views.define_view(engine, name, "big_syn", SYN_VIEW, "synapses larger than 9.5")


def _admin(server, name, method, path="", body=None, role="admin", token=None):
    headers = {"Authorization": f"Bearer {token or server.tokens[role]}"}
    url = f"{server.url}/admin/api/v1/datastack/{name}/views{path}"
    return requests.request(method, url, json=body, headers=headers, timeout=30)


def test_admin_routes_define_list_and_drop(engine, viewed, server):
    _, name, _, _, _, _ = viewed
    admin = auth.create_token(engine, name, "admin")[1]
    viewer = auth.create_token(engine, name, "view")[1]
    body = {"name": "tmp_view", "definition": SYN_VIEW, "description": "x"}
    r = _admin(server, name, "POST", body=body, token=viewer)
    assert r.status_code == 403 and [v.name for v in views.list_views(engine, name)].count("tmp_view") == 0
    assert _admin(server, name, "POST", body=body, token=admin).status_code == 201
    listed = _admin(server, name, "GET", token=admin).json()
    assert "tmp_view" in [v["name"] for v in listed]
    assert _admin(server, name, "DELETE", "/tmp_view", token=admin).status_code == 200
    assert _admin(server, name, "DELETE", "/tmp_view", token=admin).status_code == 404


@pytest.mark.parametrize(
    "definition, message",
    [
        ({"tables": ["nope"]}, "nope"),
        ({"tables": ["syn"], "select_columns": ["nope"]}, "nope"),
        ({"tables": ["syn"], "filters": {"filter_equal_dict": {"syn": {"size": "x"}}}}, "expected a number"),
        ({"tables": [["syn_pts", "nope"], ["syn", "id"]]}, "has no column"),
        ({"tables": ["syn"], "sql": "DROP TABLE x"}, "unknown keys"),
        ({"tables": ["syn"], "rename": {"id": "size"}}, "appear twice"),
    ],
)
def test_bad_definitions_are_refused_and_store_nothing(engine, viewed, definition, message):
    _, name, _, _, _, _ = viewed
    before = [v.to_dict() for v in views.list_views(engine, name)]
    with pytest.raises(Exception, match=message):
        views.define_view(engine, name, "bad_view", definition)
    assert [v.to_dict() for v in views.list_views(engine, name)] == before


def test_filters_on_unknown_view_columns_are_refused(viewed):
    client, _, _, _, version, _ = viewed
    with pytest.raises(requests.HTTPError) as exc:
        client.materialize.query_view(
            "big_syn", materialization_version=version, filter_equal_dict={"pre_pt_root_id": 1}
        )
    assert exc.value.response.status_code == 400 and "has no column" in exc.value.response.text


def test_cli_define_list_drop(viewed, tmp_path, database_url):
    from typer.testing import CliRunner

    from matengine.cli import app

    _, name, _, _, _, _ = viewed
    path = tmp_path / "v.json"
    path.write_text(json.dumps(SYN_VIEW))
    runner = CliRunner()
    out = runner.invoke(app, ["view", "define", name, "cli_view", "--definition", str(path), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["name"] == "cli_view"
    out = runner.invoke(app, ["view", "list", name, "--json"])
    assert "cli_view" in [v["name"] for v in json.loads(out.output)]
    assert runner.invoke(app, ["view", "drop", name, "cli_view"]).exit_code == 0
