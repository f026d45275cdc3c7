"""``manifest.json`` of an export: what a reader needs to trust the files without PostgreSQL.

It holds the version and its time T, and per table the row count, the Arrow schema, the sort
key (``sorted_by``; in space order also ``space_key``, what a reader needs to recompute the
key) and every file with its rows, bytes and sha256 (read back from the destination, so the
manifest describes what is there). No clock or run id goes in: the same version exported
twice, or resumed after a crash, gives the same manifest, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from matengine.export.destination import Destination
from matengine.export.parquet_files import COMPRESSION, file_facts
from matengine.export.source import ROW_GROUP_ROWS, layout_of, sorted_by, space_key, version_relation
from matengine.query import meta
from matengine.schemas import get_schema

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def _schema_fields(layout) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in layout.schema]


def build_manifest(
    engine: Engine,
    datastack: str,
    dest: Destination,
    *,
    version: int,
    tables: Sequence[str],
    fmt: str,
    neuroglancer: bool = False,
    views: Sequence[str] = (),
    order: str = "root",
) -> dict[str, Any]:
    """The manifest of an export of ``tables`` of ``version`` (read back from ``dest``)."""
    version_row = meta.get_version(engine, datastack, version)
    fs = dest.filesystem()
    entries: dict[str, Any] = {}
    space_order = order == "space"
    for table in tables:
        vt = meta.version_table(engine, datastack, version, table)
        layout = layout_of(get_schema(vt.schema_type))
        space = None
        if space_order:  # the same bounds the plan read: the version is frozen
            with engine.connect() as conn:
                space = space_key(conn, version_relation(datastack, version, table), layout)
        files = _files(fs, dest, table)
        rows = sum(f["rows"] for f in files)
        if rows != vt.row_count:
            raise RuntimeError(f"table {table}: {rows} rows exported, the version holds {vt.row_count}")
        entry: dict[str, Any] = {
            "rows": rows,
            "schema_type": vt.schema_type,
            "voxel_resolution": list(vt.voxel_resolution),
            "sorted_by": sorted_by(layout, space),
            "root_id_columns": layout.root_columns,
            "schema": _schema_fields(layout),
            "files": files,
        }
        if space is not None:
            entry["space_key"] = space.to_json()
        if fmt == "delta":
            entry["delta_table"] = table
        if neuroglancer:
            entry["neuroglancer"] = f"{table}.neuroglancer"
        entries[table] = entry
    view_entries = {name: _view_entry(engine, datastack, version, fmt, dest, name) for name in views}
    out = {
        "format_version": FORMAT_VERSION,
        "datastack": datastack,
        "version": version_row.version,
        "timestamp": version_row.time_stamp.isoformat(),
        "format": fmt,
        "compression": COMPRESSION,
        "row_group_rows": ROW_GROUP_ROWS,
        "tables": entries,
    }
    if view_entries:  # no key for an export without views: earlier manifests stay byte for byte
        out["views"] = view_entries
    if space_order:  # likewise: a root-order manifest is what it was before orders existed
        out["order"] = "space"
    return out


def _files(fs: Any, dest: Destination, folder: str) -> list[dict[str, Any]]:
    files = []
    for path in sorted(fs.glob(dest.path(folder, "part-*.parquet"))):
        facts = file_facts(fs, path)
        files.append({"path": f"{folder}/{path.rsplit('/', 1)[-1]}", **facts})
    return files


def _view_entry(
    engine: Engine, datastack: str, version: int, fmt: str, dest: Destination, name: str
) -> dict[str, Any]:
    from matengine.export.views import view_at, view_entry, view_rows, view_schema

    view = view_at(engine, datastack, version, name)
    files = _files(dest.filesystem(), dest, name)
    rows = sum(f["rows"] for f in files)
    expected = view_rows(engine, view, version)
    if rows != expected:
        raise RuntimeError(f"view {name}: {rows} rows exported, querying it answers {expected}")
    entry: dict[str, Any] = {
        "rows": rows,
        **view_entry(engine, view, version),
        "schema": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable}
            for f in view_schema(engine, view, version)
        ],
        "files": files,
    }
    if fmt == "delta":
        entry["delta_table"] = name
    return entry


def write_manifest(dest: Destination, manifest: dict[str, Any]) -> None:
    body = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    with dest.filesystem().open(dest.path(MANIFEST), "wb") as f:
        f.write(body.encode())
