"""The graphene client against our own PCG-compatible server, over real HTTP; plus
caveclient's ChunkedGraphClient and CloudVolume's graphene:// reader against the same
routes."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request, Response
from seg_suites import TOKEN, OracleExpect, RootGraphSuite

from matengine.errors import TransientError
from matengine.segmentation import GrapheneRequestError, GrapheneUnavailable, SegmentationSourceError
from matengine.segmentation.graphene import GrapheneClient, parse_graphene_url
from matengine.segmentation.serving import ThreadedServer


class TestGrapheneRootGraph(RootGraphSuite):
    @pytest.fixture
    def graph(self, graphene_seg):
        return graphene_seg.roots

    @pytest.fixture
    def expect(self, oracle, synth_dataset):
        return OracleExpect(oracle, synth_dataset)


def test_small_batches_same_answers(pcg_server, local_seg, oracle, synth_dataset):
    client = GrapheneClient(pcg_server.url, local_seg.name, token=TOKEN, batch_size=7, max_workers=3)
    t = synth_dataset.edit_timestamps[30]
    np.testing.assert_array_equal(client.get_roots(oracle.svids, t), oracle.roots_at(oracle.svids, t))
    roots = local_seg.roots.index.root_ids
    np.testing.assert_array_equal(client.is_latest_roots(roots, t), local_seg.roots.is_latest_roots(roots, t))
    client.close()


def test_server_delta_roots_is_a_superset_and_client_filters(pcg_server, local_seg, synth_dataset):
    ts = synth_dataset.edit_timestamps
    t0, t1 = ts[5], ts[40]
    r = httpx.get(
        f"{pcg_server.url}/segmentation/api/v1/table/{local_seg.name}/delta_roots",
        params={"timestamp_past": t0.timestamp(), "timestamp_future": t1.timestamp()},
    )
    raw_old, raw_new = set(r.json()["old_roots"]), set(r.json()["new_roots"])
    expired, new = local_seg.roots.get_delta_roots(t0, t1)
    assert set(expired.tolist()) < raw_old and set(new.tolist()) < raw_new
    assert raw_old & raw_new  # roots born and retired inside the window: PCG lists both


def test_unknown_table_and_bad_params(pcg_server):
    base = f"{pcg_server.url}/segmentation/api/v1/table"
    assert httpx.post(f"{base}/nope/roots_binary", content=b"").status_code == 404
    r = httpx.get(f"{base}/synth_pcg/delta_roots")
    assert r.status_code == 400 and "timestamp_past" in r.text
    r = httpx.post(f"{base}/synth_pcg/is_latest_roots", content=b"not json")
    assert r.status_code == 400
    r = httpx.get(f"{pcg_server.url}/segmentation/table/synth_pcg/volume/../../etc/passwd")
    assert r.status_code == 404


def test_parse_graphene_url():
    assert parse_graphene_url("graphene://https://h.org/segmentation/table/minnie3_v1") == (
        "https://h.org",
        "minnie3_v1",
    )
    assert parse_graphene_url("graphene://http://h:8/pfx/segmentation/table/t/") == ("http://h:8/pfx", "t")
    with pytest.raises(SegmentationSourceError, match="expected graphene://"):
        parse_graphene_url("graphene://gs://bucket/x")


@pytest.fixture(scope="module")
def flaky_server():
    """A tiny real server: 503 twice, then answers; records the auth header it saw."""
    app = FastAPI()
    state = {"calls": 0, "auth": None, "lock": threading.Lock()}

    @app.post("/segmentation/api/v1/table/flaky/roots_binary")
    async def roots(request: Request) -> Response:
        with state["lock"]:
            state["calls"] += 1
            n = state["calls"]
        state["auth"] = request.headers.get("authorization")
        if n <= 2:
            return Response("busy", status_code=503)
        body = np.frombuffer(await request.body(), "<u8")
        return Response((body + np.uint64(1)).tobytes())

    @app.post("/segmentation/api/v1/table/flaky/is_latest_roots")
    def forbidden() -> Response:
        return Response('{"message": "no"}', status_code=403)

    with ThreadedServer(app) as srv:
        yield srv, state


def test_retries_on_5xx_and_sends_bearer_token(flaky_server):
    srv, state = flaky_server
    client = GrapheneClient(srv.url, "flaky", token="tok", backoff=0.01)
    out = client.get_roots(np.array([4, 0, 9], np.uint64), datetime.now(UTC))
    assert out.tolist() == [5, 0, 10]
    assert state["calls"] == 3 and state["auth"] == "Bearer tok"


def test_4xx_is_not_retried(flaky_server):
    srv, _ = flaky_server
    client = GrapheneClient(srv.url, "flaky", backoff=0.01)
    with pytest.raises(GrapheneRequestError, match="HTTP 403") as info:
        client.is_latest_roots(np.array([4], np.uint64), datetime.now(UTC))
    assert info.value.http_status == 403 and not isinstance(info.value, TransientError)


def test_unreachable_server_raises_after_retries():
    client = GrapheneClient("http://127.0.0.1:9", "x", retries=2, backoff=0.01, timeout=1)
    with pytest.raises(GrapheneUnavailable, match="roots_binary"):
        client.get_roots(np.array([1], np.uint64), datetime.now(UTC))


# ------------------------------------------------------------------ caveclient 8.2.1
@pytest.fixture(scope="module")
def cave_cg(pcg_server, local_seg):
    from caveclient.auth import AuthClient
    from caveclient.chunkedgraph import ChunkedGraphClient

    return ChunkedGraphClient(
        server_address=pcg_server.url, table_name=local_seg.name, auth_client=AuthClient(token=TOKEN)
    )


def test_caveclient_roots_and_root_id(cave_cg, oracle, synth_dataset):
    for t in synth_dataset.edit_timestamps[::10]:
        for tt in (t, t - timedelta(microseconds=1)):
            got = cave_cg.get_roots(oracle.svids, timestamp=tt)
            np.testing.assert_array_equal(got, oracle.roots_at(oracle.svids, tt))
    t = synth_dataset.edit_timestamps[20]
    assert cave_cg.get_root_id(int(oracle.svids[3]), timestamp=t) == oracle.roots_at(oracle.svids[3:4], t)[0]


def test_caveclient_delta_latest_timestamps(cave_cg, local_seg, synth_dataset):
    ts = synth_dataset.edit_timestamps
    old, new = cave_cg.get_delta_roots(ts[2], ts[50])
    expired, created = local_seg.roots.get_delta_roots(ts[2], ts[50])
    assert set(expired.tolist()) <= set(old.tolist()) and set(created.tolist()) <= set(new.tolist())
    roots = local_seg.roots.index.root_ids
    latest = cave_cg.is_latest_roots(roots, timestamp=synth_dataset.end)
    np.testing.assert_array_equal(latest, local_seg.roots.is_latest_roots(roots, synth_dataset.end))
    stamps = cave_cg.get_root_timestamps(roots[-5:])
    assert list(stamps) == local_seg.roots.get_root_timestamps(roots[-5:])


def test_caveclient_lineage_past_ids_leaves(cave_cg, local_seg, oracle, synth_dataset):
    g = local_seg.roots
    t_past = synth_dataset.edit_timestamps[10]
    newest = g.index.root_ids[-1]
    past = cave_cg.get_past_ids([int(newest)], timestamp_past=t_past, timestamp_future=synth_dataset.end)
    assert past["past_id_map"][int(newest)] == oracle.past_ids(newest, t_past).tolist()
    lineage = cave_cg.get_lineage_graph(int(newest), timestamp_past=t_past, as_nx_graph=True)
    assert int(newest) in lineage.nodes
    assert set(oracle.past_ids(newest, t_past).tolist()) <= set(lineage.nodes)
    first = g.index.root_ids[0]
    latest = cave_cg.get_latest_roots(int(first), timestamp=synth_dataset.end)
    assert sorted(latest.tolist()) == oracle.future_ids(first, synth_dataset.end).tolist()
    np.testing.assert_array_equal(
        np.sort(cave_cg.get_leaves(int(newest))).astype(np.uint64), oracle.leaves(newest)
    )


# ------------------------------------------------------------------ CloudVolume graphene://
def test_cloudvolume_graphene_reads_supervoxels(graphene_url, oracle, synth_dataset):
    from cloudvolume import CloudVolume

    cv = CloudVolume(graphene_url, secrets=TOKEN, progress=False, use_https=False)
    off = np.asarray(synth_dataset.voxel_offset)
    img = np.asarray(cv[off[0] : off[0] + 70, off[1] : off[1] + 50, off[2] : off[2] + 9])[..., 0]
    np.testing.assert_array_equal(img, oracle._whole_volume()[:70, :50, :9])
    t = synth_dataset.edit_timestamps[25]
    agg = np.asarray(cv.download(cv.bounds, agglomerate=True, timestamp=t.timestamp()))[..., 0]
    vol = oracle._whole_volume()
    labels, inv = np.unique(vol, return_inverse=True)
    np.testing.assert_array_equal(agg, oracle.roots_at(labels, t)[inv].reshape(vol.shape))
