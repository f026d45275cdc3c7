"""Client of the PyChunkedGraph HTTP API (``graphene://``) as a :class:`RootGraph`.

Routes, payloads and timestamp parameters follow PyChunkedGraph 2.x
(``/segmentation/api/v1/table/{name}/...``; timestamps as float POSIX seconds). Ids are
sent in batches (``batch_size``), batches run concurrently on a thread pool, and every
request is retried with exponential backoff on timeouts, connection errors, 429 and 5xx.

A real chunkedgraph's answers are looser than our protocol: ``delta_roots`` returns a
superset, ``is_latest_roots`` ignores creation time, lineage may reach roots that share
no supervoxel. This client treats those answers as *candidates* and filters them with
root creation times and ``is_latest_roots`` so that its results are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import numpy as np
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from matengine.errors import (
    GrapheneRefused,
    GrapheneRequestError,
    GrapheneUnavailable,
    SegmentationSourceError,
)
from matengine.segmentation.base import Segmentation
from matengine.segmentation.timecodes import from_us, seconds_to_us, to_us, us_to_seconds

_FAR_FUTURE = 253402300799.0  # 9999-12-31T23:59:59Z in POSIX seconds


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):  # timeouts, refused/reset connections
        return True
    if isinstance(exc, httpx.HTTPStatusError):
        code = exc.response.status_code
        return code == 429 or code >= 500
    return False


def parse_graphene_url(url: str) -> tuple[str, str]:
    """``graphene://http(s)://HOST[/prefix]/segmentation/table/NAME`` -> (base, NAME)."""
    rest = url[len("graphene://") :] if url.startswith("graphene://") else url
    if not rest.startswith(("http://", "https://")) or "/segmentation/" not in rest:
        raise SegmentationSourceError(f"{url}: expected graphene://http(s)://HOST/segmentation/table/NAME")
    base, tail = rest.rsplit("/segmentation/", 1)
    name = tail.rstrip("/").rsplit("/", 1)[-1]
    if not name or name in ("table", "segmentation"):
        raise SegmentationSourceError(f"{url}: no table name")
    return base.rstrip("/"), name


