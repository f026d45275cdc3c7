"""The demo behind ``matengine demo``: runs on the embedded default with no system services."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from matengine import annotations as ann
from matengine import catalog
from matengine.config import get_settings
from matengine.db.connection import get_engine, resolve_database_url
from matengine.errors import NotFound

DATASTACK = "demo"
SIZES = {"small": 1_000, "medium": 100_000, "large": 1_000_000}


def run_demo(
    size: str = "small", workdir: Path | None = None, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = log or (lambda _msg: None)
    settings = get_settings()
    workdir = Path(workdir or settings.home / "demo")
    workdir.mkdir(parents=True, exist_ok=True)
    n = SIZES.get(size) or int(size)
    t0 = time.perf_counter()
    url = resolve_database_url(settings)
    engine = get_engine(url)
    say(f"database: {'embedded' if not settings.database_url else 'external'} ({url})")
    try:
        catalog.drop_datastack(engine, DATASTACK)
    except NotFound:
        pass
    catalog.add_datastack(
        engine, DATASTACK, segmentation_source=f"local://{workdir / 'graph'}",
        voxel_resolution=(4, 4, 40),
    )
    catalog.create_table(engine, DATASTACK, "synapses", schema="synapse")
    rng = np.random.default_rng(0)
    pts = rng.integers(0, 10_000, size=(n, 3, 3)).astype(float)
    sizes = rng.random(n) * 100
    rows = [
        {"pre_pt": {"position": p[0].tolist()}, "ctr_pt": {"position": p[1].tolist()},
         "post_pt": {"position": p[2].tolist()}, "size": float(s)}
        for p, s in zip(pts, sizes, strict=True)
    ]
    ids: list[int] = []
    for start in range(0, n, 10_000):
        ids += ann.insert_annotations(engine, DATASTACK, "synapses", rows[start:start + 10_000])
    back = ann.get_annotations(engine, DATASTACK, "synapses", ids)
    same = len(back) == n and all(
        b["pre_pt_position"] == r["pre_pt"]["position"] and b["size"] == r["size"]
        for b, r in zip(back, rows, strict=True)
    )
    say(f"inserted and read back {n} synapses: {'identical' if same else 'DIFFERENT'}")
    return {
        "database": "external" if settings.database_url else "embedded",
        "rows": n,
        "seconds": round(time.perf_counter() - t0, 2),
        "verified": bool(same),
    }
