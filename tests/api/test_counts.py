"""Counts (``query_table(get_counts=True)``, live ``count=true``) and
``get_unique_string_values``, against numpy counts of what the tests inserted."""

from __future__ import annotations

import uuid
from datetime import datetime

import numpy as np
import pytest

from matengine import annotations as ann
from matengine import auth, catalog

from .helpers import days, expected_synapses


def _want(loaded, t, **filters) -> int:
    df = expected_synapses(loaded.rows, loaded.oracle, t)
    mask = np.ones(len(df), bool)
    for col, (op, value) in filters.items():
        v = df[col].to_numpy()
        if op == "in":
            mask &= np.isin(v, value)
        else:
            mask &= (v == value) if op == "eq" else (v > value)
    return int(mask.sum())


@pytest.mark.parametrize("version", [1, 2])
def test_version_counts_with_filters(client, loaded, version):
    t = loaded.versions[version]
    whole = client.materialize.query_table("synapses", materialization_version=version, get_counts=True)
    assert list(whole.columns) == ["count"] and int(whole["count"][0]) == _want(loaded, t)
    df = expected_synapses(loaded.rows, loaded.oracle, t)
    root = int(df["pre_pt_root_id"].value_counts().index[0])
    got = client.materialize.query_table(
        "synapses",
        materialization_version=version,
        filter_equal_dict={"pre_pt_root_id": root},
        filter_greater_dict={"size": 500},
        limit=3,  # counts ignore limit and offset, as MaterializationEngine's do
        get_counts=True,
    )
    assert int(got["count"][0]) == _want(loaded, t, pre_pt_root_id=("eq", root), size=("gt", 500))
    assert int(got["count"][0]) > 3


def _live_count(client, loaded, t: datetime, filters: dict | None = None) -> int:
    import pyarrow as pa

    mat = client.materialize
    url = f"{mat._server_address}/materialize/api/v3/datastack/{loaded.datastack}/query"
    body = {"table": "synapses", "timestamp": t.isoformat(), **(filters or {})}
    r = mat.session.post(url, json=body, params={"count": "true"})
    r.raise_for_status()
    with pa.ipc.open_stream(r.content) as reader:
        return int(reader.read_all().column("count")[0].as_py())


@pytest.mark.parametrize("offset", [5, 12, 20, 35])
def test_live_counts_at_any_time(client, loaded, offset):
    t = loaded.start + days(offset)
    assert _live_count(client, loaded, t) == _want(loaded, t)
    df = expected_synapses(loaded.rows, loaded.oracle, t)
    roots = [int(r) for r in df["post_pt_root_id"].value_counts().index[:2]]
    # root filters: exact at T even where stored roots are stale (counted after correction)
    got = _live_count(client, loaded, t, {"filter_in_dict": {"synapses": {"post_pt_root_id": roots}}})
    assert got == _want(loaded, t, post_pt_root_id=("in", roots)) and got > 0
    ids = df["id"].to_numpy()[::3].tolist()
    got = _live_count(client, loaded, t, {"filter_in_dict": {"synapses": {"id": ids}}})
    assert got == len(ids)


def test_count_refuses_bad_filters_like_a_query(client, loaded):
    from requests import HTTPError

    with pytest.raises(HTTPError) as exc:
        client.materialize.query_table(
            "synapses", materialization_version=1, filter_equal_dict={"nope": 1}, get_counts=True
        )
    assert exc.value.response.status_code == 400


@pytest.fixture(scope="module")
def labelled(engine, server):
    from caveclient import CAVEclient

    name = f"uq_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, name, segmentation_source="precomputed://file:///nonexistent/x", voxel_resolution=(4, 4, 40)
    )
    catalog.create_table(engine, name, "cells", schema="cell_type_local")
    labels = ["pyramidal", "basket", "chandelier", "pyramidal", "martinotti", "basket"]
    # classification_system is required (as in the field's schema); "gone" is only on the row
    # deleted below, so it must not be listed
    systems = ["morph", "molecular", "morph", "molecular", "gone", "morph"]
    rows = [
        {"pt": {"position": [i, i, i]}, "cell_type": c, "classification_system": s}
        for i, (c, s) in enumerate(zip(labels, systems, strict=True))
    ]
    ids = ann.insert_annotations(engine, name, "cells", rows)
    ann.delete_annotations(engine, name, "cells", [ids[4]])  # the only martinotti
    token = auth.create_token(engine, name, "view")[1]
    client = CAVEclient(name, server_address=server.url, auth_token=token, write_server_cache=False)
    yield client, name
    catalog.drop_datastack(engine, name)


def test_unique_string_values_of_current_rows(labelled):
    client, _ = labelled
    got = client.materialize.get_unique_string_values("cells")
    assert got == {
        "cell_type": ["basket", "chandelier", "pyramidal"],
        "classification_system": ["molecular", "morph"],
    }


def test_unique_string_values_of_an_unknown_table_is_404(labelled, server):
    import requests

    client, name = labelled
    url = f"{server.url}/materialize/api/v3/datastack/{name}/table/nope/unique_string_values"
    r = requests.get(url, headers={"Authorization": f"Bearer {server.tokens['view']}"}, timeout=30)
    assert r.status_code in (403, 404)  # the shared view token is for another datastack
    r = client.materialize.session.get(url)
    assert r.status_code == 404 and r.json()["error"] == "NotFound"


def test_unique_string_values_of_a_table_without_strings_is_empty(client):
    assert client.materialize.get_unique_string_values("synapses") == {}
