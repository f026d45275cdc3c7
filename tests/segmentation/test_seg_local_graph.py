"""The built-in edit-log graph against the oracle, plus its file-format checks."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from seg_suites import UNKNOWN, OracleExpect, RootGraphSuite

from matengine.segmentation.errors import GraphFormatError
from matengine.segmentation.local_format import (
    MERGE,
    SPLIT,
    EditLog,
    make_root_id,
    make_supervoxel_id,
    write_graph,
)
from matengine.segmentation.local_graph import LocalGraph

T0 = datetime(2024, 3, 1, tzinfo=UTC)


class TestLocalRootGraph(RootGraphSuite):
    @pytest.fixture
    def graph(self, local_seg):
        return local_seg.roots

    @pytest.fixture
    def expect(self, oracle, synth_dataset):
        return OracleExpect(oracle, synth_dataset)


def test_unknown_supervoxel_and_root(local_seg, synth_dataset):
    g = local_seg.roots
    assert g.get_roots(np.array([UNKNOWN], np.uint64), synth_dataset.end)[0] == 0
    assert not g.is_latest_roots(np.array([UNKNOWN], np.uint64), synth_dataset.end)[0]
    assert g.get_leaves(int(UNKNOWN)).size == 0


def test_before_creation_there_are_no_roots(local_seg, oracle, synth_dataset):
    before = synth_dataset.start - timedelta(microseconds=1)
    assert not local_seg.roots.get_roots(oracle.svids, before).any()


def test_root_ids_look_like_chunkedgraph_ids(local_seg):
    roots = local_seg.roots.index.root_ids
    assert np.all(roots >> np.uint64(56) == 10) and len(np.unique(roots)) == len(roots)
    assert np.all(local_seg.roots.supervoxel_ids >> np.uint64(56) == 1)


def _tiny(tmp_path, edits: EditLog, initial=None):
    sv = make_supervoxel_id(np.arange(1, 5, dtype=np.uint64))
    if initial is None:
        initial = np.stack([sv, make_root_id(10, np.array([1, 1, 2, 3], np.uint64))], 1)
    return write_graph(
        tmp_path / "g",
        name="tiny",
        created=T0,
        supervoxels="../volume",
        resolution=(8, 8, 40),
        initial=initial,
        edits=edits,
    )


def _log(rows, split_sets):
    cols = list(zip(*rows, strict=True))
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in split_sets])])
    return EditLog(
        timestamp_us=np.array(cols[0], np.int64),
        operation_id=np.array(cols[1], np.uint64),
        kind=np.array(cols[2], np.uint8),
        sv_a=np.array(cols[3], np.uint64),
        sv_b=np.array(cols[4], np.uint64),
        new_root_a=np.array(cols[5], np.uint64),
        new_root_b=np.array(cols[6], np.uint64),
        split_offsets=offsets.astype(np.int64),
        split_svs=np.concatenate([np.zeros(0, np.uint64), *[np.asarray(s, np.uint64) for s in split_sets]]),
    )


def test_hand_written_history(tmp_path):
    """Merge then split, including two edits at the same microsecond."""
    sv = [int(s) for s in make_supervoxel_id(np.arange(1, 5, dtype=np.uint64))]
    r = [int(x) for x in make_root_id(10, np.arange(1, 8, dtype=np.uint64))]
    t = int((T0 - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    log = _log(
        [
            (t + 10, 1, MERGE, sv[0], sv[2], r[3], 0),  # {1,2}+{3} -> r4
            (t + 20, 2, SPLIT, sv[1], sv[0], r[4], r[5]),  # r4 -> {2}=r5, {1,3}=r6
            (t + 20, 3, MERGE, sv[1], sv[3], r[6], 0),
        ],  # {2}+{4} -> r7 same µs
        [[], [sv[1]], []],
    )
    g = LocalGraph(_tiny(tmp_path, log))
    at = lambda us: g.get_roots(np.array(sv, np.uint64), T0 + timedelta(microseconds=us))  # noqa: E731
    assert at(9).tolist() == [r[0], r[0], r[1], r[2]]
    assert at(10).tolist() == [r[3], r[3], r[3], r[2]]
    assert at(19).tolist() == [r[3], r[3], r[3], r[2]]
    assert at(20).tolist() == [r[5], r[6], r[5], r[6]]
    expired, new = g.get_delta_roots(T0 + timedelta(microseconds=15), T0 + timedelta(microseconds=20))
    assert expired.tolist() == sorted([r[3], r[2]]) and new.tolist() == [r[5], r[6]]
    # r5 (just {2}) lived for zero time: never valid, in no delta, but in the lineage.
    assert not g.is_latest_roots(np.array([r[4]], np.uint64), T0 + timedelta(microseconds=20))
    # Lineage, not overlap: r2 ({3}) shares nothing with r7 ({2,4}) but is an ancestor.
    assert g.get_past_ids([r[6]], T0)[r[6]].tolist() == [r[0], r[1], r[2]]
    assert g.get_future_ids([r[0]], T0 + timedelta(microseconds=20))[r[0]].tolist() == [r[5], r[6]]
    assert g.get_leaves(r[6]).tolist() == [sv[1], sv[3]]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: (d / "graph.json").unlink(), "graph.json: missing"),
        (lambda d: (d / "graph.json").write_text("{"), "invalid JSON"),
        (lambda d: (d / "graph.json").write_text(json.dumps({"format": "x"})), "'format'"),
        (lambda d: np.save(d / "initial.npy", np.zeros((3, 3), np.uint64)), "expected uint64 (N, 2)"),
        (lambda d: np.save(d / "initial.npy", np.array([[5, 1], [5, 2]], np.uint64)), "listed twice"),
    ],
)
def test_format_errors_name_the_file(tmp_path, mutate, message):
    d = _tiny(tmp_path, EditLog.empty())
    mutate(d)
    with pytest.raises(GraphFormatError, match=re.escape(message)):
        LocalGraph(d)


def test_semantic_errors_name_the_edit(tmp_path):
    sv = [int(s) for s in make_supervoxel_id(np.arange(1, 5, dtype=np.uint64))]
    t = int((T0 - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    same_root = _log([(t + 1, 1, MERGE, sv[0], sv[1], int(make_root_id(10, 9)), 0)], [[]])
    with pytest.raises(GraphFormatError, match="edit 0: merge of supervoxels already"):
        LocalGraph(_tiny(tmp_path / "a", same_root))
    whole = _log(
        [(t + 1, 1, SPLIT, sv[2], sv[2], int(make_root_id(10, 9)), int(make_root_id(10, 10)))], [[sv[2]]]
    )
    with pytest.raises(GraphFormatError, match="edit 0: split moves every supervoxel"):
        LocalGraph(_tiny(tmp_path / "b", whole))
    reused = _log([(t + 1, 1, MERGE, sv[0], sv[2], int(make_root_id(10, 1)), 0)], [[]])
    with pytest.raises(GraphFormatError, match="root id reused"):
        LocalGraph(_tiny(tmp_path / "c", reused))
    unknown = _log([(t + 1, 1, MERGE, sv[0], 12345, int(make_root_id(10, 9)), 0)], [[]])
    with pytest.raises(GraphFormatError, match="unknown supervoxel 12345"):
        LocalGraph(_tiny(tmp_path / "d", unknown))


def test_decreasing_timestamps_rejected(tmp_path, synth_dataset):
    d = tmp_path / "copy"
    shutil.copytree(synth_dataset.graph_url[len("local://") :], d)
    with np.load(d / "edits.npz") as z:
        cols = {k: z[k] for k in z.files}
    cols["timestamp_us"] = cols["timestamp_us"][::-1].copy()
    np.savez(d / "edits.npz", **cols)
    with pytest.raises(GraphFormatError, match="timestamp_us decreases at edit 1"):
        LocalGraph(d)
