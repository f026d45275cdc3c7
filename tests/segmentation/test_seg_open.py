"""open_segmentation: scheme dispatch, Segmentation fields, clear errors."""

from __future__ import annotations

import pytest
from seg_suites import TOKEN

from matengine.segmentation import (
    RootGraph,
    SegmentationSourceError,
    SupervoxelSource,
    open_segmentation,
)
from matengine.segmentation.flat import FlatGraph
from matengine.segmentation.graphene import GrapheneClient
from matengine.segmentation.local_graph import LocalGraph


def test_local(local_seg, synth_dataset):
    assert isinstance(local_seg.roots, LocalGraph) and not local_seg.flat
    assert local_seg.name == synth_dataset.pcg_name == "synth_pcg"
    assert isinstance(local_seg.roots, RootGraph)
    assert isinstance(local_seg.supervoxels, SupervoxelSource)
    assert local_seg.supervoxels.cloudpath == synth_dataset.volume_url


def test_graphene(graphene_seg, graphene_url):
    assert isinstance(graphene_seg.roots, GrapheneClient) and not graphene_seg.flat
    assert graphene_seg.name == "synth_pcg" and graphene_seg.url == graphene_url
    assert isinstance(graphene_seg.roots, RootGraph)


def test_precomputed(flat_seg):
    assert isinstance(flat_seg.roots, FlatGraph) and flat_seg.flat
    assert isinstance(flat_seg.roots, RootGraph)


@pytest.mark.parametrize(
    "url, message",
    [
        ("nothing", "expected local://PATH"),
        ("s3://bucket/x", "unsupported scheme 's3'"),
        ("local:///definitely/not/here", "does not exist"),
        ("precomputed://", "empty volume path"),
        ("precomputed://file:///definitely/not/here", "cannot open volume"),
        ("graphene://gs://b/x", "expected graphene://http"),
    ],
)
def test_errors(url, message):
    with pytest.raises(SegmentationSourceError, match=message):
        open_segmentation(url)


def test_graphene_unknown_table(pcg_server):
    with pytest.raises(SegmentationSourceError, match="cannot read table info"):
        open_segmentation(f"graphene://{pcg_server.url}/segmentation/table/nope", token=TOKEN)
