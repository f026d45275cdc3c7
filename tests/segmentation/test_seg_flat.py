"""Flat (precomputed://) segmentations: root = supervoxel, nothing ever expires."""

from __future__ import annotations

import numpy as np
import pytest
from seg_suites import FLAT_TABLE, TOKEN, FlatExpect, RootGraphSuite

from matengine.segmentation import open_segmentation


class TestFlatRootGraph(RootGraphSuite):
    @pytest.fixture
    def graph(self, flat_seg):
        return flat_seg.roots

    @pytest.fixture
    def expect(self, oracle, synth_dataset):
        return FlatExpect(oracle, synth_dataset)


class TestFlatOverHttp(RootGraphSuite):
    """The same flat graph served by the PCG routes and read back with the client."""

    @pytest.fixture
    def graph(self, pcg_server):
        return open_segmentation(
            f"graphene://{pcg_server.url}/segmentation/table/{FLAT_TABLE}", token=TOKEN
        ).roots

    @pytest.fixture
    def expect(self, oracle, synth_dataset):
        return FlatExpect(oracle, synth_dataset)


def test_flat_segmentation_fields(flat_seg, synth_dataset):
    assert flat_seg.flat and flat_seg.name == "volume"
    assert flat_seg.url == synth_dataset.precomputed_url
    roots = flat_seg.roots
    ids = np.array([5, 0, 7], np.uint64)
    assert roots.get_roots(ids, synth_dataset.end).tolist() == [5, 0, 7]
    assert roots.is_latest_roots(ids, synth_dataset.start).tolist() == [True, False, True]
