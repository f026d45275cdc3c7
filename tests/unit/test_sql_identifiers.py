"""SQL identifiers: what is accepted, what is refused, how names are quoted."""

from __future__ import annotations

import pytest

from matengine.db.identifiers import quote, validate_datastack_name, validate_name, version_schema
from matengine.errors import InvalidName

HOSTILE = ['x"; DROP TABLE y; --', "Robert'); --", "a b", "", "1abc", "ÄÖ", "a" * 64, "a.b"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_by_validate_and_quote(name):
    with pytest.raises(InvalidName):
        validate_name(name)
    with pytest.raises(InvalidName, match="refusing to quote"):
        quote(name)


def test_upper_case_is_refused_for_names_but_quoted_for_schema_columns():
    # names users give (tables, datastacks) are lowercase; the field's schemas have columns
    # like gOSI (func_properties_bcm), which quoting keeps as they are
    with pytest.raises(InvalidName):
        validate_name("A")
    assert quote("gOSI") == '"gOSI"'


def test_a_non_string_is_refused():
    with pytest.raises(InvalidName):
        validate_name(7)  # type: ignore[arg-type]


def test_63_characters_is_the_longest_name():
    assert validate_name("a" * 63) == "a" * 63
    with pytest.raises(InvalidName, match="longer than 63"):
        validate_name("a" * 64)


def test_quote_joins_parts_with_a_dot():
    assert quote("ds", "syn") == '"ds"."syn"'
    assert quote("select") == '"select"'  # a reserved word is fine once quoted


@pytest.mark.parametrize("name", ["public", "matengine", "information_schema", "pg_x", "a__mat1"])
def test_reserved_datastack_names_are_refused(name):
    with pytest.raises(InvalidName, match="reserved"):
        validate_datastack_name(name)


def test_version_schema_is_datastack_mat_n():
    assert version_schema("minnie", 12) == "minnie__mat12"
    with pytest.raises(InvalidName):
        version_schema("m" * 60, 12345)
