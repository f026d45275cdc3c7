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
    Index,
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
    # what Neuroglancer and caveclient's info client read (image_source, viewer_site, …)
    Column("info", JSONB, nullable=False, server_default="{}"),
    # crontab of the periodic ingest + update-roots that keeps the live tables current
    Column("live_schedule", Text),
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
    # the field's table permissions: PRIVATE (owner), GROUP (owner's groups), PUBLIC
    Column("read_permission", Text, nullable=False, server_default="PUBLIC"),
    Column("write_permission", Text, nullable=False, server_default="PUBLIC"),
    Column("flat_segmentation_source", Text),
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
    # a pinned version never expires and is never removed by the retention policy
    Column("pinned", Boolean, nullable=False, server_default="false"),
)

# One row per annotation table in the version store (matengine/version_store.py): the
# newest published version of the table (its head), that version's T and row count.
version_stores = Table(
    "version_stores",
    metadata,
    Column("datastack", Text, ForeignKey("datastacks.name", ondelete="CASCADE"), primary_key=True),
    Column("table_name", Text, primary_key=True),
    Column("head_version", Integer),
    Column("head_time", TS),
    Column("head_rows", BigInteger, nullable=False, server_default="0"),
    Column("indexed", Boolean, nullable=False, server_default="false"),
    # the unpublished build writing into the store (null: none), and what it has closed and
    # written so far (its chunks add to these in their own transactions)
    Column("building", Integer),
    Column("building_closed", BigInteger, nullable=False, server_default="0"),
    Column("building_written", BigInteger, nullable=False, server_default="0"),
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
    # the Celery queue whose workers run it; NULL: an in-process runner (see ``workers.run_id``)
    Column("queue", Text),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("run_id", BigInteger, ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step_index", Integer, primary_key=True),
    Column("key", Text, nullable=False),
    Column("state", Text, nullable=False),  # PLANNED / FINISHING / DONE
    Column("chunks_total", Integer, nullable=False),
    # the whole plan of runs planned before migration 0006; since then ``[]``, with one row per
    # chunk spec in ``run_chunk_specs``
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

# One row per planned chunk: a chunk task reads only its own spec, never the whole plan (an
# update-roots plan holds every expired root id).
run_chunk_specs = Table(
    "run_chunk_specs",
    metadata,
    Column("run_id", BigInteger, ForeignKey("workflow_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("step_index", Integer, primary_key=True),
    Column("chunk", Integer, primary_key=True),
    Column("spec", JSONB, nullable=False),
)

# Processes that run workflow tasks, each heartbeating its row (see matengine/workflows/leases.py):
# a Celery worker (``queue`` set) or an in-process runner of one run (``run_id`` set).
workers = Table(
    "workers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("queue", Text),
    Column("run_id", BigInteger),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", TS, nullable=False, server_default=func.now()),
    Column("heartbeat", TS, nullable=False, server_default=func.now()),
)

# A task message a worker has received and not yet finished. When the worker stops
# heartbeating, a reaper sends the task again (chunks are idempotent, a double is harmless).
task_leases = Table(
    "task_leases",
    metadata,
    Column("task_id", Text, primary_key=True),
    Column("attempt", Integer, nullable=False),  # Celery's retry count: a retry is a new lease
    Column("worker", Text, nullable=False),
    Column("queue", Text, nullable=False),
    Column("run_id", BigInteger),
    Column("task", Text, nullable=False),
    Column("args", JSONB, nullable=False),
    Column("received", TS, nullable=False, server_default=func.now()),
    Index("ix_task_leases_worker", "worker"),
)

users = Table(
    "users",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created", TS, nullable=False, server_default=func.now()),
)

user_groups = Table(
    "user_groups",
    metadata,
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_name", Text, primary_key=True),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # the user the token speaks for (null: an operator token without a user)
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE")),
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

# Views: admin-defined queries over a datastack's tables. A definition is never changed in
# place: redefining drops the old row and adds a new one, so version N answers with the
# definition in force when it was made (``created <= version.created < dropped``).
views = Table(
    "views",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("datastack", Text, ForeignKey("datastacks.name", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created", TS, nullable=False, server_default=func.now()),
    Column("dropped", TS),
)
