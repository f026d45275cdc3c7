"""``/metrics`` in the Prometheus text format.

Two kinds of series:

* read from PostgreSQL at scrape time, so every API process reports the same, whole-deployment
  numbers (workflow runs by kind and state, rows processed, run durations, progress of active
  runs, versions by status, the latest version and the age of each table's roots);
* counted in this process by an ASGI middleware: HTTP requests by method, route template and
  status, and their latency (so query counts and latency, per route).

With auth on, the route needs a token with ``view`` on every datastack (``"*"``): the series
are labelled with datastack and table names. Prometheus sends it as
``authorization: {credentials: …}`` in its scrape config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matengine.auth import require_permission
from matengine.config import get_settings
from matengine.db import bookkeeping
from matengine.workflows.leases import stalls

log = logging.getLogger("matengine.api.metrics")

RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
REQUEST_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class DatabaseCollector:
    """Series computed from matengine's metadata tables at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("matengine_database_up", "1 if the metadata database answered")
        try:
            families = self._collect()
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("metrics: database not readable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _collect(self) -> list[Metric]:
        out: list[Metric] = []
        with self.engine.connect() as conn:
            runs = GaugeMetricFamily(
                "matengine_runs", "Workflow runs by kind and state", labels=["kind", "state"]
            )
            for kind, state, n in bookkeeping.runs_by_kind_and_state(conn):
                runs.add_metric([kind, state], n)
            out.append(runs)

            # rows: final counts of ended runs + chunk markers of active ones
            rows = CounterMetricFamily(
                "matengine_run_rows_processed", "Rows processed by workflow runs", labels=["kind"]
            )
            for kind, n in bookkeeping.rows_processed_by_kind(conn):
                rows.add_metric([kind], float(n or 0))
            out.append(rows)

            durations = HistogramMetricFamily(
                "matengine_run_duration_seconds", "Duration of ended workflow runs", labels=["kind", "state"]
            )
            for kind, state, n, total, *counts in bookkeeping.run_durations(conn, RUN_DURATION_BUCKETS):
                buckets = [(str(b), c) for b, c in zip(RUN_DURATION_BUCKETS, counts, strict=True)]
                buckets.append(("+Inf", n))
                durations.add_metric([kind, state], buckets, float(total or 0))
            out.append(durations)

            labels = ["run_id", "kind", "datastack"]
            progress = GaugeMetricFamily(
                "matengine_run_progress_ratio", "Chunks done / chunks planned of active runs", labels=labels
            )
            active_rows = GaugeMetricFamily(
                "matengine_run_active_rows_done", "Rows done so far by active runs", labels=labels
            )
            for run_id, kind, ds, total, done, n in bookkeeping.active_run_progress(conn):
                key = [str(run_id), kind, ds]
                progress.add_metric(key, done / total if total else 0.0)
                active_rows.add_metric(key, float(n))
            out += [progress, active_rows]

            stalled = GaugeMetricFamily(
                "matengine_run_stalled",
                "1 for an active run that no live worker can move on (reason: no_worker, runner_gone)",
                labels=[*labels, "reason"],
            )
            active = bookkeeping.active_runs(conn)
            for run_id, stall in sorted(stalls(conn, active).items()):
                kind, ds = active[run_id]
                stalled.add_metric([str(run_id), kind, ds, stall.code], 1)
            workers = GaugeMetricFamily(
                "matengine_workers_live", "Workers that sent a heartbeat recently, by queue", labels=["queue"]
            )
            for queue, n in bookkeeping.live_workers_by_queue(conn, get_settings().worker_dead_after):
                workers.add_metric([queue], n)
            out += [stalled, workers]

            versions = GaugeMetricFamily(
                "matengine_versions", "Versions by datastack and status", labels=["datastack", "status"]
            )
            for ds, status, n in bookkeeping.versions_by_status(conn):
                versions.add_metric([ds, status], n)
            out.append(versions)

            latest = GaugeMetricFamily(
                "matengine_latest_version", "Number of the newest valid version", labels=["datastack"]
            )
            latest_ts = GaugeMetricFamily(
                "matengine_latest_version_timestamp_seconds",
                "Timestamp (Unix) the newest valid version freezes",
                labels=["datastack"],
            )
            latest_rows = GaugeMetricFamily(
                "matengine_latest_version_rows", "Rows in the newest valid version", labels=["datastack"]
            )
            for ds, version, ts, n in bookkeeping.latest_valid_versions(conn):
                latest.add_metric([ds], version)
                latest_ts.add_metric([ds], float(ts))
                latest_rows.add_metric([ds], float(n))
            out += [latest, latest_ts, latest_rows]

            roots = GaugeMetricFamily(
                "matengine_table_roots_updated_timestamp_seconds",
                "Time (Unix) at which all of a table's root ids are valid; alert on time() - this",
                labels=["datastack", "table"],
            )
            est = GaugeMetricFamily(
                "matengine_table_rows_estimate",
                "Planner's estimate of a live table's rows (pg_class.reltuples)",
                labels=["datastack", "table"],
            )
            for ds, table, ts, n in bookkeeping.table_root_times_and_sizes(conn):
                if ts is not None:
                    roots.add_metric([ds, table], float(ts))
                if n is not None and n >= 0:
                    est.add_metric([ds, table], float(n))
            out += [roots, est]
        return out


class RequestMetrics:
    """ASGI middleware: count requests and time them until the last body byte is sent
    (streamed query results included), labelled by route template, never by raw path."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.requests.labels(method, path, str(status["code"])).inc()
            self.latency.labels(method, path).observe(time.perf_counter() - t0)


def make_registry(engine: Engine) -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    requests = Counter(
        "matengine_http_requests",
        "HTTP requests by method, route and status",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "matengine_http_request_duration_seconds",
        "HTTP request duration, to the last byte sent",
        ["method", "route"],
        buckets=REQUEST_BUCKETS,
        registry=registry,
    )
    registry.register(DatabaseCollector(engine))
    ProcessCollector(registry=registry)
    return registry, requests, latency


def make_router(app: FastAPI) -> APIRouter:
    """The ``/metrics`` route; installs the request-counting middleware on ``app``."""
    registry, requests, latency = make_registry(app.state.engine)
    app.state.metrics_registry = registry
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)
    router = APIRouter(tags=["operations"])

    @router.get(
        "/metrics",
        dependencies=[Depends(require_permission("view"))],
        summary="Prometheus metrics (needs a token with view on every datastack)",
    )
    def metrics(request: Request) -> Response:
        body: Any = generate_latest(request.app.state.metrics_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
