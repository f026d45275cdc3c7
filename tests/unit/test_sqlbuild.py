"""The SQL text of a query: identifiers quoted, every value a typed bound parameter."""

from __future__ import annotations

import pytest

from matengine.errors import InvalidName
from matengine.query.columns import table_columns
from matengine.query.spec import parse_query
from matengine.query.sqlbuild import (
    Binder,
    filter_sql,
    live_source,
    output_fetch,
    root_candidates_sql,
    select_tail,
    version_source,
)
from matengine.schemas import get_schema

COLS = table_columns(get_schema("synapse"))
BY = COLS.by_name()


def _filter(body):
    [f] = parse_query(body, "syn", COLS).filters
    return f


def test_version_source_reads_the_versions_quoted_relation():
    b = Binder()
    src = version_source("ds", 3, "syn", "synapse", None, b)
    assert src.from_sql == 'FROM "ds__mat3"."syn" AS a' and not src.live
    assert src.ref(BY["pre_pt_root_id"]) == 'a."pre_pt_root_id"'


def test_a_sample_is_a_bound_percentage_of_the_store_restricted_to_the_version():
    b = Binder()
    src = version_source("ds", 3, "syn", "synapse", 2.5, b)
    assert src.from_sql.startswith("FROM (SELECT id, created, NULL::timestamptz AS deleted")
    assert src.from_sql.endswith(
        'FROM "ds__store"."syn" TABLESAMPLE BERNOULLI (CAST(%(p0)s AS float8)) '
        "WHERE v_from <= 3 AND v_to > 3) AS a"
    )
    assert b.params == {"p0": 2.5}


def test_a_hostile_datastack_name_never_reaches_sql():
    with pytest.raises(InvalidName):
        version_source('x"; drop table y; --', 3, "syn", "synapse", None, Binder())


def test_live_source_joins_the_segmentation_table_and_valid_is_true_at_t():
    src = live_source('"ds"."syn"', '"ds"."syn__seg"', None, Binder())
    assert src.from_sql == 'FROM "ds"."syn" AS a LEFT JOIN "ds"."syn__seg" AS s ON s.id = a.id'
    assert src.ref(BY["pre_pt_root_id"]) == 's."pre_pt_root_id"'
    assert src.ref(BY["size"]) == 'a."size"'
    assert src.ref(BY["valid"]) == "true"


@pytest.mark.parametrize(
    ("body", "sql", "params"),
    [
        ({"filter_in_dict": {"syn": {"id": [1, 2]}}}, 'a."id" = ANY(CAST(%(p0)s AS bigint[]))', [[1, 2]]),
        (
            {"filter_notin_dict": {"syn": {"id": [3]}}},
            '(a."id" IS NULL OR a."id" <> ALL(CAST(%(p0)s AS bigint[])))',
            [[3]],
        ),
        ({"filter_greater_equal_dict": {"syn": {"size": 2}}}, 'a."size" >= CAST(%(p0)s AS float8)', [2.0]),
        ({"filter_equal_dict": {"syn": {"valid": False}}}, 'a."valid" = CAST(%(p0)s AS boolean)', [False]),
        (
            {"filter_spatial_dict": {"syn": {"pre_pt_position": [[1, 2, 3], [4, 5, 6]]}}},
            'point(a."pre_pt_position_x", a."pre_pt_position_y") <@ box(point(CAST(%(p0)s AS float8), '
            "CAST(%(p1)s AS float8)), point(CAST(%(p2)s AS float8), CAST(%(p3)s AS float8))) "
            'AND a."pre_pt_position_z" BETWEEN SYMMETRIC CAST(%(p4)s AS float8) AND CAST(%(p5)s AS float8)',
            [1.0, 2.0, 4.0, 5.0, 3.0, 6.0],
        ),
    ],
)
def test_each_filter_compares_the_stored_column(body, sql, params):
    b = Binder()
    src = version_source("ds", 1, "syn", "synapse", None, b)
    assert filter_sql(_filter(body), src, b) == sql
    assert list(b.params.values()) == params


def test_root_candidates_let_unlooked_up_rows_through():
    b = Binder()
    src = live_source('"ds"."syn"', '"ds"."syn__seg"', None, b)
    root, svid = BY["pre_pt_root_id"], BY["pre_pt_supervoxel_id"]
    assert root_candidates_sql(root, svid, src, [5, 6], b) == (
        '(s."pre_pt_root_id" = ANY(CAST(%(p0)s AS bigint[])) OR '
        '(s."pre_pt_root_id" IS NULL AND s."pre_pt_supervoxel_id" IS NOT NULL))'
    )
    # asking for root 0 (not looked up) takes every null root
    assert root_candidates_sql(root, svid, src, [0], b).endswith('OR s."pre_pt_root_id" IS NULL)')


def test_select_tail_orders_limits_and_offsets_with_parameters():
    b = Binder()
    src = version_source("ds", 1, "syn", "synapse", None, b)
    tail = select_tail(src, ["x", "y"], b, limit=10, offset=20)
    assert tail == (
        'FROM "ds__mat1"."syn" AS a WHERE (x) AND (y) ORDER BY a.id '
        "LIMIT CAST(%(p0)s AS bigint) OFFSET CAST(%(p1)s AS bigint)"
    )
    assert b.params == {"p0": 10, "p1": 20}
    assert select_tail(src, [], Binder(), order=False) == 'FROM "ds__mat1"."syn" AS a'


def test_a_rescaled_position_is_multiplied_by_a_bound_factor():
    b = Binder()
    src = version_source("ds", 1, "syn", "synapse", None, b)
    scaled = output_fetch(BY["pre_pt_position_y"], src, {"a": (1.0, 0.5, 1.0)}, b)
    assert scaled.expr == '(a."pre_pt_position_y" * CAST(%(p0)s AS float8))' and b.params == {"p0": 0.5}
    plain = output_fetch(BY["pre_pt_position_x"], src, {"a": (1.0, 0.5, 1.0)}, b)
    assert plain.expr == 'a."pre_pt_position_x"'
