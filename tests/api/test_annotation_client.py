"""caveclient's annotation client: create a table, post 1,000 annotations, update and delete
some, and see every state through live queries by the time rule."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import requests
from sqlalchemy import text

from matengine import catalog


def _now() -> datetime:
    time.sleep(0.05)  # keep test instants strictly between the server's write stamps
    out = datetime.now(UTC)
    time.sleep(0.05)
    return out


def _rows(base: dict, idx: np.ndarray, size: float | None = None) -> list[dict]:
    out = []
    for i in idx:
        out.append(
            {
                "pre_pt": {"position": base["pre_pt_position"][i].tolist()},
                "ctr_pt": {"position": base["ctr_pt_position"][i].tolist()},
                "post_pt": {"position": base["post_pt_position"][i].tolist()},
                "size": float(base["size"][i] if size is None else size),
            }
        )
    return out


def _live_count(engine, ds: str, table: str) -> int:
    t = catalog.get_table(engine, ds, table)
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {t.names.live_q}")).scalar_one()


def test_annotation_round_trip(client, server, loaded, engine):
    logging.getLogger("caveclient").setLevel(logging.ERROR)
    ann = client.annotation
    name = "posted_synapses"
    ann.create_table(name, "synapse", "posted through caveclient", voxel_resolution=[4, 4, 40])
    assert name in ann.get_tables()
    md = ann.get_table_metadata(name)
    assert md["voxel_resolution"] == [4.0, 4.0, 40.0] and md["schema_type"] == "synapse"

    base = {k: v for k, v in loaded.oracle.base_rows("synapses").items()}
    t0 = _now()
    ids: list[int] = []
    for chunk in np.array_split(np.arange(1000), 2):
        ids += ann.post_annotation(name, _rows(base, chunk))
    assert len(ids) == 1000 == len(set(ids))
    t1 = _now()
    assert ann.get_annotation_count(name) == 1000

    # a view token cannot write, and its refused write changes nothing
    from caveclient import CAVEclient

    viewer = CAVEclient(
        loaded.datastack,
        server_address=server.url,
        auth_token=server.tokens["view"],
        write_server_cache=False,
    )
    with pytest.raises(requests.HTTPError) as err:
        viewer.annotation.post_annotation(name, _rows(base, np.arange(3)))
    assert err.value.response.status_code == 403
    assert _live_count(engine, loaded.datastack, name) == 1000

    updated = ids[:50]
    mapping = ann.update_annotation(
        name, [{"id": i, **r} for i, r in zip(updated, _rows(base, np.arange(50), 999.0), strict=True)]
    )
    assert sorted(int(k) for k in mapping) == sorted(updated)
    new_ids = [int(mapping[str(i)]) for i in updated]
    t2 = _now()
    deleted = ids[100:150]
    assert sorted(ann.delete_annotation(name, deleted)) == sorted(deleted)
    t3 = _now()

    got = ann.get_annotation(name, [ids[60], deleted[0]])
    assert got[0]["id"] == ids[60] and got[0]["deleted"] == "None"
    assert got[0]["pre_pt_position"] == base["pre_pt_position"][60].tolist()
    assert got[1]["deleted"] != "None" and got[1]["valid"] is False
    assert "pre_pt_root_id" not in got[0]

    live = client.materialize.live_live_query
    assert len(live(name, t0)) == 0
    # posted rows got their supervoxels and roots in the request: no ingest needed
    df = live(name, t1, split_positions=True)
    assert sorted(df.id) == sorted(ids)  # (roots checked against the oracle below)

    oracle = loaded.oracle
    res = loaded.info.annotation_resolution
    for t, want_ids in (
        (t1, ids),
        (t2, [i for i in ids if i not in updated] + new_ids),
        (t3, [i for i in ids if i not in updated and i not in deleted] + new_ids),
    ):
        df = live(name, t, split_positions=True).sort_values("id")
        assert df.id.tolist() == sorted(want_ids)
        pts = df[["pre_pt_position_x", "pre_pt_position_y", "pre_pt_position_z"]].to_numpy()
        sv = oracle.supervoxels_at(pts, res)
        assert (df.pre_pt_supervoxel_id.to_numpy() == sv.astype(np.int64)).all()
        roots = np.asarray(oracle.roots_at(sv, t), np.uint64).astype(np.int64)
        assert (df.pre_pt_root_id.to_numpy() == roots).all()
    df = live(name, t3, filter_equal_dict={name: {"size": 999.0}})
    assert sorted(df.id) == sorted(new_ids)
