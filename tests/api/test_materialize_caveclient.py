"""caveclient against the served app: versions, tables, metadata, and version queries with
every filter kind, compared with rows computed independently (time rule + oracle roots)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from .helpers import assert_frame_matches, expected_synapses

SPLIT = True


def test_info_and_versions(client, loaded):
    info = client.info.get_datastack_info()
    assert info["local_server"].startswith("http://127.0.0.1:")
    assert info["aligned_volume"]["name"] == loaded.datastack
    assert info["segmentation_source"].endswith("/segmentation/table/" + loaded.info.pcg_name)
    assert info["synapse_table"] == "synapses"
    assert client.materialize.get_versions() == sorted(loaded.versions)
    for v, when in loaded.versions.items():
        md = client.materialize.get_version_metadata(v)
        assert md["time_stamp"] == when
        assert isinstance(md["expires_on"], datetime)
    assert client.materialize.get_tables(version=1) == ["synapses"]
    md = client.materialize.get_table_metadata("synapses", version=1)
    assert md["voxel_resolution"] == list(loaded.info.annotation_resolution)
    assert md["reference_table"] is None and md["schema"] == "synapse"
    want = expected_synapses(loaded.rows, loaded.oracle, loaded.versions[1])
    assert client.materialize.get_annotation_count("synapses", version=1) == len(want)
    assert [m["version"] for m in client.materialize.get_versions_metadata()] == [1, 2]
    tables = client.materialize.get_tables_metadata(version=2)
    assert [t["table_name"] for t in tables] == ["synapses"]


def test_client_pinned_to_a_version(server, loaded):
    from caveclient import CAVEclient

    pinned = CAVEclient(
        loaded.datastack,
        server_address=server.url,
        version=1,
        auth_token=server.tokens["view"],
        write_server_cache=False,
    )
    assert pinned.timestamp == loaded.versions[1]
    df = pinned.materialize.query_table("synapses", split_positions=True)
    assert_frame_matches(df, expected_synapses(loaded.rows, loaded.oracle, loaded.versions[1]))


@pytest.mark.parametrize("version", [1, 2])
def test_query_whole_version(client, loaded, version):
    df = client.materialize.query_table("synapses", materialization_version=version, split_positions=True)
    want = expected_synapses(loaded.rows, loaded.oracle, loaded.versions[version])
    assert_frame_matches(df, want)
    assert df.attrs["dataframe_resolution"] == list(loaded.info.annotation_resolution)


def test_query_filters(client, loaded):
    want = expected_synapses(loaded.rows, loaded.oracle, loaded.versions[2])
    q = client.materialize.query_table
    root = int(want["pre_pt_root_id"].value_counts().index[0])
    ids = want["id"].iloc[[3, 50, 700]].tolist()

    df = q("synapses", filter_in_dict={"pre_pt_root_id": [root]}, split_positions=True)
    assert_frame_matches(df, want[want.pre_pt_root_id == root].reset_index(drop=True))

    df = q("synapses", filter_equal_dict={"pre_pt_root_id": root}, split_positions=True)
    assert_frame_matches(df, want[want.pre_pt_root_id == root].reset_index(drop=True))

    df = q("synapses", filter_out_dict={"id": ids}, split_positions=True)
    assert_frame_matches(df, want[~want.id.isin(ids)].reset_index(drop=True))

    lo, hi = [400, 500, 20], [700, 800, 40]
    df = q("synapses", filter_spatial_dict={"post_pt_position": [lo, hi]}, split_positions=True)
    inside = np.ones(len(want), bool)
    for j, a in enumerate("xyz"):
        col = want[f"post_pt_position_{a}"]
        inside &= (col >= lo[j]) & (col <= hi[j])
    assert inside.sum() > 0
    assert_frame_matches(df, want[inside].reset_index(drop=True))

    df = q("synapses", filter_greater_dict={"size": 300.0}, split_positions=True)
    assert_frame_matches(df, want[want["size"] > 300.0].reset_index(drop=True))


def test_select_limit_offset_resolution(client, loaded):
    want = expected_synapses(loaded.rows, loaded.oracle, loaded.versions[2])
    q = client.materialize.query_table
    df = q(
        "synapses",
        select_columns=["id", "pre_pt_root_id", "pre_pt_position"],
        limit=5,
        offset=10,
        split_positions=True,
    )
    assert list(df.columns) == [
        "id",
        "pre_pt_position_x",
        "pre_pt_position_y",
        "pre_pt_position_z",
        "pre_pt_root_id",
    ] or set(df.columns) == {
        "id",
        "pre_pt_root_id",
        "pre_pt_position_x",
        "pre_pt_position_y",
        "pre_pt_position_z",
    }
    assert df["id"].tolist() == want["id"].iloc[10:15].tolist()

    df = q("synapses", desired_resolution=[1, 1, 1], split_positions=True)
    res = np.asarray(loaded.info.annotation_resolution)
    for j, a in enumerate("xyz"):
        np.testing.assert_allclose(df[f"ctr_pt_position_{a}"], want[f"ctr_pt_position_{a}"] * res[j])
    assert df.attrs["dataframe_resolution"] == [1.0, 1.0, 1.0]

    df = q("synapses", limit=3)  # positions glued into arrays by the client
    assert isinstance(df["pre_pt_position"].iloc[0], np.ndarray)
    np.testing.assert_allclose(
        np.stack(df["pre_pt_position"].to_numpy()),
        want[["pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z"]].iloc[:3],
    )
