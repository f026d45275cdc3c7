"""Row counts of the dashboard: exact for small tables, the planner's estimate above a limit,
and the count's statement timeout never leaks into the rest of the connection."""

from __future__ import annotations

from sqlalchemy import text

from matengine import catalog
from matengine.api import dashboard


def test_small_tables_are_counted_exactly_big_ones_estimated(engine, stacks, monkeypatch):
    table = catalog.get_table(engine, stacks.a, stacks.table_a)
    with engine.begin() as conn:
        conn.execute(text(f"ANALYZE {table.names.live_q}"))
    with engine.connect() as conn:
        before = conn.execute(text("SHOW statement_timeout")).scalar_one()
        assert dashboard.RowCounts._count(conn, table.names.live_q) == (7, True)
        assert conn.execute(text("SHOW statement_timeout")).scalar_one() == before
        monkeypatch.setattr(dashboard, "EXACT_COUNT_LIMIT", 5)
        assert dashboard.RowCounts._count(conn, table.names.live_q) == (7, False)


def test_counts_are_reused_for_a_moment(engine, stacks, monkeypatch):
    table = catalog.get_table(engine, stacks.a, stacks.table_a)
    counts, calls = dashboard.RowCounts(), []
    real = dashboard.RowCounts._count
    monkeypatch.setattr(
        dashboard.RowCounts, "_count", staticmethod(lambda conn, q: calls.append(q) or real(conn, q))
    )
    with engine.connect() as conn:
        assert counts.get(conn, table) == counts.get(conn, table) == (7, True)
    assert len(calls) == 1
