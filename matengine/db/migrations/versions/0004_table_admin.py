"""table admin: users and groups, table permissions and flat segmentation source, datastack
info and live schedule

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:00:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        schema="matengine",
    )
    op.create_table(
        "user_groups",
        sa.Column(
            "user_id",
            sa.BigInteger,
            sa.ForeignKey("matengine.users.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("group_name", sa.Text, primary_key=True),
        schema="matengine",
    )
    op.add_column(
        "tokens",
        sa.Column("user_id", sa.BigInteger, sa.ForeignKey("matengine.users.id", ondelete="CASCADE")),
        schema="matengine",
    )
    for name in ("read_permission", "write_permission"):
        op.add_column(
            "annotation_tables",
            sa.Column(name, sa.Text, nullable=False, server_default="PUBLIC"),
            schema="matengine",
        )
    op.add_column("annotation_tables", sa.Column("flat_segmentation_source", sa.Text), schema="matengine")
    op.add_column(
        "datastacks",
        sa.Column("info", JSONB, nullable=False, server_default="{}"),
        schema="matengine",
    )
    op.add_column("datastacks", sa.Column("live_schedule", sa.Text), schema="matengine")


def downgrade() -> None:
    op.drop_column("datastacks", "live_schedule", schema="matengine")
    op.drop_column("datastacks", "info", schema="matengine")
    for name in ("flat_segmentation_source", "write_permission", "read_permission"):
        op.drop_column("annotation_tables", name, schema="matengine")
    op.drop_column("tokens", "user_id", schema="matengine")
    op.drop_table("user_groups", schema="matengine")
    op.drop_table("users", schema="matengine")
