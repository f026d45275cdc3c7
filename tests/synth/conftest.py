"""A small synthetic dataset shared by the synth tests."""

from __future__ import annotations

import pytest

from matengine.synth.generate import DatasetInfo, generate_dataset
from matengine.synth.oracle import Oracle


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> DatasetInfo:
    return generate_dataset(tmp_path_factory.mktemp("synth") / "ds", seed=11, synapses=1500, cells=80)


@pytest.fixture(scope="session")
def small_oracle(small_dataset: DatasetInfo) -> Oracle:
    return Oracle(small_dataset.directory)
