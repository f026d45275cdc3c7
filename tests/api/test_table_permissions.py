"""Per-table read/write permissions (PRIVATE / GROUP / PUBLIC, as the field's annotation
service), table admin (delete_table, update_metadata) and the table owner, through caveclient.

Users: alice owns the tables (group ``lab``), bob shares ``lab``, carol is in ``other``. Every
refused call answers 403 and leaves the table's rows and metadata as they were.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
import requests
from sqlalchemy import text

from matengine import auth, catalog, views

from .helpers import complete

TABLES = {  # name -> (read, write)
    "t_private": ("PRIVATE", "PRIVATE"),
    "t_group": ("GROUP", "GROUP"),
    "t_public": ("PUBLIC", "PRIVATE"),
}
USERS = {"alice": ["lab"], "bob": ["lab"], "carol": ["other"]}
# who may read / write each table (the owner always; admins are operators)
MAY_READ = {"t_private": {"alice"}, "t_group": {"alice", "bob"}, "t_public": {"alice", "bob", "carol"}}
MAY_WRITE = {"t_private": {"alice"}, "t_group": {"alice", "bob"}, "t_public": {"alice"}}


@pytest.fixture(scope="module")
def perms(engine, loaded, server):
    from caveclient import CAVEclient

    logging.getLogger("caveclient").setLevel(logging.ERROR)
    ds = f"perm_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        ds,
        segmentation_source=loaded.info.graph_url,
        voxel_resolution=loaded.info.annotation_resolution,
    )
    clients = {}
    for user, groups in USERS.items():
        token = auth.create_token(engine, ds, "edit", user, user=user, groups=groups)[1]
        clients[user] = CAVEclient(ds, server_address=server.url, auth_token=token, write_server_cache=False)
    admin = auth.create_token(engine, ds, "admin", "operator")[1]
    clients["admin"] = CAVEclient(ds, server_address=server.url, auth_token=admin, write_server_cache=False)
    positions = loaded.rows.base["pre_pt_position"][:6]
    ids = {}
    for name, (read, write) in TABLES.items():
        clients["alice"].annotation.create_table(
            name,
            "bound_tag",
            f"{name} of alice",
            voxel_resolution=[4, 4, 40],
            read_permission=read,
            write_permission=write,
        )
        ids[name] = clients["alice"].annotation.post_annotation(
            name, [{"pt": {"position": p.tolist()}, "tag": name} for p in positions]
        )
    clients["alice"].annotation.create_table(
        "t_open", "bound_tag", "join partner", voxel_resolution=[4, 4, 40], write_permission="PUBLIC"
    )
    for name in TABLES:  # a view of each table shows its rows: the table's read permission holds
        views.define_view(engine, ds, f"v_{name}", {"tables": [name]}, f"all of {name}")
    version = complete(engine, ds, datetime.now(UTC))
    yield ds, clients, ids, version
    catalog.drop_datastack(engine, ds)


def _state(engine, ds: str, table: str) -> tuple:
    t = catalog.get_table(engine, ds, table)
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT id, tag, deleted FROM {t.names.live_q} ORDER BY id")).all()
    return tuple(rows), t.description, t.read_permission, t.write_permission, t.deleted


def _forbidden(call) -> None:
    with pytest.raises(requests.HTTPError) as err:
        call()
    assert err.value.response.status_code == 403, err.value.response.text


def _read_calls(client, table: str, ids: list[int], version: int):
    return {
        "annotation.get_annotation": lambda: client.annotation.get_annotation(table, ids[:2]),
        "annotation.get_annotation_count": lambda: client.annotation.get_annotation_count(table),
        "annotation.get_table_metadata": lambda: client.annotation.get_table_metadata(table),
        "materialize.query_table": lambda: client.materialize.query_table(
            table, materialization_version=version
        ),
        "materialize.live_live_query": lambda: client.materialize.live_live_query(table, datetime.now(UTC)),
        "materialize.join_query": lambda: client.materialize.join_query(
            [[table, "id"], ["t_open", "id"]], materialization_version=version
        ),
        "materialize.live_live_query with a join": lambda: client.materialize.live_live_query(
            "t_open", datetime.now(UTC), joins=[["t_open", "id", table, "id"]]
        ),
        "neuroglancer annotation source": lambda: _neuroglancer_info(client, table, version),
        "materialize.query_view": lambda: client.materialize.query_view(
            f"v_{table}", materialization_version=version
        ),
        "materialize.get_view_metadata": lambda: client.materialize.get_view_metadata(
            f"v_{table}", materialization_version=version
        ),
        "materialize.get_unique_string_values": lambda: client.materialize.get_unique_string_values(table),
    }


def _neuroglancer_info(client, table: str, version: int) -> None:
    url = f"{client.server_address}/neuroglancer/annotations/{client.datastack_name}/{version}/{table}/info"
    r = requests.get(url, headers={"Authorization": f"Bearer {client.auth.token}"}, timeout=120)
    r.raise_for_status()


def _write_calls(client, table: str, ids: list[int]):
    row = {"pt": {"position": [0, 0, 0]}, "tag": "x"}
    return {
        "post_annotation": lambda: client.annotation.post_annotation(table, [row]),
        "update_annotation": lambda: client.annotation.update_annotation(table, [{"id": ids[0], **row}]),
        "delete_annotation": lambda: client.annotation.delete_annotation(table, [ids[1]]),
        "lookup_supervoxel_ids": lambda: client.materialize.lookup_supervoxel_ids(table, [ids[0]]),
        "ingest_annotation_table": lambda: client.materialize.ingest_annotation_table(table),
    }


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "admin"])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_reads_follow_the_table_read_permission(perms, engine, user, table):
    ds, clients, ids, version = perms
    allowed = user == "admin" or user in MAY_READ[table]
    before = _state(engine, ds, table)
    for name, call in _read_calls(clients[user], table, ids[table], version).items():
        if allowed:
            call()
        else:
            _forbidden(call)  # name: the caveclient call, shown by pytest on failure
            assert name
    assert _state(engine, ds, table) == before
    listed = set(clients[user].annotation.get_tables())
    assert (table in listed) == allowed
    assert (table in clients[user].materialize.get_tables(version=version)) == allowed
    assert (f"v_{table}" in clients[user].materialize.get_views(version=version)) == allowed


@pytest.mark.parametrize("user", ["bob", "carol"])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_forbidden_writes_answer_403_and_change_nothing(perms, engine, user, table):
    ds, clients, ids, _ = perms
    if user in MAY_WRITE[table]:
        pytest.skip("allowed: see test_allowed_writes")
    before = _state(engine, ds, table)
    for call in _write_calls(clients[user], table, ids[table]).values():
        _forbidden(call)
    _forbidden(lambda: clients[user].annotation.update_metadata(table, description="mine now"))
    _forbidden(lambda: clients[user].annotation.delete_table(table))
    assert _state(engine, ds, table) == before


def test_group_member_writes_a_group_table_but_cannot_administer_it(perms, engine):
    ds, clients, ids, _ = perms
    bob = clients["bob"].annotation
    new = bob.post_annotation("t_group", [{"pt": {"position": [1, 2, 3]}, "tag": "bob"}])
    assert bob.get_annotation("t_group", new)[0]["tag"] == "bob"
    bob.delete_annotation("t_group", new)
    before = _state(engine, ds, "t_group")
    _forbidden(lambda: bob.update_metadata("t_group", description="bob's"))
    _forbidden(lambda: bob.delete_table("t_group"))
    assert _state(engine, ds, "t_group") == before


def test_owner_is_recorded_at_create_not_taken_from_the_body(perms, engine):
    ds, clients, _, _ = perms
    assert catalog.get_table(engine, ds, "t_private").owner == "alice"
    clients["carol"].annotation.create_table(
        "t_claimed", "bound_tag", "claims alice", voxel_resolution=[4, 4, 40], user_id=1
    )
    assert catalog.get_table(engine, ds, "t_claimed").owner == "carol"
    md = clients["carol"].annotation.get_table_metadata("t_claimed")
    assert (
        md["user_id"] == "carol" and md["write_permission"] == "PRIVATE" and md["read_permission"] == "PUBLIC"
    )


def test_update_metadata_by_the_owner(perms, engine, server):
    ds, clients, ids, _ = perms
    alice = clients["alice"].annotation
    alice.create_table("t_meta", "bound_tag", "before", voxel_resolution=[4, 4, 40])
    md = alice.update_metadata(
        "t_meta",
        description="after",
        notice_text="under review",
        write_permission="PUBLIC",
        flat_segmentation_source="precomputed://gs://bucket/seg",
    )
    assert (md["description"], md["notice_text"], md["write_permission"]) == (
        "after",
        "under review",
        "PUBLIC",
    )
    assert md["flat_segmentation_source"] == "precomputed://gs://bucket/seg"
    got = clients["carol"].annotation.get_table_metadata("t_meta")
    assert got["description"] == "after" and got["read_permission"] == "PUBLIC"
    # now PUBLIC for writes: carol may post
    carol_ids = clients["carol"].annotation.post_annotation(
        "t_meta", [{"pt": {"position": [1, 2, 3]}, "tag": "c"}]
    )
    assert len(carol_ids) == 1
    url = f"{server.url}/annotation/api/v2/aligned_volume/{ds}/table"
    headers = {"Authorization": f"Bearer {alice.session.headers['Authorization'].split()[-1]}"}
    body = {
        "table_name": "t_meta",
        "metadata": {"voxel_resolution_x": 8, "voxel_resolution_y": 8, "voxel_resolution_z": 40},
    }
    r = requests.put(url, json=body, headers=headers, timeout=30)
    assert r.status_code == 400 and "only while it is empty" in r.json()["message"]
    assert catalog.get_table(engine, ds, "t_meta").voxel_resolution == (4.0, 4.0, 40.0)
    alice.create_table("t_empty", "bound_tag", "empty", voxel_resolution=[4, 4, 40])
    r = requests.put(url, json={**body, "table_name": "t_empty"}, headers=headers, timeout=30)
    assert r.status_code == 200 and r.json()["voxel_resolution_x"] == 8.0
    r = requests.put(
        url,
        json={"table_name": "t_empty", "metadata": {"read_permission": "SECRET"}},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 400 and "read_permission must be one of" in r.json()["message"]
    assert catalog.get_table(engine, ds, "t_empty").read_permission == "PUBLIC"


def test_delete_table_is_soft_and_old_versions_keep_it(perms, engine):
    ds, clients, _, _ = perms
    alice = clients["alice"]
    alice.annotation.create_table("t_gone", "bound_tag", "to delete", voxel_resolution=[4, 4, 40])
    ids = alice.annotation.post_annotation("t_gone", [{"pt": {"position": [1, 2, 3]}, "tag": "g"}])
    old = complete(engine, ds, datetime.now(UTC))
    assert alice.annotation.delete_table("t_gone") is True
    assert "t_gone" not in alice.annotation.get_tables()
    with pytest.raises(requests.HTTPError) as err:
        alice.annotation.post_annotation("t_gone", [{"pt": {"position": [1, 2, 3]}, "tag": "g"}])
    assert err.value.response.status_code == 404
    new = complete(engine, ds, datetime.now(UTC))
    assert "t_gone" not in alice.materialize.get_tables(version=new)
    assert "t_gone" in alice.materialize.get_tables(version=old)
    df = alice.materialize.query_table("t_gone", materialization_version=old)
    assert df["id"].tolist() == ids
    t = catalog.get_table(engine, ds, "t_gone")
    assert t.deleted is not None
    with engine.connect() as conn:  # the rows stay
        assert conn.execute(text(f"SELECT count(*) FROM {t.names.live_q}")).scalar_one() == 1


def test_reference_table_is_kept_in_either_shape(perms, engine, server):
    ds, clients, _, _ = perms
    alice = clients["alice"].annotation
    alice.create_table("t_ref_nested", "reference_tag", "caveclient's shape", reference_table="t_open",
                       voxel_resolution=[4, 4, 40])  # fmt: skip
    assert catalog.get_table(engine, ds, "t_ref_nested").reference_table == "t_open"
    token = alice.session.headers["Authorization"].split()[-1]
    body = {
        "table_name": "t_ref_top",
        "schema_type": "reference_tag",
        "metadata": {"description": "older shape", "voxel_resolution_x": 4, "voxel_resolution_y": 4,
                     "voxel_resolution_z": 40},
        "table_metadata": {"reference_table": "t_open"},
    }  # fmt: skip
    r = requests.post(
        f"{server.url}/annotation/api/v2/aligned_volume/{ds}/table",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert catalog.get_table(engine, ds, "t_ref_top").reference_table == "t_open"
    assert alice.get_table_metadata("t_ref_top")["reference_table"] == "t_open"
    # a reference to a table the caller may not read is refused, and no table is made
    with pytest.raises(requests.HTTPError) as err:
        clients["carol"].annotation.create_table(
            "t_ref_private", "reference_tag", "x", reference_table="t_private", voxel_resolution=[4, 4, 40]
        )
    assert err.value.response.status_code == 403
    assert "t_ref_private" not in alice.get_tables()
