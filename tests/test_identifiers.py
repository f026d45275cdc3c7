"""Names that reach SQL are validated; hostile ones are refused before any statement runs."""

import pytest

from matengine import catalog
from matengine.errors import InvalidName

HOSTILE = ['x"; DROP TABLE y; --', "Robert'); --", "a b", "", "1abc", "ÄÖ", "a" * 64, "a.b"]


@pytest.mark.parametrize("name", HOSTILE + ["public", "matengine", "pg_x", "a__mat1"])
def test_hostile_datastack_names_are_refused(engine, name):
    with pytest.raises(InvalidName):
        catalog.add_datastack(
            engine, name, segmentation_source="precomputed://file:///x", voxel_resolution=(1, 1, 1)
        )


def test_hostile_table_name_is_refused(engine, datastack):
    with pytest.raises(InvalidName):
        catalog.create_table(engine, datastack, 'syn"; drop schema public; --', schema="synapse")
