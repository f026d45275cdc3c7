"""token expiry

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a token past "expires" is refused like a revoked one; null = never expires
    op.add_column(
        "tokens",
        sa.Column("expires", sa.DateTime(timezone=True), nullable=True),
        schema="matengine",
    )


def downgrade() -> None:
    op.drop_column("tokens", "expires", schema="matengine")
