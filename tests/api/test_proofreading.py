"""Proofreading a ``local://`` graph through caveclient: ``do_merge`` / ``execute_split``
land in the edit log at the server's time and are seen at once by ``get_roots``,
``get_delta_roots``, live queries, the next update-roots and version; change logs
(``get_change_log``, ``get_tabular_change_log``, ``get_operation_details``,
``get_merge_log``) match the oracle. The module has its own dataset and datastack: edits
would change the answers of the shared one."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import requests

from matengine import auth, catalog
from matengine.segmentation.local_format import file_stamp
from matengine.synth.generate import DatasetInfo, generate_dataset
from matengine.synth.oracle import Oracle

from .helpers import LiveRows, assert_frame_matches, complete, expected_synapses, upload_synapses

ONE_US = timedelta(microseconds=1)
PCG = "proofread_pcg"


@dataclass
class Lab:
    datastack: str
    info: DatasetInfo
    url: str
    tokens: dict[str, str]
    rows: LiveRows

    @property
    def graph_dir(self):
        return self.info.directory / PCG

    def oracle(self) -> Oracle:  # re-read: it sees the edits appended so far
        return Oracle(self.info.directory)

    def client(self, role: str = "edit"):
        from caveclient import CAVEclient

        return CAVEclient(
            self.datastack, server_address=self.url, auth_token=self.tokens[role], write_server_cache=False
        )


@pytest.fixture(autouse=True)
def _quiet_caveclient():
    logging.getLogger("caveclient").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def lab(engine, tmp_path_factory):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    info = generate_dataset(
        tmp_path_factory.mktemp("proofread"),
        supervoxels=150,
        synapses=300,
        cells=6,
        edits=16,
        seed=21,
        pcg_name=PCG,  # its own table name: the shared dataset's graph is "synth_pcg"
    )
    name = f"pr_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, name, segmentation_source=info.graph_url, voxel_resolution=info.annotation_resolution
    )
    catalog.create_table(engine, name, "synapses", schema="synapse")
    upload_synapses(engine, name, info.directory, info.start, info.initial_timestamp)
    base = Oracle(info.directory).base_rows("synapses")
    order = np.argsort(base["id"])
    base = {k: v[order] for k, v in base.items()}
    created = np.full(len(order), np.datetime64(info.start.replace(tzinfo=None), "us"))
    rows = LiveRows(base, created, np.full(len(order), np.datetime64("NaT", "us")))
    complete(engine, name, info.start + timedelta(days=40))  # caveclient needs one version
    tokens = {role: auth.create_token(engine, name, role, f"pr {role}")[1] for role in ("view", "edit")}
    with ThreadedServer(create_app(get_settings(), engine=engine)) as srv:
        yield Lab(name, info, srv.url, tokens, rows)
    catalog.drop_datastack(engine, name)


def _pair_with_different_roots(lab: Lab) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Pre-synaptic supervoxels of two synapses on different roots now, with their points."""
    oracle = lab.oracle()
    svs = lab.rows.base["pre_pt_supervoxel_id"]
    roots = oracle.roots_at(svs, datetime.now(UTC))
    a = 0
    b = int(np.flatnonzero(roots != roots[a])[0])
    pos = lab.rows.base["pre_pt_position"]
    return int(svs[a]), int(svs[b]), pos[a], pos[b]


def test_do_merge_is_seen_at_once_and_by_the_next_version(engine, lab):
    client = lab.client()
    sa, sb, pa, pb = _pair_with_different_roots(lab)
    before = datetime.now(UTC)
    old = client.chunkedgraph.get_roots([sa, sb])
    result = client.chunkedgraph.do_merge([sa, sb], [pa, pb], resolution=lab.info.annotation_resolution)
    (new,) = result["new_root_ids"]
    oracle = lab.oracle()
    t = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(oracle.edits["timestamp_us"][-1]))
    assert int(oracle.edits["operation_id"][-1]) == result["operation_id"]
    assert before <= t <= datetime.now(UTC)

    assert client.chunkedgraph.get_roots([sa, sb]).tolist() == [new, new]
    assert client.chunkedgraph.get_roots([sa, sb], timestamp=t).tolist() == [new, new]
    assert client.chunkedgraph.get_roots([sa, sb], timestamp=t - ONE_US).tolist() == old.tolist()
    gone, born = client.chunkedgraph.get_delta_roots(before, datetime.now(UTC))
    assert sorted(gone.tolist()) == sorted(set(old.tolist())) and born.tolist() == [new]

    # a live query right away, at the edit and 1 µs before it
    for when in (t, t - ONE_US):
        df = client.materialize.live_live_query("synapses", when, split_positions=True)
        assert_frame_matches(df, expected_synapses(lab.rows, oracle, when))
    live = client.materialize.live_live_query(
        "synapses", datetime.now(UTC), filter_equal_dict={"synapses": {"pre_pt_root_id": new}}
    )
    want = lab.rows.base["id"][oracle.roots_at(lab.rows.base["pre_pt_supervoxel_id"], t) == new]
    assert sorted(live.id.tolist()) == sorted(want.tolist()) and len(want) >= 2

    # the next version (update roots inside) carries the new root
    now = datetime.now(UTC)
    version = complete(engine, lab.datastack, now)
    frozen = client.materialize.query_table("synapses", materialization_version=version, split_positions=True)
    assert_frame_matches(frozen, expected_synapses(lab.rows, oracle, now))
    assert new in set(frozen.pre_pt_root_id.tolist())


