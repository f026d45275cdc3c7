"""The levels of a table's read and write permissions (``PRIVATE`` / ``GROUP`` / ``PUBLIC``)
and the check of a given value: what :mod:`matengine.catalog` stores and
:mod:`matengine.table_permissions` enforces. A module of its own so that the catalog need not
import ``table_permissions``, which reads tables through the catalog (docs/design.md §13: no
import cycles)."""

from __future__ import annotations

from enum import StrEnum

from matengine.errors import InvalidInput


class TablePermission(StrEnum):
    PRIVATE = "PRIVATE"
    GROUP = "GROUP"
    PUBLIC = "PUBLIC"


def check_table_permission(value: object, field: str) -> TablePermission:
    """``value`` as a permission level (any case); :class:`InvalidInput` naming ``field``."""
    try:
        return TablePermission(str(value).upper())
    except ValueError:
        raise InvalidInput(
            f"{field} must be one of {', '.join(p.value for p in TablePermission)}", field=field
        ) from None
