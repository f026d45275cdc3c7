"""/metrics: Prometheus text format, whole-deployment series from the database, requests
counted by route template; needs a token with view on every datastack."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(family, **labels) -> list:
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_need_a_token_for_every_datastack(served, stacks):
    assert httpx.get(served + "/metrics").status_code == 401
    r = httpx.get(served + "/metrics", headers={"Authorization": f"Bearer {stacks.tokens['view_a']}"})
    assert r.status_code == 403


def test_metrics_report_runs_versions_tables_and_requests(served, stacks):
    headers = {"Authorization": f"Bearer {stacks.tokens['view_all']}"}
    httpx.get(served + "/dashboard/api/state", headers=headers)
    httpx.get(served + f"/admin/api/v1/runs/{stacks.runs['a']}", headers=headers)  # 403: view only
    r = httpx.get(served + "/metrics", headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fam = _families(r.text)
    assert _samples(fam["matengine_database_up"])[0].value == 1
    assert _samples(fam["matengine_runs"], kind="bulk_upload", state="FAILED")[0].value >= 1
    assert _samples(fam["matengine_runs"], kind="ingest", state="FAILED")[0].value >= 1
    assert _samples(fam["matengine_versions"], datastack=stacks.b, status="AVAILABLE")[0].value == 1
    assert _samples(fam["matengine_latest_version"], datastack=stacks.a)[0].value == 1
    assert _samples(fam["matengine_latest_version_rows"], datastack=stacks.b)[0].value == 12345
    durations = fam["matengine_run_duration_seconds"]
    assert durations.type == "histogram"
    inf = _samples(durations, kind="ingest", state="FAILED", le="+Inf")
    assert inf and inf[0].value >= 1
    assert "matengine_run_rows_processed" in fam
    assert "matengine_table_rows_estimate" in fam
    requests = fam["matengine_http_requests"]
    assert _samples(requests, route="/dashboard/api/state", method="GET", status="200")
    # labelled by route template, never by the raw path (no run ids, no datastack names)
    assert _samples(requests, route="/admin/api/v1/runs/{run_id}", status="403")
    assert not [s for s in requests.samples if f"/runs/{stacks.runs['a']}" in s.labels.get("route", "")]
    latency = fam["matengine_http_request_duration_seconds"]
    assert _samples(latency, route="/dashboard/api/state", le="+Inf")[0].value >= 1
    assert "process_resident_memory_bytes" in r.text


def test_metrics_without_auth_on_loopback(served_open, stacks):
    r = httpx.get(served_open + "/metrics")
    assert r.status_code == 200
    assert _samples(_families(r.text)["matengine_versions"], datastack=stacks.a)
