"""matengine's own bookkeeping tables (schema ``matengine``), as SQLAlchemy Core.

Annotation, segmentation and version tables are made per datastack from schemas
(:mod:`matengine.db.annotation_tables`); these tables describe them. Changes here go with an
alembic migration in ``matengine/db/migrations/versions``.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "matengine"
metadata = MetaData(schema=SCHEMA)

TS = DateTime(timezone=True)

datastacks = Table(
    "datastacks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("aligned_volume", Text, nullable=False),
    Column("segmentation_source", Text, nullable=False),
    Column("voxel_resolution", ARRAY(Float), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("schedule", Text),
    Column("days_to_expire", Integer),
    Column("created", TS, nullable=False, server_default=func.now()),
)

annotation_tables = Table(
    "annotation_tables",
    metadata,
    Column("datastack", Text, ForeignKey("datastacks.name", ondelete="CASCADE"), primary_key=True),
    Column("table_name", Text, primary_key=True),
    Column("schema_type", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("voxel_resolution", ARRAY(Float), nullable=False),
    Column("reference_table", Text),
    Column("owner", Text, nullable=False, server_default="matengine"),
    Column("notice_text", Text),
    Column("created", TS, nullable=False, server_default=func.now()),
    Column("deleted", TS),
    Column("last_modified", TS, nullable=False, server_default=func.now()),
    # every root id in the segmentation table is valid at this time (null: none looked up yet)
    Column("roots_last_updated", TS),
    # set while an update-roots run moves the roots to this time; cleared when it finishes (a
    # run that died half-way leaves rows at either time, and the next run must cover both)
    Column("roots_updating_to", TS),
)

versions = Table(
    "versions",
    metadata,
    Column("datastack", Text, ForeignKey("datastacks.name", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("time_stamp", TS, nullable=False),
    Column("status", Text, nullable=False),  # RUNNING / AVAILABLE / FAILED / EXPIRED
    Column("valid", Boolean, nullable=False, server_default="false"),
    Column("expires_on", TS),
    Column("created", TS, nullable=False, server_default=func.now()),
    Column("finished", TS),
    Column("run_id", BigInteger),
    Column("error", Text),
)

version_tables = Table(
    "version_tables",
    metadata,
    Column("datastack", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("table_name", Text, primary_key=True),
    Column("schema_type", Text, nullable=False),
    Column("row_count", BigInteger, nullable=False),
    Column("voxel_resolution", ARRAY(Float), nullable=False),
    Column("reference_table", Text),
    Column("description", Text, nullable=False, server_default=""),
    ForeignKeyConstraint(
        ["datastack", "version"],
        ["versions.datastack", "versions.version"],
        ondelete="CASCADE",
    ),
)

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("datastack", Text),
    Column("table_name", Text),
    Column("parameters", JSONB, nullable=False, server_default="{}"),
    Column("state", Text, nullable=False),  # PENDING / RUNNING / SUCCESS / FAILED
    Column("chunks_total", Integer, nullable=False, server_default="0"),
    Column("chunks_done", Integer, nullable=False, server_default="0"),
    Column("rows_total", BigInteger, nullable=False, server_default="0"),
    Column("rows_done", BigInteger, nullable=False, server_default="0"),
    Column("errors", JSONB, nullable=False, server_default="[]"),
    Column("result", JSONB, nullable=False, server_default="{}"),
    Column("step", Text),
    Column("created", TS, nullable=False, server_default=func.now()),
    Column("started", TS),
    Column("finished", TS),
    Column("heartbeat", TS),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("run_id", BigInteger, ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step_index", Integer, primary_key=True),
    Column("key", Text, nullable=False),
    Column("state", Text, nullable=False),  # PLANNED / FINISHING / DONE
    Column("chunks_total", Integer, nullable=False),
    Column("plan", JSONB, nullable=False),
    Column("result", JSONB),
    Column("started", TS, nullable=False, server_default=func.now()),
    Column("finished", TS),
)

# A run holds its locks as rows here: they outlive any one worker, and a second run that needs
# the same key is refused (or waits) until the first ends.
run_locks = Table(
    "run_locks",
    metadata,
    Column("lock_key", Text, primary_key=True),
    Column("run_id", BigInteger, ForeignKey("workflow_runs.id", ondelete="CASCADE"), nullable=False),
    Column("acquired", TS, nullable=False, server_default=func.now()),
)

run_chunks = Table(
    "run_chunks",
    metadata,
    Column("run_id", BigInteger, ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step_index", Integer, primary_key=True),
    Column("chunk", Integer, primary_key=True),
    Column("rows", BigInteger, nullable=False, server_default="0"),
    Column("finished", TS, nullable=False, server_default=func.now()),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_sha256", Text, nullable=False, unique=True),
    Column("datastack", Text, nullable=False),  # "*" = every datastack
    Column("permission", Text, nullable=False),  # view / edit / admin
    Column("description", Text, nullable=False, server_default=""),
    Column("created", TS, nullable=False, server_default=func.now()),
    Column("revoked", TS),
    Column("expires", TS),  # refused from then on; null = never
)

version_removals = Table(
    "version_removals",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("datastack", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("removed_at", TS, nullable=False, server_default=func.now()),
    Column("reason", Text, nullable=False),
)
