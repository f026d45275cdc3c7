"""One error tree: permanent and transient branches, foreign exceptions translated at the IO
edge, and Celery retrying the transient branch and nothing else."""

from __future__ import annotations

import botocore.exceptions
import google.api_core.exceptions
import httpx
import psycopg
import pytest
import requests
import sqlalchemy.exc

from matengine import errors
from matengine.errors import (
    BucketUnavailable,
    DatabaseUnavailable,
    GrapheneRequestError,
    GrapheneUnavailable,
    InvalidInput,
    MatengineError,
    PermanentError,
    TransientError,
    bucket_errors,
    io_errors,
)


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


def _s3_error(code: str, status: int) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "GetObject",
    )


def test_every_error_is_permanent_or_transient():
    leaves = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, MatengineError) and c not in (MatengineError,)
    ]
    for cls in leaves:
        if cls in (PermanentError, TransientError, errors.SegmentationError, GrapheneRequestError):
            continue
        assert issubclass(cls, PermanentError) != issubclass(cls, TransientError), cls


def test_the_old_segmentation_module_names_the_same_classes():
    from matengine.segmentation import errors as seg

    assert seg.SegmentationError is errors.SegmentationError
    assert issubclass(seg.GrapheneUnavailable, seg.GrapheneRequestError)


TRANSIENT = [
    _http_error(503),
    _http_error(429),
    requests.ConnectionError("connection refused"),
    requests.Timeout("read timed out"),
    _s3_error("SlowDown", 503),
    _s3_error("InternalError", 500),
    botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.example"),
    google.api_core.exceptions.ServiceUnavailable("backend error"),
    google.api_core.exceptions.TooManyRequests("rate limited"),
    httpx.ConnectTimeout("timed out"),
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
]
PERMANENT = [
    _http_error(403),
    _http_error(416),
    _s3_error("AccessDenied", 403),
    botocore.exceptions.NoCredentialsError(),
    google.api_core.exceptions.Forbidden("no access"),
    FileNotFoundError("no such file"),
    ValueError("bad header"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_a_transient_bucket_fault_is_retried_not_refused(exc):
    with pytest.raises(BucketUnavailable, match="cannot read a.npy") as info:
        with bucket_errors("cannot read a.npy", field="a"):
            raise exc
    assert isinstance(info.value, TransientError) and info.value.__cause__ is exc


@pytest.mark.parametrize("exc", PERMANENT, ids=lambda e: type(e).__name__)
def test_a_permanent_bucket_fault_refuses_the_input_naming_the_file(exc):
    with pytest.raises(InvalidInput) as info:
        with bucket_errors("cannot read a.npy", field="a"):
            raise exc
    assert str(info.value) == "field 'a': cannot read a.npy"  # the store's answer is not quoted


def test_our_own_errors_pass_the_edge_unchanged():
    with pytest.raises(InvalidInput, match="^mine$"):
        with bucket_errors("x"):
            raise InvalidInput("mine")


@pytest.mark.parametrize(
    "exc",
    [
        sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed")),
        sqlalchemy.exc.PendingRollbackError("connection lost"),
        psycopg.OperationalError("server closed the connection"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_lost_database_connection_is_transient(exc):
    with pytest.raises(DatabaseUnavailable):
        with io_errors():
            raise exc


def test_a_bug_stays_visible_as_itself():
    with pytest.raises(KeyError):
        with io_errors():
            raise KeyError("x")
    with pytest.raises(sqlalchemy.exc.ProgrammingError):
        with io_errors():
            raise sqlalchemy.exc.ProgrammingError("SELECT nope", {}, Exception("syntax"))


def test_graphene_4xx_is_permanent_and_5xx_transient():
    assert issubclass(errors.GrapheneRefused, PermanentError)
    assert issubclass(GrapheneUnavailable, TransientError)
    assert errors.GrapheneRefused("x", 403).http_status == 403


def test_celery_retries_the_transient_branch_alone(monkeypatch):
    from matengine.config import configure, get_settings
    from matengine.workflows.celery_app import RunTask, finish_step, run_chunk, start_step

    assert RunTask.autoretry_for == (TransientError,)
    assert [t.autoretry_for for t in (start_step, run_chunk, finish_step)] == [(TransientError,)] * 3
    # a task whose database is down (a socket directory that does not exist: no network)
    # fails at its edge with a transient error, which Celery's autoretry acts on
    monkeypatch.setattr("matengine.config._overrides", {})
    configure(database_url="postgresql://postgres@/x?host=/nonexistent-matengine-socket-dir")
    try:
        with pytest.raises(DatabaseUnavailable, match="database: OperationalError"):
            start_step.run(1, 0)
    finally:
        get_settings.cache_clear()
