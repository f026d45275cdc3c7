"""The dashboard in a real browser (Debian's headless Chromium, driven by playwright).

The real app is served on 127.0.0.1 with auth on; the browser logs in with a view token, a
bulk upload of 200k synapses in 2,000-row chunks is started over the admin REST route, the
page's progress bar is seen to move without a reload, then a ``complete`` run is started and
version 1 is seen to appear. Screenshots go to ``test-artifacts/`` at the repository root.

Chromium is looked up at ``/usr/bin/chromium`` (or ``$MATENGINE_CHROMIUM``); if it is missing
the test fails and says how to install it, unless ``MATENGINE_SKIP_BROWSER=1``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from matengine import auth, catalog
from matengine.synth.generate import generate_dataset

CHROMIUM = os.environ.get("MATENGINE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SYNAPSES = 200_000
CHUNK_ROWS = 2_000


def _browser_or_fail():
    if os.environ.get("MATENGINE_SKIP_BROWSER") == "1":
        pytest.skip("MATENGINE_SKIP_BROWSER=1")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it with "
            "'apt-get update && apt-get install -y chromium' (or point MATENGINE_CHROMIUM "
            "at one), or set MATENGINE_SKIP_BROWSER=1 to skip this test",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the playwright package is missing: pip install -e '.[test]' "
            "(never 'playwright install': the test uses Debian's Chromium)",
            pytrace=False,
        )
    return sync_playwright


@pytest.fixture(scope="module")
def big_synth(tmp_path_factory):
    return generate_dataset(
        tmp_path_factory.mktemp("dash_synth"),
        synapses=SYNAPSES,
        cells=500,
        supervoxels=20_000,
        edits=200,
        seed=5,
    )


@pytest.fixture
def live_server(engine, big_synth):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    name = f"dash_{uuid.uuid4().hex[:8]}"
    catalog.add_datastack(
        engine,
        name,
        segmentation_source=big_synth.graph_url,
        voxel_resolution=big_synth.annotation_resolution,
        description="synthetic dataset for the browser test",
    )
    tokens = {p: auth.create_token(engine, name, p, f"browser test {p}")[1] for p in ("view", "admin")}
    with ThreadedServer(create_app(get_settings(), engine=engine)) as srv:
        yield srv.url, name, tokens
    catalog.drop_datastack(engine, name)


def _progress(page, run_id: int) -> int | None:
    bar = page.query_selector(f'[data-testid="progress-{run_id}"]')
    return None if bar is None else int(bar.get_attribute("aria-valuenow"))


def _state(page, run_id: int) -> str | None:
    badge = page.query_selector(f'tr[data-run-id="{run_id}"] .badge')
    return None if badge is None else badge.inner_text()


def _version_state(page, name: str, version: int) -> str | None:
    badge = page.query_selector(f'tr[data-version="{name}:{version}"] .badge')
    return None if badge is None else badge.inner_text()


def _until(page, check, timeout: float, what: str):
    """Poll the page from here (the page's CSP forbids the eval behind wait_for_function)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(150)


def test_dashboard_shows_live_progress_and_the_new_version(live_server, big_synth):
    sync_playwright = _browser_or_fail()
    url, name, tokens = live_server
    ARTIFACTS.mkdir(exist_ok=True)
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['admin']}"}, timeout=30)
    t_start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            console_errors: list[str] = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: console_errors.append(str(e)))

            # no token: the login form, nothing of the datastack
            page.goto(url + "/")
            assert page.is_visible("#login-form")
            assert name not in page.content()
            page.fill("#token", tokens["view"])
            page.click("#login-form button[type=submit]")
            page.wait_for_selector(f'article[data-datastack="{name}"]')
            cookie = {c["name"]: c for c in page.context.cookies()}["middle_auth_token"]
            assert cookie["value"] == tokens["view"] and cookie["httpOnly"]
            assert page.inner_text("#versions").strip() == "No versions yet."

            # a long bulk upload, started over REST: the page follows it without reloading
            folder = big_synth.directory / "synapses"
            body = {
                "table": "synapses",
                "schema": "synapse",
                "source": folder.as_uri(),
                "column_mapping": json.loads((folder / "column_mapping.json").read_text()),
                "roots_timestamp": big_synth.initial_timestamp.isoformat(),
                "created": big_synth.start.isoformat(),
                "chunk_rows": CHUNK_ROWS,
            }
            r = admin.post(f"/admin/api/v1/datastack/{name}/bulk_upload", json=body)
            assert r.status_code == 202, r.text
            upload = r.json()["run_id"]
            page.evaluate(
                "window.__navigations = performance.getEntriesByType('navigation').length;"
                "window.__marker = 'same page'"
            )
            _until(page, lambda: (_progress(page, upload) or 0) > 0, 20, "the upload's progress")
            seen, etas = {_progress(page, upload)}, set()
            deadline = time.monotonic() + 20
            while len(seen) < 3 and time.monotonic() < deadline:
                page.wait_for_timeout(400)
                row = page.inner_text(f'tr[data-run-id="{upload}"]')  # one consistent render
                if "RUNNING" not in row:
                    break
                seen.add(_progress(page, upload))
                etas.add(page.inner_text(f'tr[data-run-id="{upload}"] td:nth-child(10)'))
            total = int(page.get_attribute(f'[data-testid="progress-{upload}"]', "aria-valuemax"))
            assert total == SYNAPSES // CHUNK_ROWS
            assert len(seen) >= 3 and max(seen) < total, (
                f"progress seen {sorted(seen)} of {total}: did the page update while running?"
            )
            assert page.evaluate("window.__marker") == "same page"  # polled, never reloaded
            page.screenshot(path=str(ARTIFACTS / "dashboard-running.png"), full_page=True)
            assert etas - {"–"}, f"no ETA shown while running: {etas}"

            _until(page, lambda: _state(page, upload) == "SUCCESS", 40, "the upload to succeed")
            assert _progress(page, upload) == total
            assert page.inner_text(f'[data-testid="rows-{upload}"]') == f"{SYNAPSES:,}"

            # ingest + update roots + materialize: version 1 appears
            r = admin.post(
                f"/admin/api/v1/datastack/{name}/complete",
                json={"timestamp": big_synth.end.isoformat(), "chunk_rows": 50_000},
            )
            assert r.status_code == 202, r.text
            complete = r.json()["run_id"]
            page.wait_for_selector(f'tr[data-version="{name}:1"]', timeout=40_000)
            _until(
                page,
                lambda: _version_state(page, name, 1) == "AVAILABLE",
                40,
                "version 1 to become available",
            )
            _until(page, lambda: _state(page, complete) == "SUCCESS", 20, "complete to succeed")
            version_rows = admin.get(f"/admin/api/v1/datastack/{name}/versions").json()[0]["rows"]
            assert f"{version_rows:,}" in page.inner_text(f'tr[data-version="{name}:1"]')
            table_row = page.inner_text(f'tr[data-table="{name}.synapses"]')
            assert f"{SYNAPSES:,}" in table_row and "ago" in table_row  # row count, roots age
            assert page.query_selector("#chart-versions svg circle") is not None
            assert page.query_selector("#chart-runs svg rect.run-bar") is not None
            assert page.evaluate("window.__marker") == "same page"
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            assert not console_errors, console_errors
        finally:
            browser.close()
    assert time.monotonic() - t_start < 60
