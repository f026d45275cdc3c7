"""Shared test suites (zarr's pattern): one base class per interface, subclassed once per
backend. A subclass provides the fixtures ``graph`` (or ``source``) and ``expect``; the
base class holds every test, so all backends are held to exactly the same answers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from matengine.segmentation.cloudvolume_lookup import lookup_one_cutout_per_point
from matengine.synth.generate import DatasetInfo
from matengine.synth.oracle import Oracle

US = timedelta(microseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UNKNOWN = np.uint64(999_999_999_999)
TOKEN = "0123abcdef"  # CloudVolume's graphene reader insists on a hex/base64 token
FLAT_TABLE = "flat_seg"  # the flat segmentation's table name on the test server


class OracleExpect:
    """Expected answers of an edit-log graph, from the independent oracle."""

    def __init__(self, oracle: Oracle, info: DatasetInfo) -> None:
        self.o, self.info = oracle, info
        self.svids = oracle.svids
        edits = info.edit_timestamps
        self.times = (
            [info.start - US, info.start]
            + edits
            + [t - US for t in edits]
            + [t + US for t in edits[::7]]
            + [info.end + timedelta(days=1)]
        )
        self.times.sort()

    def roots_at(self, svids, t):
        return self.o.roots_at(svids, t)

    def valid_roots_at(self, t):
        return self.o.valid_roots_at(t)

    def delta_roots(self, t0, t1):
        return self.o.delta_roots(t0, t1)

    def all_roots(self) -> np.ndarray:
        parents, children, created = self.o._lineage_tables()
        return np.array(sorted(created), np.uint64)

    def root_created(self, root) -> datetime:
        return EPOCH + self.o.root_created_us(root) * US

    def past_ids(self, root, t):
        return self.o.past_ids(root, t)

    def future_ids(self, root, t):
        return self.o.future_ids(root, t)

    def leaves(self, root):
        return self.o.leaves(root)


class FlatExpect:
    """A flat segmentation: every supervoxel is its own eternal root."""

    def __init__(self, oracle: Oracle, info: DatasetInfo) -> None:
        self.svids = oracle.svids
        self.times = [info.start - US, info.start, info.end]

    def roots_at(self, svids, t):
        return np.asarray(svids, np.uint64)

    def valid_roots_at(self, t):
        return np.sort(self.svids)

    def delta_roots(self, t0, t1):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)

    def all_roots(self):
        return np.sort(self.svids)

    def root_created(self, root) -> datetime:
        return EPOCH

    def past_ids(self, root, t):
        return np.array([root], np.uint64)

    future_ids = past_ids

    def leaves(self, root):
        return np.array([root], np.uint64)


class RootGraphSuite:
    """Every :class:`RootGraph` backend must pass these."""

    def test_get_roots_at_every_edit_time(self, graph, expect):
        # Each edit's own timestamp and 1 µs before it: the t <= T rule at its edge.
        query = np.append(expect.svids, np.uint64(0))
        for t in expect.times:
            got = graph.get_roots(query, t)
            assert got.dtype == np.uint64
            np.testing.assert_array_equal(got, expect.roots_at(query, t), err_msg=str(t))

    def test_get_roots_keeps_order_and_duplicates(self, graph, expect):
        rng = np.random.default_rng(1)
        query = rng.choice(expect.svids, 300).astype(np.uint64)
        query[::17] = 0
        t = expect.times[len(expect.times) // 2]
        np.testing.assert_array_equal(graph.get_roots(query, t), expect.roots_at(query, t))

    def test_empty_inputs(self, graph, expect):
        t = expect.times[-1]
        assert graph.get_roots(np.zeros(0, np.uint64), t).shape == (0,)
        assert graph.is_latest_roots(np.zeros(0, np.uint64), t).shape == (0,)

    def test_delta_roots_equal_set_difference(self, graph, expect):
        rnd = random.Random(3)
        pairs = [(expect.times[0], expect.times[-1])]
        pairs += [tuple(sorted(rnd.sample(expect.times, 2))) for _ in range(25)]
        pairs += [(t, t) for t in expect.times[:3]]
        for t0, t1 in pairs:
            expired, new = graph.get_delta_roots(t0, t1)
            want_expired, want_new = expect.delta_roots(t0, t1)
            np.testing.assert_array_equal(np.sort(expired), want_expired, err_msg=f"{t0} {t1}")
            np.testing.assert_array_equal(np.sort(new), want_new, err_msg=f"{t0} {t1}")

    def test_is_latest_roots(self, graph, expect):
        roots = np.append(expect.all_roots(), np.uint64(0))
        for t in expect.times[::6]:
            want = np.isin(roots, expect.valid_roots_at(t))
            np.testing.assert_array_equal(graph.is_latest_roots(roots, t), want, err_msg=str(t))

    def test_root_timestamps_are_creation_times(self, graph, expect):
        roots = expect.all_roots()[::3]
        got = graph.get_root_timestamps(roots)
        assert [g.tzinfo is not None for g in got] == [True] * len(roots)
        assert got == [expect.root_created(r) for r in roots]

    def test_root_timestamps_unknown_id(self, graph, expect):
        with pytest.raises(KeyError):
            graph.get_root_timestamps(np.array([0], np.uint64))

    def test_past_and_future_ids(self, graph, expect):
        roots = expect.all_roots()[::9]
        for t in expect.times[::12]:
            past = graph.get_past_ids(roots, t)
            future = graph.get_future_ids(roots, t)
            for r in roots:
                np.testing.assert_array_equal(past[int(r)], expect.past_ids(r, t))
                np.testing.assert_array_equal(future[int(r)], expect.future_ids(r, t))

    def test_past_ids_cover_every_overlapping_root(self, graph, expect):
        # The contract: past ids include every root at t_past sharing a supervoxel.
        t_past = expect.times[len(expect.times) // 3]
        for r in expect.valid_roots_at(expect.times[-1])[::5]:
            overlap = np.unique(expect.roots_at(graph.get_leaves(int(r)), t_past))
            overlap = overlap[overlap != 0]
            assert set(overlap.tolist()) <= set(graph.get_past_ids([r], t_past)[int(r)].tolist())

    def test_leaves(self, graph, expect):
        for r in expect.all_roots()[::7]:
            got = graph.get_leaves(int(r))
            np.testing.assert_array_equal(got, expect.leaves(r))
            assert got.dtype == np.uint64


class SupervoxelSuite:
    """Every :class:`SupervoxelSource` backend must pass these (fixtures: ``source``)."""

    def test_geometry(self, source, synth_dataset):
        np.testing.assert_array_equal(source.resolution, synth_dataset.segmentation_resolution)
        assert source.resolution.dtype == np.float64
        np.testing.assert_array_equal(source.bounds.offset, synth_dataset.voxel_offset)
        np.testing.assert_array_equal(source.bounds.size, synth_dataset.size)
        np.testing.assert_array_equal(source.bounds.chunk_size, synth_dataset.chunk_size)

    def test_synapse_points_match_oracle(self, source, oracle, synth_dataset):
        pts = np.load(synth_dataset.tables["synapses"] / "presyn_coords.npy")
        res = source.lookup(pts, synth_dataset.annotation_resolution)
        want = oracle.supervoxels_at(pts)
        np.testing.assert_array_equal(res.supervoxel_ids, want)
        assert res.supervoxel_ids.dtype == np.uint64
        assert res.outside > 0 and res.label0 > 0 and res.nan == 0
        assert res.missing == int(np.count_nonzero(want == 0))

    def test_outside_nan_and_label0_give_zero_and_are_counted(self, source, oracle, synth_dataset):
        vol = oracle._whole_volume()
        zero = np.argwhere(vol == 0)[0] + np.asarray(synth_dataset.voxel_offset)
        some = np.argwhere(vol != 0)[0] + np.asarray(synth_dataset.voxel_offset)
        seg_res = np.asarray(synth_dataset.segmentation_resolution)
        stop = np.asarray(synth_dataset.voxel_offset) + np.asarray(synth_dataset.size)
        pts_vox = np.array([some, zero, stop, np.asarray(synth_dataset.voxel_offset) - 1], float)
        pts = np.vstack([pts_vox, [[np.nan, 1.0, 1.0]]]) * 1.0
        res = source.lookup(pts, seg_res)  # points given in segmentation voxels
        assert res.supervoxel_ids[0] == vol[tuple(some - synth_dataset.voxel_offset)] != 0
        np.testing.assert_array_equal(res.supervoxel_ids[1:], [0, 0, 0, 0])
        assert (res.label0, res.outside, res.nan) == (1, 2, 1)

    def test_volume_edges(self, source, oracle, synth_dataset):
        off = np.asarray(synth_dataset.voxel_offset)
        last = off + np.asarray(synth_dataset.size) - 1
        corners = np.array(
            [[x, y, z] for x in (off[0], last[0]) for y in (off[1], last[1]) for z in (off[2], last[2])],
            float,
        )
        res = source.lookup(corners, synth_dataset.segmentation_resolution)
        want = oracle.supervoxels_at(corners, synth_dataset.segmentation_resolution)
        np.testing.assert_array_equal(res.supervoxel_ids, want)
        assert res.outside == 0

    def test_points_in_nanometers(self, source, oracle, synth_dataset):
        pts = np.load(synth_dataset.tables["synapses"] / "postsyn_coords.npy")[:300]
        nm = pts * np.asarray(synth_dataset.annotation_resolution)
        a = source.lookup(nm, (1, 1, 1)).supervoxel_ids
        np.testing.assert_array_equal(a, oracle.supervoxels_at(pts))

    def test_each_chunk_read_once(self, source, synth_dataset):
        pts = np.load(synth_dataset.tables["synapses"] / "presyn_coords.npy")
        res = source.lookup(pts, synth_dataset.annotation_resolution)
        b = source.bounds
        vox = np.floor(pts * np.asarray(synth_dataset.annotation_resolution) / source.resolution).astype(
            np.int64
        )
        inside = np.all((vox >= b.offset) & (vox < b.offset + b.size), axis=1)
        chunks = {tuple(c) for c in ((vox[inside] - b.offset) // b.chunk_size).tolist()}
        assert res.chunks_read == len(chunks)

    def test_naive_baseline_agrees(self, source, synth_dataset):
        pts = np.load(synth_dataset.tables["synapses"] / "presyn_coords.npy")[:120]
        fast = source.lookup(pts, synth_dataset.annotation_resolution)
        slow = lookup_one_cutout_per_point(source, pts, synth_dataset.annotation_resolution)
        np.testing.assert_array_equal(fast.supervoxel_ids, slow.supervoxel_ids)
        assert (fast.outside, fast.label0) == (slow.outside, slow.label0)

    def test_empty(self, source):
        res = source.lookup(np.zeros((0, 3)), (4, 4, 40))
        assert res.supervoxel_ids.shape == (0,) and res.missing == 0
