"""Annotations usable the moment they are posted: supervoxel and root ids looked up in the
request, and caveclient's ``lookup_supervoxel_ids`` / ``ingest_annotation_table`` routes."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest
import requests
from sqlalchemy import text

from matengine import annotations as ann
from matengine import auth, catalog

from .helpers import complete


@pytest.fixture(scope="module")
def stack(engine, loaded, server):
    from caveclient import CAVEclient

    logging.getLogger("caveclient").setLevel(logging.ERROR)
    ds = f"look_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        ds,
        segmentation_source=loaded.info.graph_url,
        voxel_resolution=loaded.info.annotation_resolution,
    )
    editor = auth.create_token(engine, ds, "edit", "editor", user="ed")[1]
    viewer = auth.create_token(engine, ds, "view", "viewer", user="vi")[1]
    clients = {
        k: CAVEclient(ds, server_address=server.url, auth_token=t, write_server_cache=False)
        for k, t in (("edit", editor), ("view", viewer))
    }
    complete(engine, ds, datetime.now(UTC))  # caveclient's live queries ask for the latest version
    yield ds, clients
    catalog.drop_datastack(engine, ds)


def _rows(loaded, n: int, start: int = 0) -> list[dict]:
    base = loaded.rows.base
    return [
        {
            "pre_pt": {"position": base["pre_pt_position"][i].tolist()},
            "ctr_pt": {"position": base["ctr_pt_position"][i].tolist()},
            "post_pt": {"position": base["post_pt_position"][i].tolist()},
            "size": float(i),
        }
        for i in range(start, start + n)
    ]


def _assert_exact(df, loaded, ids: list[int], t: datetime) -> None:
    df = df.sort_values("id")
    assert df["id"].tolist() == sorted(ids)
    res = loaded.info.annotation_resolution
    for pt in ("pre_pt", "post_pt"):
        pos = df[[f"{pt}_position_{a}" for a in "xyz"]].to_numpy()
        sv = loaded.oracle.supervoxels_at(pos, res)
        assert (df[f"{pt}_supervoxel_id"].to_numpy() == sv.astype(np.int64)).all()
        roots = np.asarray(loaded.oracle.roots_at(sv, t), np.uint64).astype(np.int64)
        assert (df[f"{pt}_root_id"].to_numpy() == roots).all()


def test_posted_rows_have_exact_roots_in_the_next_live_query(stack, loaded, engine):
    ds, clients = stack
    client = clients["edit"]
    client.annotation.create_table("posted", "synapse", "posted", voxel_resolution=[4, 4, 40])
    ids = client.annotation.post_annotation("posted", _rows(loaded, 100))
    t = datetime.now(UTC)
    # a new table's roots are looked up at the latest version's time, so the next version
    # (at a later T) brings them forward instead of finding them past its T
    with engine.connect() as conn:
        latest = conn.execute(
            text("SELECT max(time_stamp) FROM matengine.versions WHERE datastack = :d"), {"d": ds}
        ).scalar_one()
    assert catalog.get_table(engine, ds, "posted").roots_last_updated == latest
    # no allow_missing_lookups: a row without ids would be refused with 406
    df = client.materialize.live_live_query("posted", t, split_positions=True)
    _assert_exact(df, loaded, ids, t)
    # superseded rows get theirs too
    mapping = client.annotation.update_annotation("posted", [{"id": ids[0], **_rows(loaded, 1, 500)[0]}])
    t2 = datetime.now(UTC)
    df = client.materialize.live_live_query("posted", t2, split_positions=True)
    _assert_exact(df, loaded, [*ids[1:], int(mapping[str(ids[0])])], t2)
    version = complete(engine, ds, datetime.now(UTC))
    df = client.materialize.query_table("posted", materialization_version=version, split_positions=True)
    _assert_exact(df, loaded, [*ids[1:], int(mapping[str(ids[0])])], t2)


def test_lookup_supervoxel_ids_route(stack, loaded, engine):
    ds, clients = stack
    client = clients["edit"]
    client.annotation.create_table("direct", "synapse", "written past the API", voxel_resolution=[4, 4, 40])
    ids = ann.insert_annotations(engine, ds, "direct", _rows(loaded, 20))  # no lookup on this path
    with pytest.raises(requests.HTTPError) as err:
        client.materialize.live_live_query("direct", datetime.now(UTC))
    assert err.value.response.status_code == 406
    with pytest.raises(requests.HTTPError) as err:  # a viewer may not trigger writes
        clients["view"].materialize.lookup_supervoxel_ids("direct", annotation_ids=ids)
    assert err.value.response.status_code == 403
    assert client.materialize.lookup_supervoxel_ids("direct", annotation_ids=ids[:10]) == 200
    t = datetime.now(UTC)
    df = client.materialize.live_live_query("direct", t, split_positions=True, allow_missing_lookups=True)
    t_ = catalog.get_table(engine, ds, "direct")
    with engine.connect() as conn:
        looked = (
            conn.execute(
                text(
                    f"SELECT id FROM {t_.names.segmentation_q} "
                    "WHERE pre_pt_supervoxel_id IS NOT NULL ORDER BY id"
                )
            )
            .scalars()
            .all()
        )
    assert looked == sorted(ids[:10])
    _assert_exact(df[df["id"].isin(ids[:10])], loaded, ids[:10], t)


def test_ingest_annotation_table_route_starts_an_ingest_run(stack, loaded, engine):
    ds, clients = stack
    client = clients["edit"]
    client.annotation.create_table("batch", "synapse", "bulk rows", voxel_resolution=[4, 4, 40])
    ids = ann.insert_annotations(engine, ds, "batch", _rows(loaded, 30))
    assert client.materialize.ingest_annotation_table("batch") == 200
    deadline = time.monotonic() + 60
    while True:
        try:
            t = datetime.now(UTC)
            df = client.materialize.live_live_query("batch", t, split_positions=True)
            break
        except requests.HTTPError as err:
            assert err.response.status_code == 406
            assert time.monotonic() < deadline, "ingest run did not finish in 60 s"
            time.sleep(0.2)
    _assert_exact(df, loaded, ids, t)
