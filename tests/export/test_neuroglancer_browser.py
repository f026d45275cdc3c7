"""A version's synapses in a real Neuroglancer: Debian's headless Chromium (playwright with
``executable_path``) loads the Neuroglancer client that the ``neuroglancer`` package serves on
loopback, with the synthetic segmentation (precomputed, served by ``matengine serve``) and the
synapse table's annotation layer; one root is selected, and Neuroglancer must load exactly that
root's synapses (pre or post) through the relationship indexes, and nothing of any other
segment. The screenshot goes to ``test-artifacts/`` (the one in docs/ was taken this way).

Neuroglancer's side panel lists the annotations of local layers only (its precomputed sources
have an empty iterator), so "listed" is what the client fetched and drew for the selection:
the annotation ids in the relationship files it requested, decoded here.

The client fetches our sources cross-origin and sends no token, so this server runs with auth
off (the loopback-only demo mode); the same routes with auth on are tested over HTTP in
test_export_api.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from matengine import catalog
from matengine.api.neuroglancer import neuroglancer_state, segmentation_source

CHROMIUM = os.environ.get("MATENGINE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Neuroglancer needs WebGL2: software rendering, no GPU here
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-artifacts" / "neuroglancer-synapses.png"


@pytest.fixture(scope="module")
def served(engine, versioned, tmp_path_factory):
    from matengine.api.app import create_app
    from matengine.config import get_settings
    from matengine.segmentation.serving import ThreadedServer

    ds, when = versioned
    settings = get_settings().model_copy(update={"home": tmp_path_factory.mktemp("home")})
    with ThreadedServer(create_app(settings, engine=engine, auth_enabled=False)) as srv:
        yield srv.url, ds, when


def _ids_of(blob: bytes) -> list[int]:
    """Annotation ids of a relationship file: count, records, then the ids (uint64 each)."""
    count = int(np.frombuffer(blob[:8], "<u8")[0])
    return np.frombuffer(blob[len(blob) - 8 * count :], "<u8").astype(np.int64).tolist()


def test_neuroglancer_lists_exactly_the_selected_roots_synapses(served, engine, oracle):
    if os.environ.get("MATENGINE_SKIP_BROWSER") == "1":
        pytest.skip("MATENGINE_SKIP_BROWSER=1")
    assert os.access(CHROMIUM, os.X_OK), f"Chromium not found at {CHROMIUM}: apt-get install -y chromium"
    import neuroglancer
    from playwright.sync_api import sync_playwright

    url, ds, when = served
    want = oracle.table_at("synapses", when)
    post = want["post_pt_root_id"]
    roots, counts = np.unique(post[post != 0], return_counts=True)
    root = int(roots[np.argmax(counts)])
    mine = (want["post_pt_root_id"] == root) | (want["pre_pt_root_id"] == root)
    stack = catalog.get_datastack(engine, ds)
    state = neuroglancer_state(
        url,
        ds,
        1,
        "synapses",
        segmentation=segmentation_source(url, stack.pcg_table_name),
        voxel_resolution=stack.voxel_resolution,
        relationships=["pre_pt_root_id", "post_pt_root_id"],
        selected=[root],
    )
    neuroglancer.set_server_bind_address("127.0.0.1", 0)
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(state))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            fetched: list = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: fetched.append(r) if "/rel_" in r.url else None)
            page.goto(viewer.get_viewer_url())
            deadline = time.monotonic() + 90
            while len({r.url for r in fetched if r.ok}) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            page.wait_for_timeout(2000)  # let it draw, and let anything else it wants arrive
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            files = {r.url.split("/synapses/", 1)[1]: r.body() for r in fetched if r.ok}
        finally:
            browser.close()
            neuroglancer.stop()
    assert not errors, errors
    # the relationship index of the selected root, for both root columns, and nothing else
    assert sorted(files) == [f"rel_post_pt_root_id/{root}", f"rel_pre_pt_root_id/{root}"]
    listed = sorted({i for blob in files.values() for i in _ids_of(blob)})
    assert listed == want["id"][mine].tolist()
