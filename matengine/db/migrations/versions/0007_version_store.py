"""version store: full-copy versions become views over one shared store table per table

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:00:00

Every AVAILABLE version's full-copy tables (``<ds>__mat<N>.<table>``) are folded, oldest
first, into ``<ds>__store.<table>`` by comparing each with the store's head row by row; each
full copy is then replaced by a view of the same name and columns. Versions still RUNNING
cannot resume under the new layout: they are marked FAILED (run the build again).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "versions",
        sa.Column("pinned", sa.Boolean(), server_default="false", nullable=False),
        schema="matengine",
    )
    op.create_table(
        "version_stores",
        sa.Column("datastack", sa.Text(), nullable=False),
        sa.Column("table_name", sa.Text(), nullable=False),
        sa.Column("head_version", sa.Integer(), nullable=True),
        sa.Column("head_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("head_rows", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("indexed", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("building", sa.Integer(), nullable=True),
        sa.Column("building_closed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("building_written", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(["datastack"], ["matengine.datastacks.name"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("datastack", "table_name"),
        schema="matengine",
    )
    conn = op.get_bind()
    conn.execute(
        text(
            "UPDATE matengine.versions SET status = 'FAILED', valid = false, "
            "error = 'interrupted by the upgrade to the version store; build it again' "
            "WHERE status = 'RUNNING'"
        )
    )
    from matengine.version_store import migrate_full_copies

    migrate_full_copies(conn)


def downgrade() -> None:
    from matengine.version_store import views_to_full_copies

    views_to_full_copies(op.get_bind())
    op.drop_table("version_stores", schema="matengine")
    op.drop_column("versions", "pinned", schema="matengine")
