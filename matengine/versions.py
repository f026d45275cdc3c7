"""Versions of a datastack: listing, pinning, and removal of expired ones under a retention
policy.

Policy: a version is removed when it is past ``expires_on`` (or FAILED), except that the
``keep`` most recent valid versions always stay, the latest valid one is never removed, and a
*pinned* version never expires. ``expires_on`` counts from when the version was built (not
from its T). Removing a version drops its views and deletes from the version store only the
row versions no retained version holds (:func:`matengine.version_store.free_version`); each
removal is logged in ``matengine.version_removals``.
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
    pinned: bool = False

    @property
    def expired(self) -> bool:
        if self.status == "EXPIRED":
            return True
        return not self.pinned and self.expires_on is not None and self.expires_on <= utcnow()

    @property
    def shown_status(self) -> str:
        """The status a reader should see: AVAILABLE past its expiry is EXPIRED already (it
        is no longer answered), even before the removal job has dropped it."""
        return "EXPIRED" if self.expired and self.status == "AVAILABLE" else self.status

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
            bool(getattr(row, "pinned", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("time_stamp", "expires_on", "created", "finished"):
            d[k] = d[k].isoformat() if d[k] else None
        d["rows"] = sum(self.tables.values())
        d["status"] = self.shown_status
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
            if v.version in protected or v.pinned or v.status in ("RUNNING", "EXPIRED"):
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
        remove_version(engine, r)
    return removals


def remove_version(engine: Engine, removal: Removal) -> int:
    """Drop one version's views and the store rows only it held; returns rows freed."""
    from matengine import version_store

    ds, number = removal.datastack, removal.version
    vt = m.version_tables
    with engine.begin() as conn:
        # serialise removals of one datastack: each computes what the others still hold
        conn.execute(text("SELECT pg_advisory_xact_lock(7106, hashtext(:d))"), {"d": ds})
        tables = (
            conn.execute(select(vt.c.table_name).where(vt.c.datastack == ds, vt.c.version == number))
            .scalars()
            .all()
        )
        retained: dict[str, list[int]] = {}
        for t in tables:
            retained[t] = [
                int(n)
                for n in conn.execute(
                    select(vt.c.version)
                    .select_from(
                        vt.join(
                            m.versions,
                            (m.versions.c.datastack == vt.c.datastack)
                            & (m.versions.c.version == vt.c.version),
                        )
                    )
                    .where(
                        vt.c.datastack == ds,
                        vt.c.table_name == t,
                        vt.c.version != number,
                        m.versions.c.status == "AVAILABLE",
                    )
                ).scalars()
            ]
        freed = version_store.free_version(conn, ds, number, retained)
        conn.execute(text(f"DROP SCHEMA IF EXISTS {quote(version_schema(ds, number))} CASCADE"))
        conn.execute(delete(vt).where(vt.c.datastack == ds, vt.c.version == number))
        conn.execute(
            update(m.versions)
            .where(m.versions.c.datastack == ds, m.versions.c.version == number)
            .values(status="EXPIRED", valid=False)
        )
        conn.execute(insert(m.version_removals).values(datastack=ds, version=number, reason=removal.reason))
    return freed


def set_pinned(engine: Engine, datastack: str, version: int, pinned: bool) -> Version:
    """Pin (never expires, never removed) or unpin a version; an expired one cannot be pinned."""
    from matengine.errors import InvalidInput, NotFound

    v = m.versions
    with engine.begin() as conn:
        row = conn.execute(
            select(v).where(v.c.datastack == datastack, v.c.version == int(version)).with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"datastack {datastack!r} has no version {version}")
        if pinned and row.status != "AVAILABLE":
            raise InvalidInput(f"version {version} of {datastack!r} is {row.status}: only AVAILABLE ones pin")
        conn.execute(
            update(v).where(v.c.datastack == datastack, v.c.version == int(version)).values(pinned=pinned)
        )
    return next(x for x in list_versions(engine, datastack) if x.version == int(version))


def export_version(
    engine: Engine, datastack: str, version: int, schema: str | None = None
) -> tuple[str, list[str]]:
    """Version N as plain, indexed tables in a schema of their own (``<ds>__export<N>`` by
    default), for ``pg_dump --schema``; returns the schema and its tables."""
    from matengine import version_store
    from matengine.db.identifiers import validate_name
    from matengine.errors import AlreadyExists
    from matengine.query.meta import get_version

    get_version(engine, datastack, version)  # only a queryable version
    target = validate_name(schema or f"{datastack}__export{int(version)}", "schema name")
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": target}).first():
            raise AlreadyExists(f"schema {target!r} exists already")
        tables = version_store.export_schema(conn, datastack, version, target)
    return target, tables
