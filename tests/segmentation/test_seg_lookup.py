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
