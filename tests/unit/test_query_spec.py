"""Query requests are parsed against the table's columns: every name and value is checked,
and a refusal names the field at fault."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from matengine.errors import InvalidInput, TooLarge
from matengine.query.columns import table_columns
from matengine.query.spec import Limits, coerce_value, parse_query, parse_resolution
from matengine.schemas import get_schema

COLS = table_columns(get_schema("synapse"))
BY = COLS.by_name()


def test_no_select_means_every_column():
    spec = parse_query({}, "syn", COLS)
    assert [c.name for c in spec.select] == [c.name for c in COLS.columns]
    assert (spec.filters, spec.offset, spec.limit, spec.desired_resolution) == ([], 0, None, None)


def test_a_position_selects_its_three_parts():
    spec = parse_query({"select_columns": ["id", "pre_pt_position"]}, "syn", COLS)
    assert [c.name for c in spec.select] == [
        "id",
        "pre_pt_position_x",
        "pre_pt_position_y",
        "pre_pt_position_z",
    ]


def test_select_column_map_takes_this_tables_list():
    spec = parse_query({"select_column_map": {"syn": ["size"]}}, "syn", COLS)
    assert [c.name for c in spec.select] == ["size"]


def test_filters_are_typed_by_their_column():
    body = {
        "filter_in_dict": {"syn": {"pre_pt_root_id": [1, "2", 3.0]}},
        "filter_greater_dict": {"syn": {"size": "2.5"}},
        "filter_equal_dict": {"syn": {"valid": "true"}},
        "filter_spatial_dict": {"syn": {"pre_pt_position": [[0, 0, 0], [10, 20, 30]]}},
        "filter_less_dict": {"syn": {"created": "2026-01-01T00:00:00"}},
    }
    spec = parse_query(body, "syn", COLS)
    got = {(f.op, f.logical): f.value for f in spec.filters}
    assert got == {
        ("in", "pre_pt_root_id"): [1, 2, 3],
        ("gt", "size"): 2.5,
        ("equal", "valid"): True,
        ("bbox", "pre_pt_position"): ((0.0, 0.0, 0.0), (10.0, 20.0, 30.0)),
        ("lt", "created"): datetime(2026, 1, 1, tzinfo=UTC),
    }
    assert [f.on_root for f in spec.filters] == [True, False, False, False, False]


def test_the_old_filter_out_dict_is_notin():
    spec = parse_query({"filter_out_dict": {"syn": {"id": [4]}}}, "syn", COLS)
    assert [(f.op, f.value) for f in spec.filters] == [("notin", [4])]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the request body must be a JSON object"),
        ({"select_columns": ["nope"]}, """field "select_columns['nope']": unknown column 'nope'"""),
        ({"select_columns": "id"}, "field 'select_columns': expected a list of column names"),
        ({"select_columns": []}, "field 'select_columns': select at least one column"),
        ({"filter_in_dict": {"other": {"id": [1]}}}, "field 'filter_in_dict': unknown table 'other'"),
        ({"filter_in_dict": {"syn": {"id": 1}}}, "field \"filter_in_dict['id']\": expected a list"),
        ({"filter_equal_dict": {"syn": {"id": True}}}, "expected an integer, got True"),
        ({"filter_equal_dict": {"syn": {"id": 2**63}}}, "expected a 64-bit integer"),
        ({"filter_equal_dict": {"syn": {"size": float("nan")}}}, "expected a finite number"),
        ({"filter_equal_dict": {"syn": {"id": None}}}, "null is not a filter value"),
        ({"filter_equal_dict": {"syn": {"pre_pt_position": 1}}}, "is a position: filter it with"),
        ({"filter_greater_dict": {"syn": {"valid": True}}}, "cannot compare bool column 'valid' by order"),
        ({"filter_regex_dict": {"syn": {"size": "x"}}}, "regex filters need a text column"),
        ({"filter_spatial_dict": {"syn": {"pre_pt_position": [[0, 0], [1, 1]]}}}, "a bounding box is"),
        ({"filter_spatial_dict": {"syn": {"size": [[0, 0, 0], [1, 1, 1]]}}}, "is not a position column"),
        ({"filter_less_dict": {"syn": {"created": "yesterday"}}}, "expected an ISO timestamp"),
        ({"offset": -1}, "field 'offset': expected an integer >= 0"),
        ({"limit": 0}, "field 'limit': expected an integer >= 1"),
        ({"limit": True}, "field 'limit': expected an integer >= 1"),
        ({"desired_resolution": [1, 0, 1]}, "expected three positive numbers"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(body, message):
    with pytest.raises(InvalidInput) as err:
        parse_query(body, "syn", COLS)
    assert message in str(err.value)


def test_too_many_filter_values_are_refused():
    most = Limits().filter_values
    with pytest.raises(TooLarge, match=f"{most + 1} values, more than the {most} one filter may list"):
        parse_query({"filter_in_dict": {"syn": {"id": [1] * (most + 1)}}}, "syn", COLS)
    small = Limits(filter_values=3)
    with pytest.raises(TooLarge, match="more than the 3"):
        parse_query({"filter_in_dict": {"syn": {"id": [1, 2, 3, 4]}}}, "syn", COLS, limits=small)
    assert (
        len(parse_query({"filter_in_dict": {"syn": {"id": [1, 2, 3]}}}, "syn", COLS, limits=small).filters)
        == 1
    )


@pytest.mark.parametrize("value", ["--1", "²", "1_000", "0x10", " 1 2", "9" * 40, 2**63, -(2**63) - 1, True])
def test_integers_that_are_not_64_bit_integers_are_refused(value):
    with pytest.raises(InvalidInput, match="64-bit integer|expected an integer"):
        coerce_value(BY["id"], value, "f")


def test_segmentation_ids_are_not_negative():
    with pytest.raises(InvalidInput, match="segmentation ids are not negative"):
        coerce_value(BY["pre_pt_root_id"], -5, "f")


@pytest.mark.parametrize("value", [None, [1], {}, 1e308, "tuesday", True])
def test_times_that_are_not_times_are_refused(value):
    with pytest.raises(InvalidInput):
        coerce_value(BY["created"], value, "f")


@pytest.mark.parametrize("key", ["limit", "offset"])
def test_limit_and_offset_stay_in_64_bits(key):
    with pytest.raises(InvalidInput, match="< 2\\*\\*63"):
        parse_query({key: 2**70}, "syn", COLS)


def test_order_by_is_refused_not_ignored():
    with pytest.raises(InvalidInput, match="order_by is not supported"):
        parse_query({"order_by": "id"}, "syn", COLS)


def test_integers_from_text_and_whole_floats():
    assert coerce_value(BY["id"], " -12", "f") == -12
    assert coerce_value(BY["id"], 3.0, "f") == 3
    with pytest.raises(InvalidInput):
        coerce_value(BY["id"], 3.5, "f")


def test_resolution_is_three_positive_floats():
    assert parse_resolution([4, "4", 40.0]) == (4.0, 4.0, 40.0)
    assert parse_resolution(None) is None
    for bad in ([1, 2], [1, 2, float("inf")], "abc", 5):
        with pytest.raises(InvalidInput):
            parse_resolution(bad)
