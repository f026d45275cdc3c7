"""Counts shown by the CLI, API and dashboard."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, text

from matengine.catalog import AnnotationTable


def table_row_counts(engine: Engine, tables: Sequence[AnnotationTable]) -> dict[str, int]:
    """Live (not deleted) rows per table."""
    out = {}
    with engine.connect() as conn:
        for t in tables:
            out[t.table_name] = conn.execute(
                text(f"SELECT count(*) FROM {t.names.live_q} WHERE deleted IS NULL")
            ).scalar_one()
    return out
