"""Every error matengine raises on purpose, in one tree (docs/design.md §11).

``MatengineError`` has two branches:

* :class:`PermanentError` — retrying cannot help (bad input, unknown names, conflicts);
* :class:`TransientError` — the same call may succeed later (a database, bucket or server
  that is down, slow or overloaded). Celery tasks retry these, and only these.

Exceptions of other libraries are translated where they enter matengine — the IO edge — by the
context managers at the end of this module, in the manner of httpx's ``map_exceptions``: bucket
reads (:func:`bucket_errors`), and database and HTTP calls made by workflow tasks
(:func:`io_errors`). The API maps the tree to HTTP status codes (``status_code``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

_log = logging.getLogger("matengine.io")


class MatengineError(Exception):
    """Base class of every error matengine raises on purpose."""

    status_code = 400


class PermanentError(MatengineError):
    """Retrying cannot help: the input, the names or the state must change first."""


class TransientError(MatengineError):
    """The same call may succeed later; workflow tasks retry it with backoff."""

    status_code = 503


# ---------------------------------------------------------------------------- permanent


class NotFound(PermanentError):
    status_code = 404


class AlreadyExists(PermanentError):
    status_code = 409


class Conflict(PermanentError):
    """Another run holds the lock this one needs."""

    status_code = 409


class InvalidName(PermanentError):
    """A datastack, table or column name that cannot be used as an SQL identifier."""


class InvalidInput(PermanentError):
    """Bad rows or files. Names the row and field (or file and column) at fault."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None):
        where = []
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.detail = message
        self.row = row
        self.field = field


class Unauthorized(PermanentError):
    """No token, or a token we do not know (HTTP 401)."""

    status_code = 401


class Forbidden(PermanentError):
    """A known token without the permission the request needs (HTTP 403)."""

    status_code = 403


class TooLarge(InvalidInput):
    """A request, or one of its fields, over a configured size limit (HTTP 413)."""

    status_code = 413


class Gone(PermanentError):
    """A version that existed but has expired or been removed (HTTP 410)."""

    status_code = 410


class MissingLookups(InvalidInput):
    """A live query at T needs roots the table has not looked up yet (HTTP 406)."""

    status_code = 406


class NotImplementedYet(PermanentError):
    status_code = 501


# ---------------------------------------------------------------------------- transient


class QueryTimeout(TransientError):
    """A query ran longer than ``MATENGINE_QUERY_TIMEOUT`` and was cancelled (HTTP 503)."""


class NoWorkerOnline(TransientError):
    """A broker is configured but no Celery worker answers (the run stays queued)."""


class DatabaseUnavailable(TransientError):
    """PostgreSQL could not be reached, or dropped the connection mid-transaction."""


class BucketUnavailable(TransientError):
    """A bucket or file server timed out, refused the connection or answered 5xx / 429."""


# ---------------------------------------------------------------------------- segmentation


class SegmentationError(MatengineError):
    """Base class of every error raised by ``matengine.segmentation`` (the API answers 502:
    the segmentation source failed us, not the caller)."""

    status_code = 502


class SegmentationSourceError(SegmentationError, PermanentError):
    """The segmentation URL is malformed, unsupported, or its data cannot be opened."""


class GraphFormatError(SegmentationSourceError):
    """A ``local://`` edit-log graph directory is missing a file or is inconsistent."""


