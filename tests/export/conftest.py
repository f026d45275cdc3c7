from __future__ import annotations

import uuid

import pytest
from workflows.helpers import load_dataset, make_datastack, run_inline

from matengine import catalog
from matengine.synth.generate import generate_dataset
from matengine.synth.oracle import Oracle
from matengine.workflows.submit import sync_parameters


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synth")
    return generate_dataset(directory, synapses=3000, cells=200, edits=80, seed=3)


@pytest.fixture(scope="session")
def oracle(synth):
    return Oracle(synth.directory)


@pytest.fixture(scope="session")
def versioned(engine, synth):
    """A datastack with the synthetic dataset and version 1 at the middle edit: (name, T)."""
    name = f"exp_{uuid.uuid4().hex[:8]}"
    make_datastack(engine, name, synth)
    load_dataset(engine, name, synth)
    when = sorted(synth.edit_timestamps)[40]
    params = sync_parameters(
        engine, "complete", name, timestamp=when.isoformat(), chunk_rows=900, days_to_expire=365_000
    )
    run_inline(engine, "complete", params, datastack=name)
    yield name, when
    catalog.drop_datastack(engine, name)
