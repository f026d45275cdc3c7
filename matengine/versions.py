"""Versions of a datastack: listing, and removal of expired ones under a retention policy.

Policy: a version is removed when it is past ``expires_on`` (or FAILED), except that the
``keep`` most recent valid versions always stay, and the latest valid one is never removed.
Each removal drops the version's schema and is logged in ``matengine.version_removals``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, insert, select, text, update

from matengine.config import get_settings
from matengine.db import metadata as m
from matengine.db.identifiers import quote, version_schema
from matengine.timeutil import utcnow


@dataclass(frozen=True)
class Version:
    datastack: str
    version: int
    time_stamp: datetime
    status: str
    valid: bool
    expires_on: datetime | None
    created: datetime
    finished: datetime | None
    tables: dict[str, int]  # table -> rows

    @property
    def expired(self) -> bool:
        return self.status == "EXPIRED" or (self.expires_on is not None and self.expires_on <= utcnow())

    @property
    def queryable(self) -> bool:
        return self.status == "AVAILABLE" and self.valid and not self.expired

    @classmethod
    def from_row(cls, row: Any, tables: dict[str, int] | None = None) -> Version:
        return cls(
            row.datastack,
            int(row.version),
            row.time_stamp,
            row.status,
            bool(row.valid),
            row.expires_on,
            row.created,
            row.finished,
            tables or {},
        )

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("time_stamp", "expires_on", "created", "finished"):
            d[k] = d[k].isoformat() if d[k] else None
        d["rows"] = sum(self.tables.values())
        return d


def list_versions(engine: Engine, datastack: str | None = None) -> list[Version]:
    v, t = m.versions, m.version_tables
    stmt = select(v).order_by(v.c.datastack, v.c.version)
    if datastack:
        stmt = stmt.where(v.c.datastack == datastack)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        tables: dict[tuple[str, int], dict[str, int]] = {}
        for r in conn.execute(select(t.c.datastack, t.c.version, t.c.table_name, t.c.row_count)):
            tables.setdefault((r.datastack, r.version), {})[r.table_name] = r.row_count
    return [Version.from_row(r, tables.get((r.datastack, r.version))) for r in rows]


@dataclass(frozen=True)
class Removal:
    datastack: str
    version: int
    reason: str


def plan_removals(versions: list[Version], now: datetime, keep: int) -> list[Removal]:
    """Which versions the policy removes at ``now`` (pure: the same inputs, the same answer)."""
    out: list[Removal] = []
    by_ds: dict[str, list[Version]] = {}
    for v in versions:
        by_ds.setdefault(v.datastack, []).append(v)
    for ds, vs in by_ds.items():
        valid = sorted((v for v in vs if v.valid and v.status == "AVAILABLE"), key=lambda v: v.version)
        protected = {v.version for v in valid[-max(keep, 1) :]}
        for v in vs:
            if v.version in protected or v.status in ("RUNNING", "EXPIRED"):
                continue
            if v.status == "FAILED":
                out.append(Removal(ds, v.version, "failed run"))
            elif v.expires_on is not None and v.expires_on <= now:
                out.append(Removal(ds, v.version, f"expired on {v.expires_on.isoformat()}"))
    return out


def remove_expired(
    engine: Engine,
    datastack: str | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    keep: int | None = None,
) -> list[Removal]:
    now = now or utcnow()
    keep = get_settings().keep_valid_versions if keep is None else keep
    removals = plan_removals(list_versions(engine, datastack), now, keep)
    if dry_run:
        return removals
    for r in removals:
        with engine.begin() as conn:
            conn.execute(
                text(f"DROP SCHEMA IF EXISTS {quote(version_schema(r.datastack, r.version))} CASCADE")
            )
            conn.execute(
                delete(m.version_tables).where(
                    m.version_tables.c.datastack == r.datastack, m.version_tables.c.version == r.version
                )
            )
            conn.execute(
                update(m.versions)
                .where(
                    m.versions.c.datastack == r.datastack,
                    m.versions.c.version == r.version,
                )
                .values(status="EXPIRED", valid=False)
            )
            conn.execute(
                insert(m.version_removals).values(datastack=r.datastack, version=r.version, reason=r.reason)
            )
    return removals
