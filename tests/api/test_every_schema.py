"""One table of every schema type of the registry, created through caveclient, rows posted
through caveclient, read back exact through a version and a live query.

Rows are built from the schema: points at synapse positions of the synthetic dataset (so they
land on real supervoxels), one value per kind, optional values given on the first row and
left out on the second. Expected supervoxels and roots come from the oracle.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest

from matengine import auth, catalog
from matengine.schemas import SCHEMAS, AnnotationSchema, Field, Kind

from .helpers import complete, ingest

TABLE_TYPES = sorted(SCHEMAS)
ROWS = 2


def _value(f: Field, k: int, target_ids: list[int]) -> Any:
    if f.choices is not None:
        return f.choices[k % len(f.choices)]
    if f.kind is Kind.FLOAT:
        return 1.25 + k
    if f.kind is Kind.INT:
        return 10 + k
    if f.kind is Kind.STRING:
        return f"value {k}"
    if f.kind is Kind.BOOL:
        return k % 2 == 0
    if f.kind is Kind.REFERENCE:
        return target_ids[k]
    raise AssertionError(f.kind)


def _rows(schema: AnnotationSchema, positions: np.ndarray, target_ids: list[int]) -> list[dict]:
    out = []
    for k in range(ROWS):
        row: dict[str, Any] = {}
        for j, f in enumerate(schema.fields):
            if f.auto_user or f.parent is not None or (not f.required and k == 1):
                continue
            if f.is_point:
                point: dict[str, Any] = {"position": positions[(3 * k + j) % len(positions)].tolist()}
                for extra in schema.point_extras(f.name):
                    if extra.required or k == 0:
                        point[extra.key] = _value(extra, k, target_ids)
                row[f.name] = point
            else:
                row[f.name] = _value(f, k, target_ids)
        out.append(row)
    return out


def _posted(schema: AnnotationSchema, row: dict) -> dict:
    """A row as caveclient posts it: a point class's own table (derived_spatial_point) gives
    its one point's values at the top level."""
    if not schema.is_point_class:
        return row
    (point,) = schema.points
    return {**{k: v for k, v in row.items() if k != point.name}, **row[point.name]}


def _expected(schema: AnnotationSchema, rows: list[dict], oracle, res, t: datetime, user: int | None) -> dict:
    """Column -> values of the posted rows (positions split, ids from the oracle)."""
    out: dict[str, list] = {}
    for f in schema.fields:
        if f.parent is not None:
            out[f.name] = [r[f.parent].get(f.key) for r in rows]
        elif f.is_point:
            pos = [r.get(f.name, {}).get("position") for r in rows]
            for j, a in enumerate("xyz"):
                out[f"{f.name}_position_{a}"] = [np.nan if p is None else float(p[j]) for p in pos]
            if f.kind is Kind.BOUND_POINT:
                sv = oracle.supervoxels_at(np.array(pos, float), res)
                out[f"{f.name}_supervoxel_id"] = sv.astype(np.int64).tolist()
                out[f"{f.name}_root_id"] = (
                    np.asarray(oracle.roots_at(sv, t), np.uint64).astype(np.int64).tolist()
                )
        elif f.auto_user:
            out[f.name] = [user] * len(rows)
        else:
            out[f.name] = [r.get(f.name) for r in rows]
    return out


def _assert_rows(df: pd.DataFrame, ids: list[int], want: dict, name: str) -> None:
    df = df.sort_values("id").reset_index(drop=True)
    assert df["id"].tolist() == sorted(ids), name
    order = np.argsort(ids)
    for col, values in want.items():
        assert col in df.columns, f"{name}: no column {col}"
        w = [values[i] for i in order]
        g = df[col].tolist()
        for got, exp in zip(g, w, strict=True):
            if exp is None or (isinstance(exp, float) and np.isnan(exp)):
                assert got is None or pd.isna(got), f"{name}.{col}: {got!r} != null"
            elif isinstance(exp, float):
                assert float(got) == pytest.approx(exp), f"{name}.{col}"
            else:
                assert got == exp, f"{name}.{col}: {got!r} != {exp!r}"


@pytest.fixture(scope="module")
def every(engine, loaded, server):
    from caveclient import CAVEclient

    logging.getLogger("caveclient").setLevel(logging.ERROR)
    name = f"every_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        name,
        segmentation_source=loaded.info.graph_url,
        voxel_resolution=loaded.info.annotation_resolution,
    )
    token = auth.create_token(engine, name, "edit", "every schema", user="curie", groups=["lab"])[1]
    client = CAVEclient(name, server_address=server.url, auth_token=token, write_server_cache=False)
    user_id = auth.user_id_of(engine, "curie")
    yield client, name, user_id
    catalog.drop_datastack(engine, name)


def test_every_schema_type_round_trips_through_caveclient(every, engine, loaded):
    client, ds, user_id = every
    ann = client.annotation
    res = list(loaded.info.annotation_resolution)
    positions = loaded.rows.base["pre_pt_position"][:50]
    ann.create_table("base", "bound_tag", "reference target", voxel_resolution=res)
    target_ids = ann.post_annotation(
        "base", [{"pt": {"position": p.tolist()}, "tag": "t"} for p in positions[:2]]
    )
    posted: dict[str, tuple[AnnotationSchema, list[dict], list[int]]] = {}
    for i, schema_name in enumerate(TABLE_TYPES):
        schema = SCHEMAS[schema_name]
        table = f"s{i:02d}"
        ann.create_table(
            table,
            schema_name,
            f"a {schema_name} table",
            voxel_resolution=res,
            reference_table="base" if schema.is_reference else None,
        )
        rows = _rows(schema, positions, target_ids)
        posted[table] = (schema, rows, ann.post_annotation(table, [_posted(schema, r) for r in rows]))
    assert set(posted) <= set(ann.get_tables())
    now = datetime.now(UTC)
    ingest(engine, ds, now)
    version = complete(engine, ds, now)
    live_at = datetime.now(UTC)
    for table, (schema, rows, ids) in posted.items():
        md = client.materialize.get_table_metadata(table)
        assert md["schema_type"] == schema.name
        if schema.is_reference:
            assert md["reference_table"] == "base"
        v = client.materialize.query_table(
            table, materialization_version=version, split_positions=True, merge_reference=False
        )
        _assert_rows(v, ids, _expected(schema, rows, loaded.oracle, res, now, user_id), f"{table} v{version}")
        live = client.materialize.live_live_query(table, live_at, split_positions=True)
        _assert_rows(
            live, ids, _expected(schema, rows, loaded.oracle, res, live_at, user_id), f"{table} live"
        )


