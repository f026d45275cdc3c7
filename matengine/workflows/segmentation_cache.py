"""Open segmentation sources once per worker process.

Opening a ``local://`` graph replays its edit log and a CloudVolume reads its info; chunk tasks
would otherwise pay that for every chunk. A cached ``local://`` graph is reopened when any of
its files changes (an appended edit log must never be answered from a stale copy).
"""

from __future__ import annotations

import threading
from pathlib import Path

from matengine.segmentation import Segmentation, open_segmentation

_lock = threading.Lock()
_cache: dict[tuple[str, str | None], tuple[tuple, Segmentation]] = {}


def _signature(url: str) -> tuple:
    if not url.startswith("local://"):
        return ()
    path = Path(url[len("local://") :])
    try:
        return tuple(
            sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in path.iterdir() if p.is_file())
        )
    except FileNotFoundError:
        return ()


def cached_segmentation(url: str, token: str | None = None) -> Segmentation:
    sig = _signature(url)
    with _lock:
        hit = _cache.get((url, token))
        if hit is not None and hit[0] == sig:
            return hit[1]
    seg = open_segmentation(url, token=token)
    with _lock:
        _cache[(url, token)] = (sig, seg)
    return seg
