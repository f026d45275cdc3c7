"""Auth switched off (loopback only), and chunkedgraph calls of a ``graphene://`` datastack
proxied to its server with the caller's token."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import httpx
import numpy as np
import psutil
import pytest
import uvicorn
from typer.testing import CliRunner

from matengine import auth, catalog
from matengine.cli import app as cli

from .helpers import days


def _non_loopback_ipv4() -> str | None:
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


class _Uvicorn:
    def __init__(self, app, host: str) -> None:
        from matengine.segmentation.serving import free_port

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_no_auth_answers_loopback_only(engine, loaded):
    from matengine.api.app import create_app
    from matengine.config import get_settings

    app = create_app(get_settings(), auth_enabled=False, engine=engine)
    path = f"/info/api/v2/datastack/full/{loaded.datastack}"
    with _Uvicorn(app, "0.0.0.0") as srv:
        r = httpx.get(f"http://127.0.0.1:{srv.port}{path}")
        assert r.status_code == 200 and r.json()["name"] == loaded.datastack
        outside = _non_loopback_ipv4()
        if outside is None:
            pytest.skip("no non-loopback address to test the refusal")
        r = httpx.get(f"http://{outside}:{srv.port}{path}")
        assert r.status_code == 403 and "loopback" in r.json()["message"]


def test_serve_refuses_no_auth_off_loopback():
    res = CliRunner().invoke(cli, ["serve", "--no-auth", "--host", "0.0.0.0", "--port", "1"])
    assert res.exit_code == 2 and "loopback" in res.output


@pytest.fixture(scope="module")
def remote_graphene(loaded):
    """A separate PyChunkedGraph-compatible server holding the dataset's graph."""
    from matengine.segmentation import open_segmentation
    from matengine.segmentation.serving import ThreadedServer, pcg_app

    seg = open_segmentation(loaded.info.graph_url)

    def resolve(name: str):
        if name != "remote_pcg":
            raise KeyError(name)
        return seg

    with ThreadedServer(pcg_app(resolve)) as srv:
        yield srv.url


def test_graphene_calls_are_proxied(engine, server, loaded, remote_graphene):
    from caveclient import CAVEclient

    name = f"gph_{uuid.uuid4().hex[:8]}"
    source = f"graphene://{remote_graphene}/segmentation/table/remote_pcg"
    catalog.add_datastack(
        engine, name, segmentation_source=source, voxel_resolution=loaded.info.annotation_resolution
    )
    try:
        token = auth.create_token(engine, name, "view")[1]
        client = CAVEclient(name, server_address=server.url, auth_token=token, write_server_cache=False)
        assert client.info.segmentation_source() == source
        sv = loaded.rows.base["pre_pt_supervoxel_id"][:300]
        for offset in (0, 12, 35):
            t = loaded.start + days(offset)
            got = client.chunkedgraph.get_roots(sv, timestamp=t)
            want = np.asarray(loaded.oracle.roots_at(sv, t), np.uint64)
            assert (np.asarray(got, np.uint64) == want).all()
        roots = np.unique(np.asarray(got, np.uint64))
        roots = roots[roots != 0][:5]
        assert client.chunkedgraph.is_latest_roots(roots).all()
        # the proxy checks our tokens before anything leaves
        url = f"{server.url}/segmentation/api/v1/table/remote_pcg/is_latest_roots"
        body = {"node_ids": [int(r) for r in roots]}
        assert httpx.post(url, json=body).status_code == 401
        other = {"Authorization": f"Bearer {server.tokens['other']}"}
        assert httpx.post(url, json=body, headers=other).status_code == 403
    finally:
        catalog.drop_datastack(engine, name)


def test_unreadable_segmentation_is_a_clean_error(engine, server):
    name = f"broken_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, name, segmentation_source="local:///nonexistent/graph", voxel_resolution=(4, 4, 40)
    )
    try:
        catalog.create_table(engine, name, "synapses", schema="synapse")
        token = auth.create_token(engine, name, "view")[1]
        r = httpx.post(
            f"{server.url}/materialize/api/v3/datastack/{name}/query",
            json={"table": "synapses", "timestamp": "2024-01-01T00:00:00Z"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 502 and "segmentation source" in r.json()["message"]
    finally:
        catalog.drop_datastack(engine, name)


def test_graphene_change_logs_are_proxied_and_edits_need_edit(engine, server, loaded, remote_graphene):
    from caveclient import CAVEclient

    from matengine.segmentation.local_graph import LocalGraph
    from matengine.segmentation.local_history import change_log_summary, tabular_change_log

    name = f"gph_{uuid.uuid4().hex[:8]}"
    source = f"graphene://{remote_graphene}/segmentation/table/remote_pcg"
    catalog.add_datastack(
        engine, name, segmentation_source=source, voxel_resolution=loaded.info.annotation_resolution
    )
    try:
        token = auth.create_token(engine, name, "view")[1]
        client = CAVEclient(name, server_address=server.url, auth_token=token, write_server_cache=False)
        graph = LocalGraph(loaded.info.graph_url[len("local://") :])
        t_end = loaded.start + days(40)
        root = max(
            np.unique(loaded.oracle.roots_at(loaded.oracle.svids, t_end)).tolist(),
            key=lambda r: len(loaded.oracle.past_operations(int(r))),
        )
        got = client.chunkedgraph.get_tabular_change_log([root], filtered=False)[root]
        assert got["operation_id"].tolist() == sorted(loaded.oracle.past_operations(root))
        assert got["operation_id"].tolist() == tabular_change_log(graph, root, False)["operation_id"].tolist()
        assert client.chunkedgraph.get_change_log(root) == change_log_summary(graph, root, True)
        # an edit through the proxy needs ``edit``: refused here, in our error shape
        url = f"{server.url}/segmentation/api/v1/table/remote_pcg/merge"
        r = httpx.post(url, json=[[1, 0, 0, 0], [2, 0, 0, 0]], headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 403 and "edit" in r.json()["message"]
    finally:
        catalog.drop_datastack(engine, name)
