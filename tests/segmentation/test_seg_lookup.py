"""Point -> supervoxel lookups on every kind of volume location, against the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from seg_suites import FLAT_TABLE, SupervoxelSuite

from matengine.segmentation import open_segmentation
from matengine.segmentation.cloudvolume_lookup import CloudVolumeSupervoxels, points_to_voxels


class TestFileSupervoxels(SupervoxelSuite):
    """precomputed://file://… read directly from disk."""

    @pytest.fixture
    def source(self, flat_seg):
        return flat_seg.supervoxels


class TestGrapheneSupervoxels(SupervoxelSuite):
    """graphene://… : the volume named by the server's info ``data_dir`` (served by it)."""

    @pytest.fixture
    def source(self, graphene_seg):
        assert graphene_seg.supervoxels.cloudpath.startswith("http://127.0.0.1:")
        return graphene_seg.supervoxels


class TestHttpSupervoxels(SupervoxelSuite):
    """precomputed://http://… : gzip-encoded chunks over HTTP, single-threaded reads."""

    @pytest.fixture
    def source(self, pcg_server):
        url = f"{pcg_server.url}/segmentation/table/{FLAT_TABLE}/volume"
        seg = open_segmentation("precomputed://" + url)
        seg.supervoxels.parallel = 1
        return seg.supervoxels


def test_voxel_formula_multiplies_before_dividing():
    # 7 * (3/7) < 3 in floating point; 7 * 3 / 7 == 3 exactly.
    vox, nan = points_to_voxels(np.array([[7.0, 7.0, 7.0]]), (3, 3, 3), np.array([7.0] * 3))
    assert vox.tolist() == [[3, 3, 3]] and not nan.any()


def test_parallel_and_serial_agree(synth_dataset):
    pts = np.load(synth_dataset.tables["synapses"] / "postsyn_coords.npy")
    a = CloudVolumeSupervoxels(synth_dataset.volume_url, parallel=1).lookup(
        pts, synth_dataset.annotation_resolution
    )
    b = CloudVolumeSupervoxels(synth_dataset.volume_url, parallel=8).lookup(
        pts, synth_dataset.annotation_resolution
    )
    np.testing.assert_array_equal(a.supervoxel_ids, b.supervoxel_ids)
    assert a.chunks_read == b.chunks_read > 1


@pytest.mark.parametrize("points_per_chunk", [1, 3, 200])
def test_local_chunk_reader_agrees_with_cloudvolume(flat_seg, synth_dataset, points_per_chunk):
    """The direct compressed_segmentation reader (point reads for a few points, one decode for
    many) gives what CloudVolume's cutout gives, edge chunks included."""
    source = flat_seg.supervoxels
    assert source._cseg is not None  # a file:// compressed_segmentation volume takes the fast path
    b = source.bounds
    grid = (b.size + b.chunk_size - 1) // b.chunk_size
    rng = np.random.default_rng(points_per_chunk)
    checked = 0
    for ci in np.ndindex(*grid):
        lo = b.offset + np.asarray(ci) * b.chunk_size
        hi = np.minimum(lo + b.chunk_size, b.stop)
        local = rng.integers(0, hi - lo, size=(points_per_chunk, 3))
        want = source._read(lo, hi)[local[:, 0], local[:, 1], local[:, 2]]
        got = source._cseg.values(lo, hi, local)
        assert got is not None
        np.testing.assert_array_equal(got, want)
        checked += 1
    assert checked == int(np.prod(grid))


def test_local_chunk_reader_reads_a_missing_chunk_as_zero(synth_dataset, tmp_path):
    import shutil

    volume = tmp_path / "volume"
    shutil.copytree(synth_dataset.precomputed_url.split("file://", 1)[1], volume)
    source = CloudVolumeSupervoxels(f"file://{volume}")
    b = source.bounds
    lo, hi = b.offset, np.minimum(b.offset + b.chunk_size, b.stop)
    chunk = next((volume / source._cv.key).glob(f"{lo[0]}-{hi[0]}_{lo[1]}-{hi[1]}_{lo[2]}-{hi[2]}*"))
    chunk.unlink()
    local = np.zeros((2, 3), np.int64)
    np.testing.assert_array_equal(source._cseg.values(lo, hi, local), [0, 0])
    np.testing.assert_array_equal(source._read(lo, hi)[0, 0, 0], 0)
