from __future__ import annotations

import uuid

import pytest

from matengine import catalog
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle

from .helpers import load_dataset, make_datastack


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synth")
    info = generate_dataset(directory, synapses=3000, cells=200, edits=80, seed=3)
    return info


@pytest.fixture(scope="session")
def oracle(synth):
    return Oracle(synth.directory)


@pytest.fixture
def loaded(engine, synth):
    """A datastack holding the synthetic dataset, uploaded and ingested at its start."""
    name = f"syn_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, synth)
    load_dataset(engine, name, synth)
    yield name
    catalog.drop_datastack(engine, name)
