"""Per-table read and write permissions, as the field's annotation service defines them.

A table has a ``read_permission`` and a ``write_permission``, each ``PRIVATE`` (its owner
only), ``GROUP`` (its owner and users sharing a group with the owner) or ``PUBLIC`` (anyone
the datastack grant admits). The owner is the user who created the table (recorded at
create). These checks come on top of the token's datastack grant (``view`` to read, ``edit``
to write), never instead of it. Operators are not held by them: a datastack ``admin`` token
and a server with auth switched off (a loopback demo) read and write every table, as the
CLI does.

The field answers a refused table with 401; we answer 403 (the caller is known, the table is
not theirs), the code every other refusal of a known token uses.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Connection, Engine

from matengine.auth import Forbidden, Principal, groups_of
from matengine.catalog import AnnotationTable, get_table
from matengine.permission_levels import TablePermission, check_table_permission

__all__ = ["Access", "TablePermission", "allows", "check_table_permission", "require", "require_owner"]


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


def _level(table: AnnotationTable, access: Access) -> TablePermission:
    raw = table.read_permission if access is Access.READ else table.write_permission
    return TablePermission(raw)


def allows(
    engine_or_conn: Engine | Connection, principal: Principal, table: AnnotationTable, access: Access
) -> bool:
    if principal.auth_disabled or principal.allows(table.datastack, "admin"):
        return True
    if principal.identity == table.owner:
        return True
    level = _level(table, access)
    if level is TablePermission.PUBLIC:
        return True
    if level is TablePermission.GROUP:
        return bool(principal.groups & groups_of(engine_or_conn, table.owner))
    return False


def require(
    engine_or_conn: Engine | Connection,
    principal: Principal,
    datastack: str,
    table_name: str,
    access: Access,
    *,
    cached: bool = False,
) -> AnnotationTable:
    """The table, if ``principal`` may ``access`` its rows; :class:`Forbidden` otherwise.

    ``cached``: the table's row (owner, permissions) through :mod:`matengine.metadata_cache`,
    as the API's read routes check it (with an engine)."""
    if cached and isinstance(engine_or_conn, Engine):
        from matengine import metadata_cache

        engine = engine_or_conn
        table = metadata_cache.cached(
            engine, ("table", datastack, table_name), lambda: get_table(engine, datastack, table_name)
        )
    else:
        table = get_table(engine_or_conn, datastack, table_name)
    if not allows(engine_or_conn, principal, table, access):
        level = _level(table, access)
        who = "its owner" if level is TablePermission.PRIVATE else "its owner's groups"
        raise Forbidden(
            f"table {table_name!r} can be {'read' if access is Access.READ else 'written'} by {who} only"
        )
    return table


def require_owner(
    engine_or_conn: Engine | Connection, principal: Principal, datastack: str, table_name: str
) -> AnnotationTable:
    """Deleting a table or changing its metadata: its owner (or an operator) only, as the field."""
    table = get_table(engine_or_conn, datastack, table_name)
    if principal.auth_disabled or principal.allows(datastack, "admin") or principal.identity == table.owner:
        return table
    raise Forbidden(f"only the owner of table {table_name!r} can change or delete it")
