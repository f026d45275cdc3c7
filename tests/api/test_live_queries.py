"""Queries at any timestamp: ``live_live_query`` (the server answers from the live tables) and
``query_table(timestamp=…)`` (caveclient's own live query over a version + chunkedgraph),
both equal to the time rule with roots from the oracle."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import requests
from sqlalchemy import text

from .helpers import assert_frame_matches, days, expected_synapses

# S = dataset start; roots_last_updated ends at S+20d+1h (version 2), so earlier times are
# answered by mapping roots backwards, later ones forwards; S+40d is after every edit
OFFSETS = [0, 5, 10, 15, 20 + 1 / 24, 25, 40]


@pytest.fixture(autouse=True)
def _quiet_caveclient():
    logging.getLogger("caveclient").setLevel(logging.ERROR)


@pytest.mark.parametrize("offset", OFFSETS)
def test_live_live_whole_table(client, loaded, offset):
    t = loaded.start + days(offset)
    df = client.materialize.live_live_query("synapses", t, split_positions=True)
    assert_frame_matches(df, expected_synapses(loaded.rows, loaded.oracle, t))
    assert "deleted" not in df.columns and df["valid"].all()
    if offset == 10:  # rows deleted later were valid at T
        valid = client.materialize.live_live_query(
            "synapses", t, filter_equal_dict={"synapses": {"valid": True}}, split_positions=True
        )
        assert sorted(valid.id) == sorted(df.id)


def test_live_live_root_filters_at_several_times(client, loaded):
    for offset in (3, 15, 28):
        t = loaded.start + days(offset)
        want = expected_synapses(loaded.rows, loaded.oracle, t)
        counts = want["post_pt_root_id"].value_counts()
        roots = counts[counts.index != 0].index[:2].astype(int).tolist()
        df = client.materialize.live_live_query(
            "synapses", t, filter_in_dict={"synapses": {"post_pt_root_id": roots}}, split_positions=True
        )
        assert_frame_matches(df, want[want.post_pt_root_id.isin(roots)].reset_index(drop=True))

        df = client.materialize.live_live_query(
            "synapses",
            t,
            filter_equal_dict={"synapses": {"pre_pt_root_id": roots[0]}},
            filter_spatial_dict={"synapses": {"pre_pt_position": [[0, 0, 0], [10**6, 10**6, 30]]}},
            split_positions=True,
        )
        sel = (want.pre_pt_root_id == roots[0]) & (want.pre_pt_position_z <= 30)
        assert_frame_matches(df, want[sel].reset_index(drop=True))

        df = client.materialize.live_live_query(
            "synapses",
            t,
            filter_out_dict={"synapses": {"pre_pt_root_id": roots}},
            limit=50,
            offset=5,
            split_positions=True,
        )
        rest = want[~want.pre_pt_root_id.isin(roots)].reset_index(drop=True)
        assert_frame_matches(df, rest.iloc[5:55].reset_index(drop=True))


def test_live_live_invalid_root_is_refused(client, loaded):
    t_late = loaded.start + days(40)
    early = expected_synapses(loaded.rows, loaded.oracle, loaded.start)
    late_roots = set(expected_synapses(loaded.rows, loaded.oracle, t_late).pre_pt_root_id)
    stale = next(int(r) for r in early.pre_pt_root_id if r not in late_roots)
    with pytest.raises(requests.HTTPError) as err:
        client.materialize.live_live_query(
            "synapses", t_late, filter_in_dict={"synapses": {"pre_pt_root_id": [stale]}}
        )
    assert err.value.response.status_code == 400
    assert "not valid" in err.value.response.text
    df = client.materialize.live_live_query(
        "synapses",
        t_late,
        filter_in_dict={"synapses": {"pre_pt_root_id": [stale]}},
        allow_invalid_root_ids=True,
    )
    assert len(df) == 0


def test_live_live_select_and_resolution(client, loaded):
    t = loaded.start + days(25)
    want = expected_synapses(loaded.rows, loaded.oracle, t)
    df = client.materialize.live_live_query(
        "synapses",
        t,
        select_columns={"synapses": ["id", "post_pt_root_id", "ctr_pt_position"]},
        desired_resolution=[2, 2, 20],
        split_positions=True,
    )
    assert set(df.columns) == {
        "id",
        "post_pt_root_id",
        "ctr_pt_position_x",
        "ctr_pt_position_y",
        "ctr_pt_position_z",
    }
    assert_frame_matches(df, want, ["id", "post_pt_root_id"])
    res = np.asarray(loaded.info.annotation_resolution) / np.array([2, 2, 20])
    for j, a in enumerate("xyz"):
        np.testing.assert_allclose(df[f"ctr_pt_position_{a}"], want[f"ctr_pt_position_{a}"] * res[j])


@pytest.mark.parametrize("offset", [15, 28])
def test_query_table_with_timestamp(client, loaded, offset):
    """caveclient's client-side live query: version <= T, then chunkedgraph root updates."""
    t = loaded.start + days(offset)
    want = expected_synapses(loaded.rows, loaded.oracle, t)
    df = client.materialize.query_table("synapses", timestamp=t, split_positions=True)
    # the client re-reads a version: rows created/deleted after it are its business, roots ours
    got = df.set_index("id")
    common = want[want.id.isin(got.index)]
    assert len(common) > 0.5 * len(want)
    for col in ("pre_pt_root_id", "post_pt_root_id"):
        assert (got.loc[common.id, col].to_numpy() == common[col].to_numpy()).all(), col
    root = int(want["pre_pt_root_id"].value_counts().index[0])
    df = client.materialize.query_table("synapses", timestamp=t, filter_in_dict={"pre_pt_root_id": [root]})
    assert (df.pre_pt_root_id == root).all() and len(df) > 0


def test_only_rows_with_changed_roots_are_looked_up(engine, loaded):
    """The correction asks the graph about the rows whose stored root changed, not all rows."""
    from matengine import catalog
    from matengine.query.graphs import root_graph
    from matengine.query.live import RootCorrector
    from matengine.query.reader import Batch

    table = catalog.get_table(engine, loaded.datastack, "synapses")
    with engine.connect() as conn:
        rows = np.array(
            conn.execute(
                text(
                    f"SELECT pre_pt_supervoxel_id, pre_pt_root_id FROM {table.names.segmentation_q} "
                    "ORDER BY id"
                )
            ).all(),
            np.int64,
        )
    graph = root_graph(loaded.info.graph_url)
    last = table.roots_last_updated
    for t in (loaded.start + days(3), last, loaded.start + days(28)):
        corrector = RootCorrector.create(graph, t, last)
        batch = Batch({"pre_pt_supervoxel_id": rows[:, 0].copy(), "pre_pt_root_id": rows[:, 1].copy()})
        looked_up = corrector.correct(batch, ["pre_pt"])
        stale = np.isin(rows[:, 1], corrector.stale) & (rows[:, 0] != 0)
        assert looked_up == stale.sum() < len(rows)
        want = np.asarray(loaded.oracle.roots_at(rows[:, 0].astype(np.uint64), t), np.uint64)
        assert (batch.values["pre_pt_root_id"] == want.astype(np.int64)).all()
        if t == last:
            assert looked_up == 0