def test_execute_split_moves_the_source_supervoxels(lab):
    client = lab.client()
    oracle = lab.oracle()
    now = datetime.now(UTC)
    state = oracle.roots_at(oracle.svids, now)
    values, counts = np.unique(state, return_counts=True)
    root = int(values[np.argmax(counts)])
    members = oracle.svids[state == root]
    sources, sinks = [int(s) for s in members[:2]], [int(members[-1])]
    op, new_roots = client.chunkedgraph.execute_split(
        [[0, 0, 0]] * 2, [[0, 0, 0]], root, source_supervoxels=sources, sink_supervoxels=sinks
    )
    moved, rest = new_roots
    assert client.chunkedgraph.get_leaves(moved).tolist() == sorted(sources)
    assert client.chunkedgraph.get_leaves(rest).tolist() == sorted(int(s) for s in members[2:])
    assert not client.chunkedgraph.is_latest_roots([root])[0]
    after = lab.oracle()
    assert int(after.edits["operation_id"][-1]) == op
    np.testing.assert_array_equal(
        client.chunkedgraph.get_roots(after.svids), after.roots_at(after.svids, datetime.now(UTC))
    )


def test_concurrent_merges_both_land_with_distinct_roots(lab):
    oracle = lab.oracle()
    state = oracle.roots_at(oracle.svids, datetime.now(UTC))
    firsts: dict[int, int] = {}
    for sv, r in zip(oracle.svids.tolist(), state.tolist(), strict=True):
        firsts.setdefault(r, sv)
    reps = list(firsts.values())[:4]
    results: list = [None, None]

    def merge(k: int) -> None:
        pair = reps[2 * k : 2 * k + 2]
        results[k] = lab.client().chunkedgraph.do_merge(pair, [[0, 0, 0]] * 2)

    threads = [threading.Thread(target=merge, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    new = [r["new_root_ids"][0] for r in results]
    assert len(set(new)) == 2 and results[0]["operation_id"] != results[1]["operation_id"]
    roots = lab.client().chunkedgraph.get_roots(reps)
    assert roots.tolist() == [new[0], new[0], new[1], new[1]]


def _raw(lab: Lab, path: str, body, role: str = "edit") -> requests.Response:
    return requests.post(
        f"{lab.url}/segmentation/api/v1/table/{PCG}/{path}",
        data=body if isinstance(body, (bytes, str)) else json.dumps(body),
        headers={"Authorization": f"Bearer {lab.tokens[role]}"},
        timeout=30,
    )


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("merge", b"not json", 400, "request body must be JSON"),
        ("merge", [[1, 0, 0, 0]], 400, "exactly two"),
        ("merge", [[1, 0, 0], [2, 0, 0]], 400, "every entry must be [id, x, y, z]"),
        ("merge", [["x", 0, 0, 0], [2, 0, 0, 0]], 400, "ids must be integers"),
        ("merge", [[-1, 0, 0, 0], [2, 0, 0, 0]], 400, "out of range"),
        ("split", [], 400, "expected {"),
        ("split", {"sources": [], "sinks": [[1, 0, 0, 0]]}, 400, "non-empty list"),
        ("merge", b"[" + b" " * (9 * 1024 * 1024) + b"]", 413, "at most"),
    ],
)
def test_malformed_edits_are_refused_and_change_nothing(lab, path, body, status, message):
    stamp = file_stamp(lab.graph_dir)
    r = _raw(lab, path, body)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]
    assert file_stamp(lab.graph_dir) == stamp


