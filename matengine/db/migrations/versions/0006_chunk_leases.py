"""chunk leases: worker heartbeats, task leases, one row per chunk spec, the run's queue

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 21:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("workflow_runs", sa.Column("queue", sa.Text(), nullable=True), schema="matengine")
    op.create_table(
        "workers",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started", TS, server_default=sa.func.now(), nullable=False),
        sa.Column("heartbeat", TS, server_default=sa.func.now(), nullable=False),
        schema="matengine",
    )
    op.create_table(
        "task_leases",
        sa.Column("task_id", sa.Text(), primary_key=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("run_id", sa.BigInteger(), nullable=True),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("args", JSONB(), nullable=False),
        sa.Column("received", TS, server_default=sa.func.now(), nullable=False),
        schema="matengine",
    )
    op.create_index("ix_task_leases_worker", "task_leases", ["worker"], schema="matengine")
    op.create_table(
        "run_chunk_specs",
        sa.Column("run_id", sa.BigInteger(), primary_key=True),
        sa.Column("step_index", sa.Integer(), primary_key=True),
        sa.Column("chunk", sa.Integer(), primary_key=True),
        sa.Column("spec", JSONB(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["matengine.workflow_runs.id"], ondelete="CASCADE"),
        schema="matengine",
    )


def downgrade() -> None:
    op.drop_table("run_chunk_specs", schema="matengine")
    op.drop_index("ix_task_leases_worker", table_name="task_leases", schema="matengine")
    op.drop_table("task_leases", schema="matengine")
    op.drop_table("workers", schema="matengine")
    op.drop_column("workflow_runs", "queue", schema="matengine")