class GrapheneRequestError(SegmentationError):
    """A request to a PyChunkedGraph server failed; ``http_status`` is its answer (if any).
    Raised as one of its two kinds below."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class GrapheneRefused(GrapheneRequestError, PermanentError):
    """A PyChunkedGraph server refused a request (4xx)."""


class GrapheneUnavailable(GrapheneRequestError, TransientError):
    """A PyChunkedGraph server was unreachable, timed out or answered 5xx / 429 (after the
    client's own retries)."""

    status_code = 502


# ---------------------------------------------------------------------------- translation

ExceptionMapper = Callable[[BaseException], "MatengineError | None"]


@contextmanager
def map_exceptions(*mappers: ExceptionMapper) -> Iterator[None]:
    """Translate a foreign exception raised in the block: the first mapper that returns an
    error wins, and it is raised ``from`` the original. Our own errors pass through, and so
    does anything no mapper knows (a bug must stay visible as itself)."""
    try:
        yield
    except MatengineError:
        raise
    except Exception as exc:
        for mapper in mappers:
            mapped = mapper(exc)
            if mapped is not None:
                raise mapped from exc
        raise


_RETRYABLE_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_RETRYABLE_S3_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}
)


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    for attr in ("status_code", "status"):
        code = getattr(response, attr, None)
        if isinstance(code, int):
            return code
    if isinstance(response, dict):  # botocore's ClientError.response
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code if isinstance(code, int) else None
    code = getattr(exc, "code", None)  # google.api_core errors carry the HTTP code
    return code if isinstance(code, int) else None


def is_transient_io(exc: BaseException) -> bool:
    """True for a fault of the network or of an overloaded server: connections refused or
    reset, timeouts, HTTP 5xx / 408 / 429, S3 throttling — from the standard library,
    requests / urllib3 (http(s):// sources), botocore (s3://), google-api-core (gs://), httpx."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    module = type(exc).__module__.split(".")[0]
    if module == "botocore":
        if name == "ClientError" and getattr(exc, "response", {}).get("Error", {}).get("Code") in (
            _RETRYABLE_S3_CODES
        ):
            return True
        # EndpointConnectionError, ReadTimeoutError, ConnectionClosedError … (not credentials)
        if any(word in name for word in ("Connection", "Timeout", "Endpoint")):
            return True
    if module in ("requests", "urllib3", "httpx", "httpcore") and any(
        word in name for word in ("Connection", "Timeout", "Protocol", "ChunkedEncoding", "Transport")
    ):
        return True
    if module == "google" and name in ("TransportError", "RetryError"):
        return True
    status = _http_status(exc)
    return status is not None and status in _RETRYABLE_HTTP


@contextmanager
def bucket_errors(what: str, *, field: str | None = None) -> Iterator[None]:
    """Around a read from a bucket or file server: a transient fault becomes
    :class:`BucketUnavailable` (the task retries), anything else :class:`InvalidInput`
    saying ``what`` failed (the upload is refused). Neither quotes the store's answer (bytes
    from the network); the original goes to the log, for the operator."""

    def transient(exc: BaseException) -> MatengineError | None:
        if not is_transient_io(exc):
            return None
        _log.info("%s (transient): %r", what, exc)
        return BucketUnavailable(f"{what}: the store did not answer (temporary; retried)")

    def permanent(exc: BaseException) -> MatengineError | None:
        _log.info("%s: %r", what, exc)
        return InvalidInput(what, field=field)

    with map_exceptions(transient, permanent):
        yield


def _database_error(exc: BaseException) -> MatengineError | None:
    import psycopg
    import sqlalchemy.exc

    lost = (
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.PendingRollbackError,  # a connection lost mid-transaction
        sqlalchemy.exc.DisconnectionError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
    )
    return DatabaseUnavailable(f"database: {type(exc).__name__}: {exc}") if isinstance(exc, lost) else None


def _network_error(exc: BaseException) -> MatengineError | None:
    if is_transient_io(exc):
        return BucketUnavailable(f"{type(exc).__name__}: {exc}")
    return None


@contextmanager
def io_errors() -> Iterator[None]:
    """Around a workflow task: a lost database connection becomes
    :class:`DatabaseUnavailable`, a network fault :class:`BucketUnavailable`; both are
    transient, so the task retries."""
    with map_exceptions(_database_error, _network_error):
        yield


F = TypeVar("F", bound=Callable[..., Any])


def translated(fn: F) -> F:
    """Decorator form of :func:`io_errors` (for Celery task functions)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with io_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