def test_merge_of_one_root_with_itself_is_refused(lab):
    oracle = lab.oracle()
    state = oracle.roots_at(oracle.svids, datetime.now(UTC))
    root = state[0]
    a, b = (int(s) for s in oracle.svids[state == root][:1].tolist() * 2)
    stamp = file_stamp(lab.graph_dir)
    r = _raw(lab, "merge", [[a, 0, 0, 0], [b, 0, 0, 0]])
    assert r.status_code == 400 and "already belong to the same root" in r.json()["message"]
    assert file_stamp(lab.graph_dir) == stamp


def test_a_view_token_cannot_edit(lab):
    sa, sb, pa, pb = _pair_with_different_roots(lab)
    stamp = file_stamp(lab.graph_dir)
    r = _raw(lab, "merge", [[sa, 0, 0, 0], [sb, 0, 0, 0]], role="view")
    assert r.status_code == 403 and "edit" in r.json()["message"]
    assert file_stamp(lab.graph_dir) == stamp


# ---------------------------------------------------------------------------- change logs
def _expected_tabular(oracle: Oracle, root: int, filtered: bool) -> list[dict]:
    """PyChunkedGraph's SegmentHistory rules, over the oracle's replay."""
    e = oracle.edits
    at = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=oracle.root_created_us(root))
    start = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=oracle.created_us)
    index = {int(o): i for i, o in enumerate(e["operation_id"].tolist())}
    lineage = oracle.ancestors(root) | {root}
    out = []
    for op, olds in sorted(oracle.past_operations(root).items()):
        i = index[op]
        merge = e["kind"][i] == 0
        moved = e["split_svs"][e["split_offsets"][i] : e["split_offsets"][i + 1]]
        svs = np.concatenate([[e["sv_b"][i]], [e["sv_a"][i]] if merge else moved]).astype(np.uint64)
        now = oracle.roots_at(svs, at)
        if merge:
            relevant, in_neuron = len(np.unique(oracle.roots_at(svs, start))) != 1, bool(np.all(now == root))
        else:
            relevant, in_neuron = len(np.unique(now)) != 1, bool(np.any(now == root))
        if filtered and not (relevant and in_neuron):
            continue
        news = [int(e["new_root_a"][i])] if merge else [int(e["new_root_a"][i]), int(e["new_root_b"][i])]
        out.append(
            {
                "operation_id": op,
                "timestamp": int(e["timestamp_us"][i]) // 1000,
                "before_root_ids": olds,
                "after_root_ids": sorted(n for n in news if n in lineage),
                "is_merge": bool(merge),
            }
        )
    return out


def _edited_root(lab: Lab) -> int:
    """A current root with merges and splits in its past."""
    oracle = lab.oracle()
    best = max(
        np.unique(oracle.roots_at(oracle.svids, datetime.now(UTC))).tolist(),
        key=lambda r: len(oracle.past_operations(int(r))),
    )
    assert len(oracle.past_operations(int(best))) >= 2
    return int(best)


@pytest.mark.parametrize("filtered", [True, False])
def test_tabular_change_log_matches_the_oracle(lab, filtered):
    root = _edited_root(lab)
    got = lab.client("view").chunkedgraph.get_tabular_change_log([root], filtered=filtered)[root]
    want = _expected_tabular(lab.oracle(), root, filtered)
    assert want
    assert got["operation_id"].tolist() == [w["operation_id"] for w in want]
    assert got["timestamp"].tolist() == [w["timestamp"] for w in want]
    assert [sorted(b) for b in got["before_root_ids"]] == [w["before_root_ids"] for w in want]
    assert [sorted(a) for a in got["after_root_ids"]] == [w["after_root_ids"] for w in want]
    assert got["is_merge"].tolist() == [w["is_merge"] for w in want]
    assert ("in_neuron" in got.columns) is (not filtered)


def test_change_log_summary_matches_the_oracle(lab):
    root = _edited_root(lab)
    want = _expected_tabular(lab.oracle(), root, filtered=True)
    got = lab.client("view").chunkedgraph.get_change_log(root)
    merges = sum(w["is_merge"] for w in want)
    assert got["n_mergers"] == merges and got["n_splits"] == len(want) - merges
    assert got["operations_ids"] == [w["operation_id"] for w in want]
    assert got["past_ids"] == [r for w in want for r in w["before_root_ids"]]
    assert sum(u["n_mergers"] + u["n_splits"] for u in got["user_info"].values()) == len(want)


