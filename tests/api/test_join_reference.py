"""Join queries: caveclient's ``query_table`` of a reference table (merged with its target
table) and ``join_query``, against rows computed from what the test inserted."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from matengine import annotations as ann
from matengine import auth, catalog

from .helpers import complete


@pytest.fixture(scope="module")
def joined(engine, loaded, server):
    from caveclient import CAVEclient

    name = f"join_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        name,
        segmentation_source=loaded.info.graph_url,
        voxel_resolution=loaded.info.annotation_resolution,
    )
    catalog.create_table(engine, name, "syn", schema="synapse")
    catalog.create_table(engine, name, "syn_tags", schema="reference_tag", reference_table="syn")
    base = loaded.rows.base
    rows = [
        {
            "pre_pt": {"position": base["pre_pt_position"][i].tolist()},
            "ctr_pt": {"position": base["ctr_pt_position"][i].tolist()},
            "post_pt": {"position": base["post_pt_position"][i].tolist()},
            "size": float(i),
        }
        for i in range(20)
    ]
    ids = ann.insert_annotations(engine, name, "syn", rows)
    tags = {ids[i]: "ab"[i % 2] for i in range(0, 20, 2)}
    tag_ids = ann.insert_annotations(
        engine, name, "syn_tags", [{"target_id": k, "tag": v} for k, v in tags.items()]
    )
    complete(engine, name, datetime.now(UTC))
    token = auth.create_token(engine, name, "view")[1]
    client = CAVEclient(name, server_address=server.url, auth_token=token, write_server_cache=False)
    yield client, ids, tags, tag_ids
    catalog.drop_datastack(engine, name)


def test_reference_table_is_merged_with_its_target(joined, loaded):
    client, ids, tags, tag_ids = joined
    assert client.materialize.get_table_metadata("syn_tags")["reference_table"] == "syn"
    df = client.materialize.query_table("syn_tags")
    assert sorted(df["id"]) == sorted(tag_ids)
    assert (df["target_id"] == df["id_ref"]).all()
    assert sorted(zip(df["target_id"], df["tag"], strict=True)) == sorted(tags.items())
    pos = np.stack(df.sort_values("target_id")["pre_pt_position_ref"].to_numpy())
    want = loaded.rows.base["pre_pt_position"][[ids.index(i) for i in sorted(tags)]]
    np.testing.assert_allclose(pos, want)
    plain = client.materialize.query_table("syn_tags", merge_reference=False)
    assert set(plain.columns) == {"id", "created", "valid", "target_id", "tag"}
    live = client.materialize.live_live_query("syn_tags", datetime.now(UTC), metadata=False)
    assert sorted(live["id"]) == sorted(tag_ids)  # a table without points: no roots to map


def test_join_query_with_filters_and_select(joined):
    client, ids, tags, _ = joined
    df = client.materialize.join_query(
        [["syn", "id"], ["syn_tags", "target_id"]],
        suffixes={"syn": "", "syn_tags": "_tag"},
        filter_in_dict={"syn_tags": {"tag": ["a"]}},
        select_columns={"syn": ["id", "size", "post_pt_root_id"], "syn_tags": ["tag"]},
    )
    assert sorted(df.columns) == ["id", "post_pt_root_id", "size", "tag_tag"]
    assert sorted(df["id"]) == sorted(k for k, v in tags.items() if v == "a")
    assert (df["tag_tag"] == "a").all()


def test_join_on_columns_of_different_types_is_refused_before_streaming(joined, server):
    """id (an integer) joined to tag (text): refused with the API's error shape, never a 200
    whose stream PostgreSQL breaks."""
    import httpx

    client, *_ = joined
    r = httpx.post(
        f"{server.url}/materialize/api/v3/datastack/{client.datastack_name}/version/1/query",
        json={"tables": [["syn", "id"], ["syn_tags", "tag"]]},
        headers={"Authorization": f"Bearer {client.auth.token}"},
    )
    assert r.status_code == 400, r.text[:300]
    assert set(r.json()) == {"message", "error"}
    assert (
        "cannot join syn.id (int) to syn_tags.tag (text): the columns have different types"
        in r.json()["message"]
    )
