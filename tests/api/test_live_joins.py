"""Live joins through caveclient: ``live_live_query`` with ``joins``, the ``tables``
interface's ``live_query`` of a reference table, and ``merge_reference`` on the live route,
at T exactly at an edit and 1 µs before, against the time rule of each table and roots
from the oracle (both sides carry bound points, so both sides' roots are corrected)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from matengine import annotations as ann
from matengine import auth, catalog

from .helpers import complete, days, ingest, set_times

ONE_US = timedelta(microseconds=1)


@pytest.fixture(autouse=True)
def _quiet_caveclient():
    logging.getLogger("caveclient").setLevel(logging.ERROR)


def _at(us: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(us))


@pytest.fixture(scope="module")
def joined(engine, loaded, server):
    """``syn`` (synapses) and ``syn_pts`` (reference_point -> syn), with rows that appear
    and vanish exactly at an edit time te, lookups at S+40d (so T < L needs correction)."""
    from caveclient import CAVEclient

    oracle, base, start = loaded.oracle, loaded.rows.base, loaded.start
    name = f"lj_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        name,
        segmentation_source=loaded.info.graph_url,
        voxel_resolution=loaded.info.annotation_resolution,
    )
    catalog.create_table(engine, name, "syn", schema="synapse")
    catalog.create_table(engine, name, "syn_pts", schema="reference_point", reference_table="syn")
    n = 40
    syn_rows = [
        {
            "pre_pt": {"position": base["pre_pt_position"][i].tolist()},
            "ctr_pt": {"position": base["ctr_pt_position"][i].tolist()},
            "post_pt": {"position": base["post_pt_position"][i].tolist()},
            "size": float(i),
        }
        for i in range(n)
    ]
    syn_ids = ann.insert_annotations(engine, name, "syn", syn_rows)
    targets = [syn_ids[i] for i in range(0, n, 2)]
    pt_pos = [base["post_pt_position"][n + k].tolist() for k in range(len(targets))]
    ref_rows = [{"target_id": t, "pt": {"position": p}} for t, p in zip(targets, pt_pos, strict=True)]
    ref_ids = ann.insert_annotations(engine, name, "syn_pts", ref_rows)
    # an edit that changes a root of the joined rows; rows created / deleted exactly then
    svs = np.concatenate(
        [oracle.supervoxels_at(base[c][:n]) for c in ("pre_pt_position", "post_pt_position")]
        + [oracle.supervoxels_at(np.asarray(pt_pos))]
    )
    te = next(
        _at(us)
        for us in oracle.edits["timestamp_us"].tolist()
        if (oracle.roots_at(svs, _at(us)) != oracle.roots_at(svs, _at(us) - ONE_US)).any()
    )
    syn_created = {i: start for i in syn_ids}
    syn_deleted: dict[int, datetime | None] = {i: None for i in syn_ids}
    ref_created = {i: start for i in ref_ids}
    ref_deleted: dict[int, datetime | None] = {i: None for i in ref_ids}
    set_times(engine, name, "syn", syn_ids, created=start)
    set_times(engine, name, "syn_pts", ref_ids, created=start)
    set_times(engine, name, "syn", [targets[0]], deleted=te)  # target gone at te
    syn_deleted[targets[0]] = te
    set_times(engine, name, "syn_pts", [ref_ids[1]], created=te)  # reference appears at te
    ref_created[ref_ids[1]] = te
    set_times(engine, name, "syn_pts", [ref_ids[2]], deleted=te)
    ref_deleted[ref_ids[2]] = te
    ingest(engine, name, start + days(40))
    complete(engine, name, start + days(40))  # caveclient's tables interface needs a version
    token = auth.create_token(engine, name, "view")[1]
    client = CAVEclient(name, server_address=server.url, auth_token=token, write_server_cache=False)
    expected = {
        "syn": pd.DataFrame(
            {
                "id": syn_ids,
                "created": [syn_created[i] for i in syn_ids],
                "deleted": [syn_deleted[i] for i in syn_ids],
                "pre_sv": oracle.supervoxels_at(base["pre_pt_position"][:n]),
                "post_sv": oracle.supervoxels_at(base["post_pt_position"][:n]),
                "size": [float(i) for i in range(n)],
            }
        ),
        "syn_pts": pd.DataFrame(
            {
                "id": ref_ids,
                "target_id": targets,
                "created": [ref_created[i] for i in ref_ids],
                "deleted": [ref_deleted[i] for i in ref_ids],
                "pt_sv": oracle.supervoxels_at(np.asarray(pt_pos)),
            }
        ),
    }
    yield client, name, te, expected
    catalog.drop_datastack(engine, name)


def _alive(df: pd.DataFrame, t: datetime) -> pd.DataFrame:
    dead = df["deleted"].map(lambda d: d is not None and d <= t)
    return df[(df["created"] <= t) & ~dead]


def _expected_join(oracle, expected, t: datetime) -> pd.DataFrame:
    syn, ref = _alive(expected["syn"], t), _alive(expected["syn_pts"], t)
    out = ref.merge(syn, left_on="target_id", right_on="id", suffixes=("_ref", ""))
    out["pt_root"] = oracle.roots_at(out["pt_sv"].to_numpy(np.uint64), t).astype(np.int64)
    out["pre_root"] = oracle.roots_at(out["pre_sv"].to_numpy(np.uint64), t).astype(np.int64)
    out["post_root"] = oracle.roots_at(out["post_sv"].to_numpy(np.uint64), t).astype(np.int64)
    return out.sort_values("id_ref").reset_index(drop=True)


def _check(got: pd.DataFrame, want: pd.DataFrame, ref_sfx: str, tgt_sfx: str) -> None:
    got = got.sort_values("id" + ref_sfx).reset_index(drop=True)
    assert got["id" + ref_sfx].tolist() == want["id_ref"].tolist()
    assert got["target_id" + ref_sfx].tolist() == want["target_id"].tolist()
    assert got["id" + tgt_sfx].tolist() == want["id"].tolist()
    assert got["pt_root_id" + ref_sfx].tolist() == want["pt_root"].tolist()
    assert got["pt_supervoxel_id" + ref_sfx].tolist() == want["pt_sv"].astype(np.int64).tolist()
    assert got["pre_pt_root_id" + tgt_sfx].tolist() == want["pre_root"].tolist()
    assert got["post_pt_root_id" + tgt_sfx].tolist() == want["post_root"].tolist()
    np.testing.assert_allclose(got["size" + tgt_sfx].to_numpy(), want["size"].to_numpy())


@pytest.mark.parametrize("shift", [timedelta(0), -ONE_US, timedelta(days=9)])
def test_live_live_join_is_exact_at_t(joined, loaded, shift):
    client, _, te, expected = joined
    t = te + shift
    got = client.materialize.live_live_query(
        "syn_pts",
        t,
        joins=[["syn_pts", "target_id", "syn", "id"]],
        suffixes={"syn_pts": "_ref", "syn": ""},
        split_positions=True,
    )
    want = _expected_join(loaded.oracle, expected, t)
    _check(got, want, "_ref", "")
    at_edit, before = (
        _expected_join(loaded.oracle, expected, te),
        _expected_join(loaded.oracle, expected, te - ONE_US),
    )
    assert len(at_edit) != len(before)  # the rows created / deleted at te make a difference


def test_the_edit_at_te_changes_joined_roots(joined, loaded):
    _, _, te, expected = joined
    a, b = (_expected_join(loaded.oracle, expected, t) for t in (te, te - ONE_US))
    both = a.merge(b, on="id_ref")
    changed = sum((both[f"{c}_x"] != both[f"{c}_y"]).sum() for c in ("pt_root", "pre_root", "post_root"))
    assert changed > 0  # else the tests at te and 1 µs before would not tell them apart


@pytest.mark.parametrize("shift", [timedelta(0), -ONE_US])
def test_tables_interface_live_query_of_a_reference_table(joined, loaded, shift):
    client, _, te, expected = joined
    t = te + shift
    got = client.materialize.tables.syn_pts().live_query(t, split_positions=True)
    _check(got, _expected_join(loaded.oracle, expected, t), "_ref", "")


def _post_live(client, name, body, params):
    mat = client.materialize
    url = f"{mat._server_address}/materialize/api/v3/datastack/{name}/query"
    r = mat.session.post(url, json=body, params=params)
    r.raise_for_status()
    with pa.ipc.open_stream(r.content) as reader:
        return reader.read_pandas()


@pytest.mark.parametrize("shift", [timedelta(0), -ONE_US])
def test_merge_reference_on_the_live_route(joined, loaded, shift):
    client, name, te, expected = joined
    t = te + shift
    got = _post_live(
        client, name, {"table": "syn_pts", "timestamp": t.isoformat()}, {"merge_reference": "true"}
    )
    want = _expected_join(loaded.oracle, expected, t).rename(columns={"id_ref": "rid"})
    # merge_reference names the target's columns with "_ref", as for version queries
    assert got.sort_values("id")["id"].tolist() == want["rid"].tolist()
    assert got.sort_values("id")["id_ref"].tolist() == want["id"].tolist()
    assert got.sort_values("id")["pre_pt_root_id_ref"].tolist() == want["pre_root"].tolist()
    assert got.sort_values("id")["pt_root_id"].tolist() == want["pt_root"].tolist()


@pytest.mark.parametrize("side", ["syn", "syn_pts"])
def test_root_filters_on_either_side_of_a_live_join(joined, loaded, side):
    client, name, te, expected = joined
    t = te - ONE_US
    want = _expected_join(loaded.oracle, expected, t)
    col, key = ("post_pt_root_id", "post_root") if side == "syn" else ("pt_root_id", "pt_root")
    root = int(want[key].value_counts().index[0])
    got = client.materialize.live_live_query(
        "syn_pts",
        t,
        joins=[["syn_pts", "target_id", "syn", "id"]],
        suffixes={"syn_pts": "_ref", "syn": ""},
        filter_equal_dict={side: {col: root}},
        split_positions=True,
    )
    _check(got, want[want[key] == root].reset_index(drop=True), "_ref", "")
    body = {
        "table": "syn_pts",
        "timestamp": t.isoformat(),
        "join_tables": [["syn_pts", "target_id", "syn", "id"]],
        "filter_equal_dict": {side: {col: root}},
    }
    counted = _post_live(client, name, body, {"count": "true"})
    assert counted["count"].tolist() == [int((want[key] == root).sum())]


@pytest.mark.parametrize(
    "joins, message",
    [
        ([["syn_pts", "target_id", "syn", "id"], ["syn", "id", "syn_pts", "id"]], "one join"),
        ([["syn_pts", "target_id", "syn"]], "a join is"),
        ([["syn", "id", "syn", "id"]], "must include the queried table"),
        ([["syn_pts", "nope", "syn", "id"]], "has no column"),
    ],
)
def test_bad_joins_are_refused(joined, joins, message):
    client, name, te, _ = joined
    mat = client.materialize
    url = f"{mat._server_address}/materialize/api/v3/datastack/{name}/query"
    r = mat.session.post(url, json={"table": "syn_pts", "timestamp": te.isoformat(), "join_tables": joins})
    assert r.status_code == 400 and message in r.json()["message"]
