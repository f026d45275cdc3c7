"""Session fixtures for segmentation tests: one synthetic dataset, its oracle, and a real
uvicorn server (127.0.0.1, free port) serving the PCG-compatible routes over it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from seg_suites import FLAT_TABLE, TOKEN

from matengine.segmentation import Segmentation, open_segmentation
from matengine.segmentation.serving import ThreadedServer, pcg_app
from matengine.synth.generate import DatasetInfo, generate_dataset
from matengine.synth.oracle import Oracle


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> DatasetInfo:
    return generate_dataset(tmp_path_factory.mktemp("segtests") / "ds", seed=7)


@pytest.fixture(scope="session")
def oracle(synth_dataset: DatasetInfo) -> Oracle:
    return Oracle(synth_dataset.directory)


@pytest.fixture(scope="session")
def local_seg(synth_dataset: DatasetInfo) -> Segmentation:
    return open_segmentation(synth_dataset.graph_url)


@pytest.fixture(scope="session")
def flat_seg(synth_dataset: DatasetInfo) -> Segmentation:
    return open_segmentation(synth_dataset.precomputed_url)


@pytest.fixture(scope="session")
def pcg_server(local_seg: Segmentation, flat_seg: Segmentation) -> Iterator[ThreadedServer]:
    tables = {local_seg.name: local_seg, FLAT_TABLE: flat_seg}
    with ThreadedServer(pcg_app(tables.__getitem__)) as srv:
        yield srv


@pytest.fixture(scope="session")
def graphene_url(pcg_server: ThreadedServer, local_seg: Segmentation) -> str:
    return f"graphene://{pcg_server.url}/segmentation/table/{local_seg.name}"


@pytest.fixture(scope="session")
def graphene_seg(graphene_url: str) -> Segmentation:
    return open_segmentation(graphene_url, token=TOKEN)
