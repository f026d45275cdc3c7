"""Fixtures of the API tests: a synthetic dataset loaded through the real workflows, two
versions, and the real app served by uvicorn on a free loopback port.

Timeline of the ``synapses`` table (dataset start S, edits spread over S..S+30d):
rows created at S, except ids 1-200 created at S+8d; ids 201-400 deleted at S+12d and
401-500 at S+20d. Versions: 1 at S+10d, 2 at S+20d+1h (so roots_last_updated = S+20d+1h).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pytest

from matengine import auth, catalog
from matengine.synth.generate import DatasetInfo, generate_dataset
from matengine.synth.oracle import Oracle

from .helpers import LiveRows, complete, days, set_times, upload_synapses


@dataclass
class Loaded:
    datastack: str
    info: DatasetInfo
    oracle: Oracle
    rows: LiveRows
    versions: dict[int, object]  # version -> timestamp

    @property
    def start(self):
        return self.info.start


@pytest.fixture(scope="session")
def api_synth(tmp_path_factory) -> DatasetInfo:
    return generate_dataset(tmp_path_factory.mktemp("api_synth"), synapses=2000, cells=10, edits=60, seed=11)


@pytest.fixture(scope="session")
def loaded(engine, api_synth) -> Loaded:
    info = api_synth
    oracle = Oracle(info.directory)
    name = f"api_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, name, segmentation_source=info.graph_url, voxel_resolution=info.annotation_resolution
    )
    catalog.create_table(engine, name, "synapses", schema="synapse", description="synthetic synapses")
    start = info.start
    upload_synapses(engine, name, info.directory, start, info.initial_timestamp)
    base = oracle.base_rows("synapses")
    order = np.argsort(base["id"])
    base = {k: v[order] for k, v in base.items()}
    ids = base["id"]
    created = np.full(len(ids), np.datetime64(start.replace(tzinfo=None), "us"))
    deleted = np.full(len(ids), np.datetime64("NaT", "us"))
    late, gone1, gone2 = ids[:200], ids[200:400], ids[400:500]
    set_times(engine, name, "synapses", late, created=start + days(8))
    set_times(engine, name, "synapses", gone1, deleted=start + days(12))
    set_times(engine, name, "synapses", gone2, deleted=start + days(20))
    created[:200] = np.datetime64((start + days(8)).replace(tzinfo=None), "us")
    deleted[200:400] = np.datetime64((start + days(12)).replace(tzinfo=None), "us")
    deleted[400:500] = np.datetime64((start + days(20)).replace(tzinfo=None), "us")
    versions = {}
    for when in (start + days(10), start + days(20) + days(1 / 24)):
        versions[complete(engine, name, when)] = when
    yield Loaded(name, info, oracle, LiveRows(base, created, deleted), versions)
    catalog.drop_datastack(engine, name)


@dataclass
class Served:
    url: str
    tokens: dict[str, str]  # role -> token


@pytest.fixture(scope="session")
def server(engine, loaded) -> Served:
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    other = f"oth_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, other, segmentation_source="precomputed://file:///nonexistent/x", voxel_resolution=(4, 4, 40)
    )
    tokens = {
        role: auth.create_token(engine, loaded.datastack, role, f"api test {role}")[1]
        for role in ("view", "edit", "admin")
    }
    tokens["other"] = auth.create_token(engine, other, "admin", "other datastack")[1]
    revoked_id, tokens["revoked"] = auth.create_token(engine, loaded.datastack, "admin", "old")
    auth.revoke_token(engine, revoked_id)
    app = create_app(get_settings(), engine=engine)
    with ThreadedServer(app) as srv:
        yield Served(srv.url, tokens)
    catalog.drop_datastack(engine, other)


@pytest.fixture(scope="session")
def client(server, loaded):
    from caveclient import CAVEclient

    return CAVEclient(
        loaded.datastack,
        server_address=server.url,
        auth_token=server.tokens["edit"],
        write_server_cache=False,
    )