def test_merge_log_and_operation_details_of_a_do_merge(engine, lab):
    client = lab.client()
    sa, sb, pa, pb = _pair_with_different_roots(lab)
    res = client.chunkedgraph.do_merge([sa, sb], [pa, pb], resolution=lab.info.annotation_resolution)
    (new,) = res["new_root_ids"]
    op = res["operation_id"]
    seg_res = np.asarray(lab.info.segmentation_resolution, float)
    ann_res = np.asarray(lab.info.annotation_resolution, float)
    details = client.chunkedgraph.get_operation_details([op, 10**12])
    assert list(details) == [str(op)]
    d = details[str(op)]
    token_id = auth.authenticate(engine, lab.tokens["edit"]).token_id
    assert d["user"] == str(token_id) and d["roots"] == [new]
    assert d["added_edges"] == [[sa, sb]] and d["source_ids"] == [sa] and d["sink_ids"] == [sb]
    np.testing.assert_allclose(d["source_coords"], [pa * ann_res / seg_res])
    np.testing.assert_allclose(d["sink_coords"], [pb * ann_res / seg_res])
    log = client.chunkedgraph.get_merge_log(new)
    oracle = lab.oracle()
    merges = [o for o, _ in sorted(oracle.past_operations(new).items()) if _kind(oracle, o) == 0]
    assert len(log["merge_edges"]) == len(merges)
    assert log["merge_edges"][-1] == [[sa, sb]]
    np.testing.assert_allclose(log["merge_edge_coords"][-1][0], [pa * ann_res / seg_res])


def _kind(oracle: Oracle, op: int) -> int:
    return int(oracle.edits["kind"][oracle.edits["operation_id"].tolist().index(op)])


def test_change_log_of_an_unknown_root_is_refused(lab):
    r = requests.get(
        f"{lab.url}/segmentation/api/v1/table/{PCG}/root/12345/change_log",
        headers={"Authorization": f"Bearer {lab.tokens['view']}"},
        timeout=30,
    )
    assert r.status_code == 400 and "not a root of this graph" in r.json()["message"]


def test_gzip_bombs_and_unsized_bodies_are_refused_unread(lab):
    import gzip

    stamp = file_stamp(lab.graph_dir)
    headers = {"Authorization": f"Bearer {lab.tokens['edit']}"}
    url = f"{lab.url}/segmentation/api/v1/table/{PCG}/merge"
    bomb = gzip.compress(b"[" + b" " * (12 * 1024 * 1024) + b"]")  # 12 MiB inflated, ~12 kB sent
    r = requests.post(url, data=bomb, headers={**headers, "Content-Encoding": "gzip"}, timeout=30)
    assert r.status_code == 413 and "at most" in r.json()["message"]

    def chunks():  # no Content-Length: the size is only known while reading
        for _ in range(10):
            yield b" " * (1024 * 1024)

    r = requests.post(url, data=chunks(), headers=headers, timeout=30)
    assert r.status_code == 413
    r = requests.post(
        url, data=b"\x1f\x8bnot gzip", headers={**headers, "Content-Encoding": "gzip"}, timeout=30
    )
    assert r.status_code == 400 and "gzip" in r.json()["message"]
    assert file_stamp(lab.graph_dir) == stamp


def test_an_edit_to_an_ambiguous_table_name_is_refused(engine, lab, tmp_path):
    other = generate_dataset(
        tmp_path / "twin", supervoxels=60, synapses=20, cells=3, edits=4, seed=2, pcg_name=PCG
    )
    name = f"twin_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine, name, segmentation_source=other.graph_url, voxel_resolution=other.annotation_resolution
    )
    try:
        stamps = file_stamp(lab.graph_dir), file_stamp(other.directory / PCG)
        sa, sb, _, _ = _pair_with_different_roots(lab)
        token = auth.create_token(engine, "*", "edit", "both")[1]
        r = requests.post(
            f"{lab.url}/segmentation/api/v1/table/{PCG}/merge",
            json=[[sa, 0, 0, 0], [sb, 0, 0, 0]],
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert r.status_code == 409 and "several segmentation sources" in r.json()["message"]
        assert (file_stamp(lab.graph_dir), file_stamp(other.directory / PCG)) == stamps
    finally:
        catalog.drop_datastack(engine, name)