def test_derived_spatial_point_rows_are_staged_and_read_at_the_top_level(every):
    client, _, _ = every
    ann = client.annotation
    ann.create_table("dsp_crud", "derived_spatial_point", "derived points", voxel_resolution=[4, 4, 40])
    staged = ann.stage_annotations("dsp_crud")
    staged.add(position=[1, 2, 3], dependent_chunk=7, level=2)
    staged.add(position=[4, 5, 6], dependent_chunk=8)
    assert staged.annotation_list == [
        {"position": [1, 2, 3], "dependent_chunk": 7, "level": 2},
        {"position": [4, 5, 6], "dependent_chunk": 8},
    ]
    ids = ann.upload_staged_annotations(staged)
    got = ann.get_annotation("dsp_crud", ids)
    assert [(g["position"], g["dependent_chunk"], g["level"]) for g in got] == [
        ([1, 2, 3], 7, 2),
        ([4, 5, 6], 8, None),
    ]
    assert not any(k.startswith("pt") or k in ("supervoxel_id", "root_id") for k in got[0])
    new = ann.update_annotation("dsp_crud", {"id": ids[0], "position": [9, 9, 9], "dependent_chunk": 1})
    ann.delete_annotation("dsp_crud", [ids[1]])
    assert ann.get_annotation_count("dsp_crud") == 1
    [row] = ann.get_annotation("dsp_crud", list(new.values()))
    assert (row["position"], row["dependent_chunk"], row["level"]) == ([9, 9, 9], 1, None)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"pt": {"position": [1, 2, 3], "dependent_chunk": 1}},
            "row 0, field 'pt': a derived_spatial_point row gives position, supervoxel_id, root_id, "
            "dependent_chunk, level at the top level, not in a point",
        ),
        ({"position": [1, 2, 3]}, "row 0, field 'dependent_chunk': missing required value"),
        ({"dependent_chunk": 1}, "row 0, field 'position': missing point position"),
    ],
)
def test_derived_spatial_point_row_of_another_shape_is_refused(every, server, row, message):
    import requests

    client, ds, _ = every
    table = f"dsp_bad_{uuid.uuid4().hex[:6]}"
    client.annotation.create_table(table, "derived_spatial_point", "x", voxel_resolution=[4, 4, 40])
    client.annotation.post_annotation(table, [{"position": [1, 2, 3], "dependent_chunk": 1}])
    with pytest.raises(requests.HTTPError) as err:
        client.annotation.post_annotation(table, [row])
    assert err.value.response.status_code == 400
    assert err.value.response.json()["message"] == message
    assert client.annotation.get_annotation_count(table) == 1


def test_schema_service_answers_what_caveclient_reads(every):
    client, _, _ = every
    assert sorted(client.schema.get_schemas()) == sorted(SCHEMAS)
    synapse = client.schema.schema_definition("synapse")
    assert synapse["$ref"] == "#/definitions/SynapseSchema"
    cls = synapse["definitions"]["SynapseSchema"]
    assert set(cls["required"]) == {"pre_pt", "ctr_pt", "post_pt"}
    assert cls["properties"]["pre_pt"]["$ref"] == "#/definitions/BoundSpatialPoint"
    assert cls["properties"]["ctr_pt"]["$ref"] == "#/definitions/SpatialPoint"
    assert cls["properties"]["size"]["type"] == ["number", "null"]
    status = client.schema.schema_definition("proofread_status")["definitions"]["ProofreadStatus"]
    assert status["properties"]["status"]["enum"] == ["non", "clean", "extended"]
    derived = client.schema.schema_definition("derived_tag")["definitions"]["DerivedSpatialPoint"]
    assert set(derived["properties"]) == {"position", "supervoxel_id", "root_id", "dependent_chunk", "level"}
    assert derived["required"] == ["position", "dependent_chunk"]
    user = client.schema.schema_definition("bound_tag_user")["definitions"]["BoundTagAnnotationUser"]
    assert "user_id" in user["properties"] and "user_id" not in user["required"]  # the server writes it
    # caveclient stages annotations from these definitions
    staged = client.annotation.stage_annotations(schema_name="bound_tag")
    staged.add(pt_position=[1, 2, 3], tag="x")
    assert staged.annotation_list == [{"pt": {"position": [1, 2, 3]}, "tag": "x"}]


def test_unknown_schema_type_is_404_without_echo(every, server):
    import requests

    r = requests.get(f"{server.url}/schema/api/v2/type/nope<script>", timeout=30)
    assert r.status_code == 404 and "nope" not in r.text and "unknown schema type" in r.json()["message"]
    client, _, _ = every
    with pytest.raises(requests.HTTPError) as err:
        client.annotation.create_table("bad", "nope<script>", "x", voxel_resolution=[4, 4, 40])
    assert err.value.response.status_code == 404 and "nope" not in err.value.response.text
    assert "bad" not in client.annotation.get_tables()
