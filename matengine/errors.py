"""Exceptions with messages a user can act on. The API maps them to HTTP status codes."""

from __future__ import annotations


class MatengineError(Exception):
    """Base class of every error matengine raises on purpose."""

    status_code = 400


class NotFound(MatengineError):
    status_code = 404


class AlreadyExists(MatengineError):
    status_code = 409


class Conflict(MatengineError):
    """Another run holds the lock this one needs."""

    status_code = 409


class InvalidName(MatengineError):
    """A datastack, table or column name that cannot be used as an SQL identifier."""


class InvalidInput(MatengineError):
    """Bad rows or files. Names the row and field (or file and column) at fault."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None):
        where = []
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.row = row
        self.field = field


class TooLarge(InvalidInput):
    """A request, or one of its fields, over a configured size limit (HTTP 413)."""

    status_code = 413


class QueryTimeout(MatengineError):
    """A query ran longer than ``MATENGINE_QUERY_TIMEOUT`` and was cancelled (HTTP 503)."""

    status_code = 503
