"""views: admin-defined queries over a datastack's tables

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 21:45:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "views",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("datastack", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("dropped", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["datastack"], ["matengine.datastacks.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        schema="matengine",
    )


def downgrade() -> None:
    op.drop_table("views", schema="matengine")