class GrapheneClient:
    """:class:`RootGraph` answered by a PyChunkedGraph-compatible server."""

    def __init__(
        self,
        base_url: str,
        table: str,
        *,
        token: str | None = None,
        batch_size: int = 100_000,
        max_workers: int = 4,
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.table = table
        # layer count of the graph (from its info; 10 until read)
        self.n_layers = 10
        self.api = f"{self.base_url}/segmentation/api/v1/table/{table}"
        self.batch_size = max(1, int(batch_size))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        cookies = {"middle_auth_token": token} if token else {}
        self._http = httpx.Client(
            headers=headers,
            cookies=cookies,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_workers * 2),
        )
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers))
        self._retry = retry(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(max(1, retries)),
            wait=wait_exponential(multiplier=backoff, max=10),
            reraise=True,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._http.close()

    # ---------------------------------------------------------------- transport
    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        """One HTTP call with retries; raises :class:`GrapheneRequestError` on failure."""

        def once() -> httpx.Response:
            resp = self._http.request(method, url, **kwargs)
            resp.raise_for_status()
            return resp

        try:
            return self._retry(once)()
        except httpx.HTTPStatusError as exc:
            r = exc.response
            # still failing after our retries: a 5xx / 429 may pass later (the task retries),
            # a 4xx will not
            error = GrapheneUnavailable if _retryable(exc) else GrapheneRefused
            raise error(f"{method} {url} -> HTTP {r.status_code}: {r.text[:300]}", r.status_code) from exc
        except httpx.TransportError as exc:
            raise GrapheneUnavailable(f"{method} {url}: {exc!r}") from exc

    def _batched(self, ids: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Apply ``fn`` to batches of ``ids`` concurrently, results in input order."""
        if len(ids) == 0:
            return np.zeros(0)
        batches = [ids[i : i + self.batch_size] for i in range(0, len(ids), self.batch_size)]
        if len(batches) == 1:
            return fn(batches[0])
        return np.concatenate(list(self._pool.map(fn, batches)))

    @staticmethod
    def _t(timestamp: datetime) -> float:
        return us_to_seconds(to_us(timestamp))

    # ---------------------------------------------------------------- RootGraph
    def get_roots(self, svids: np.ndarray, timestamp: datetime) -> np.ndarray:
        svids = np.asarray(svids, np.uint64).ravel()
        uniq, inverse = np.unique(svids, return_inverse=True)
        nonzero = uniq[uniq != 0]
        t = self._t(timestamp)

        def fetch(batch: np.ndarray) -> np.ndarray:
            r = self.request(
                "POST",
                f"{self.api}/roots_binary",
                params={"timestamp": t},
                content=np.asarray(batch, "<u8").tobytes(),
            )
            return np.frombuffer(r.content, dtype="<u8").astype(np.uint64)

        roots = np.zeros(len(uniq), np.uint64)
        if len(nonzero):
            roots[uniq != 0] = self._batched(nonzero, fetch)
        return roots[inverse]

    def root_created_us(self, roots: np.ndarray) -> np.ndarray:
        """Creation time (µs) of each root, from ``root_timestamps``."""
        roots = np.asarray(roots, np.uint64).ravel()

        def fetch(batch: np.ndarray) -> np.ndarray:
            try:
                r = self.request(
                    "POST",
                    f"{self.api}/root_timestamps",
                    params={"latest": False},
                    json={"node_ids": [int(v) for v in batch]},
                )
            except GrapheneRequestError as exc:
                if exc.http_status in (400, 404):
                    raise KeyError(str(exc)) from exc
                raise
            return np.array([seconds_to_us(s) for s in r.json()["timestamp"]], np.int64)

        return self._batched(roots, fetch).astype(np.int64)

    def get_root_timestamps(self, roots: np.ndarray) -> list[datetime]:
        return [from_us(c) for c in self.root_created_us(roots).tolist()]

    def _not_retired(self, roots: np.ndarray, t: float) -> np.ndarray:
        def fetch(batch: np.ndarray) -> np.ndarray:
            r = self.request(
                "POST",
                f"{self.api}/is_latest_roots",
                params={"timestamp": t},
                json={"node_ids": [int(v) for v in batch]},
            )
            return np.asarray(r.json()["is_latest"], bool)

        return self._batched(np.asarray(roots, np.uint64), fetch).astype(bool)

    def is_latest_roots(self, roots: np.ndarray, timestamp: datetime) -> np.ndarray:
        roots = np.asarray(roots, np.uint64).ravel()
        out = np.zeros(len(roots), bool)
        nz = np.flatnonzero(roots != 0)
        if len(nz) == 0:
            return out
        ok = self._not_retired(roots[nz], self._t(timestamp))
        # PCG's is_latest does not check creation: a root born after T also says True.
        cand = nz[ok]
        if len(cand):
            out[cand] = self.root_created_us(roots[cand]) <= to_us(timestamp)
        return out

    def get_delta_roots(self, t0: datetime, t1: datetime) -> tuple[np.ndarray, np.ndarray]:
        r = self.request(
            "GET",
            f"{self.api}/delta_roots",
            params={"timestamp_past": self._t(t0), "timestamp_future": self._t(t1)},
        )
        body = r.json()
        cands = np.unique(np.asarray(body["old_roots"] + body["new_roots"], np.uint64))
        empty = np.zeros(0, np.uint64)
        if len(cands) == 0:
            return empty, empty.copy()
        valid0 = self.is_latest_roots(cands, t0)
        valid1 = self.is_latest_roots(cands, t1)
        return cands[valid0 & ~valid1], cands[valid1 & ~valid0]

    def lineage_graph(self, roots: Sequence[int], t_past: float, t_future: float) -> dict:
        r = self.request(
            "POST",
            f"{self.api}/lineage_graph_multiple",
            params={"timestamp_past": t_past, "timestamp_future": t_future},
            json={"root_ids": [int(v) for v in roots]},
        )
        return r.json()

    def _related(self, roots: np.ndarray, t: datetime, backwards: bool) -> dict[int, np.ndarray]:
        roots = np.unique(np.asarray(roots, np.uint64).ravel())
        if len(roots) == 0:
            return {}
        ts = self._t(t)
        # One direction per request: PCG skips expanding a node already reached from the
        # other direction, which can hide ancestors when several roots share a request.
        # Past: no forward step (nothing is created before 0). Future: no backward step
        # (nothing is created after year 9999).
        graph = (
            self.lineage_graph(roots.tolist(), ts, 0.0)
            if backwards
            else self.lineage_graph(roots.tolist(), _FAR_FUTURE, ts)
        )
        created = {int(n["id"]): seconds_to_us(n["timestamp"]) for n in graph["nodes"]}
        step: dict[int, list[int]] = {}
        for link in graph["links"]:
            a, b = int(link["source"]), int(link["target"])
            src, dst = (b, a) if backwards else (a, b)
            step.setdefault(src, []).append(dst)
        reach: dict[int, set[int]] = {}
        for root in roots.tolist():
            seen, todo = {root}, [root]
            while todo:
                for nxt in step.get(todo.pop(), []):
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            reach[root] = {n for n in seen if created.get(n, 0) <= to_us(t)}
        cands = np.array(sorted(set().union(*reach.values())), np.uint64)
        valid = set(cands[self.is_latest_roots(cands, t)].tolist()) if len(cands) else set()
        return {r: np.array(sorted(s & valid), np.uint64) for r, s in reach.items()}

    def get_past_ids(self, roots: np.ndarray, t_past: datetime) -> dict[int, np.ndarray]:
        return self._related(roots, t_past, backwards=True)

    def get_future_ids(self, roots: np.ndarray, t_future: datetime) -> dict[int, np.ndarray]:
        return self._related(roots, t_future, backwards=False)

    def get_leaves(self, root: int, timestamp: datetime | None = None) -> np.ndarray:
        r = self.request("GET", f"{self.api}/node/{int(root)}/leaves")
        return np.sort(np.asarray(r.json()["leaf_ids"], np.uint64))

    def info(self) -> dict:
        """The table's ``/info`` (precomputed info + ``data_dir`` + graph metadata)."""
        return self.request("GET", f"{self.base_url}/segmentation/table/{self.table}/info").json()


def open_graphene(url: str, *, token: str | None = None, **client_kwargs) -> Segmentation:
    """Open ``graphene://…``: roots over HTTP, supervoxels from the info's ``data_dir``."""
    from matengine.segmentation.cloudvolume_lookup import CloudVolumeSupervoxels

    base, name = parse_graphene_url(url)
    client = GrapheneClient(base, name, token=token, **client_kwargs)
    try:
        info = client.info()
    except GrapheneRequestError as exc:
        raise SegmentationSourceError(f"{url}: cannot read table info: {exc}") from exc
    data_dir = info.get("data_dir")
    if not data_dir:
        raise SegmentationSourceError(f"{url}: table info has no data_dir")
    client.n_layers = int(info.get("graph", {}).get("n_layers", 10))
    supervoxels = CloudVolumeSupervoxels(data_dir)
    return Segmentation(
        supervoxels=supervoxels, roots=client, url=url, name=name, flat=False, extra={"info": info}
    )
