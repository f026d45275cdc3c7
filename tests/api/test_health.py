"""Health probes: live, ready (database, broker, workers) and per-service readiness, with no
token, naming the part that is down and nothing sensitive."""

from __future__ import annotations

import uuid

import httpx
import pytest

from matengine.api.app import create_app
from matengine.config import Settings
from matengine.segmentation.serving import ThreadedServer
from matengine.workflows import leases

REDIS = "redis://127.0.0.1:6379/9"
CLOSED = "redis://127.0.0.1:9/0"  # the discard port: nothing listens on it here


@pytest.fixture
def serve(engine, database_url):
    servers = []

    def start(**settings) -> str:
        app = create_app(Settings(database_url=database_url, **settings), engine=engine)
        srv = ThreadedServer(app).start()
        servers.append(srv)
        return srv.url

    yield start
    for srv in servers:
        srv.stop()


def test_live_answers_without_a_token(serve):
    r = httpx.get(serve() + "/health/live")
    assert (r.status_code, r.json()) == (200, {"status": "live"})


def test_ready_in_process_deployment(serve):
    r = httpx.get(serve() + "/health/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["components"] == {
        "database": {"status": "up"},
        "broker": {"status": "up", "reason": "none configured: workflows run in-process"},
        "workers": {"status": "up", "reason": "in-process"},
    }
    assert set(body["services"].values()) == {"up"}


def test_no_live_worker_is_503_naming_the_workers_and_only_workflows_are_down(serve):
    url = serve(broker_url=REDIS, queue=f"health_{uuid.uuid4().hex[:8]}")
    r = httpx.get(url + "/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert (body["error"], body["message"]) == ("NotReady", "matengine not ready: workers down")
    assert body["components"]["workers"] == {"status": "down", "reason": "no live worker on the queue"}
    assert body["components"]["broker"] == {"status": "up"}
    assert body["services"]["workflows"] == "down" and body["services"]["materialize"] == "up"
    assert httpx.get(url + "/health/ready/materialize").status_code == 200
    assert httpx.get(url + "/health/ready/workflows").json()["message"] == "workflows not ready: workers down"


def test_a_heartbeating_worker_makes_the_deployment_ready(serve, engine):
    queue = f"health_{uuid.uuid4().hex[:8]}"
    leases.register(engine, f"{queue}.1@test", queue=queue)
    r = httpx.get(serve(broker_url=REDIS, queue=queue) + "/health/ready")
    assert r.status_code == 200, r.text
    assert r.json()["components"]["workers"] == {"status": "up", "reason": "1 live"}


def test_unreachable_broker_is_named_without_its_url(serve):
    r = httpx.get(serve(broker_url=CLOSED, queue=f"health_{uuid.uuid4().hex[:8]}") + "/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["components"]["broker"] == {"status": "down", "reason": "unreachable"}
    assert body["message"] == "matengine not ready: broker, workers down"
    assert "127.0.0.1" not in r.text and "redis" not in r.text


def test_unreachable_database_is_named_without_its_url(engine):
    from sqlalchemy import create_engine

    url = "postgresql://nobody@127.0.0.1:9/nowhere"
    broken = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/nowhere")
    with ThreadedServer(create_app(Settings(database_url=url), engine=broken)) as srv:
        r = httpx.get(srv.url + "/health/ready")
        assert r.status_code == 503
        assert r.json()["components"]["database"] == {"status": "down", "reason": "unreachable"}
        assert r.json()["services"]["materialize"] == "down"
        assert "nobody" not in r.text and "nowhere" not in r.text
        m = httpx.get(srv.url + "/health/ready/materialize")
        assert (m.status_code, m.json()["message"]) == (503, "materialize not ready: database down")
        assert httpx.get(srv.url + "/health/live").status_code == 200


def test_unknown_service_is_404_in_the_error_shape(serve):
    r = httpx.get(serve() + "/health/ready/nope")
    assert r.status_code == 404
    assert r.json()["error"] == "NotFound" and "nope" not in r.json()["message"]
