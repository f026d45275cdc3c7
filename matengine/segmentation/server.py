"""PyChunkedGraph-compatible HTTP routes over any served root graph.

``make_pcg_router(resolve)`` returns a FastAPI ``APIRouter`` with the routes caveclient's
``ChunkedGraphClient`` and CloudVolume's ``graphene://`` reader use (PyChunkedGraph's
own routes). ``resolve(table_name)`` returns the :class:`Segmentation` to serve (raise
``KeyError`` for an unknown table -> 404). Its ``roots`` must implement the
:class:`RootGraph` protocol plus ``root_intervals``, ``candidate_delta_roots`` and
``lineage_graph`` (as :class:`LocalGraph` and :class:`FlatGraph` do).

Wire conventions follow PyChunkedGraph, quirks included: timestamps are float POSIX
seconds; ``is_latest_roots`` means "not retired at T" (PCG does not check creation);
``delta_roots`` returns every root retired/created by an edit in ``[t0, t1]`` (a superset
of the exact answer); ``past_id_mapping`` reads a JSON body on a GET. A local supervoxel
volume is served under ``/segmentation/table/{name}/volume`` and advertised as the info's
``data_dir``, so CloudVolume ``graphene://`` works from any machine.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from matengine.segmentation.base import Segmentation
from matengine.segmentation.local_edits import Merge, Split
from matengine.segmentation.timecodes import from_us, seconds_to_us, us_to_seconds

PCG_VERSION = "2.21.1"  # >= 2.18 satisfies every caveclient 8.2.1 version constraint
API_VERSIONS = [0, 1]


def _ts(request: Request, name: str, default_now: bool = True) -> int:
    """Timestamp query parameter (float seconds) as µs; absent -> now (PCG default)."""
    raw = request.query_params.get(name)
    if raw is None:
        if not default_now:
            raise HTTPException(400, f"Timestamp parameter {name} is mandatory")
        return seconds_to_us(time.time())
    try:
        return seconds_to_us(float(raw))
    except ValueError as exc:
        raise HTTPException(400, f"Timestamp parameter {name} is not a valid unix timestamp") from exc


def _ts_or_zero(request: Request, name: str) -> int:
    """Optional lower-bound timestamp: absent means the beginning of time (PCG default)."""
    return _ts(request, name) if name in request.query_params else 0


MAX_BODY_BYTES = 16 * 1024 * 1024


async def _body(request: Request) -> bytes:
    # under matengine's app, BodyLimit has inflated and bounded the body already; a
    # standalone segmentation server bounds what it inflates here
    data = await request.body()
    if "gzip" in request.headers.get("content-encoding", "").lower():
        from matengine.api.body_limit import BodyTooLarge, inflate

        try:
            data = inflate([data], "gzip", MAX_BODY_BYTES)
        except BodyTooLarge:
            raise HTTPException(413, f"request body larger than {MAX_BODY_BYTES} bytes inflated") from None
        except zlib.error:
            raise HTTPException(400, "the body is not valid gzip data") from None
    return data


async def _json_ids(request: Request, key: str) -> np.ndarray:
    try:
        payload = json.loads(await _body(request) or b"{}")
        return np.asarray([int(v) for v in payload[key]], dtype=np.uint64)
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(400, f'request body must be JSON {{"{key}": [ids...]}}') from exc


def _bool(value: str | None) -> bool:
    return str(value).lower() in ("1", "true", "t", "yes")


def _ids(arr: np.ndarray) -> list[int]:
    return [int(v) for v in np.asarray(arr, np.uint64).tolist()]


def graph_info(seg: Segmentation, data_dir: str) -> dict:
    """PCG ``/info``: the watershed layer's precomputed info plus graph metadata."""
    info = dict(getattr(seg.supervoxels, "info", {}))
    n_layers = int(getattr(seg.roots, "n_layers", 10))
    chunk = [int(c) for c in seg.supervoxels.bounds.chunk_size]
    info.update(
        {
            "data_dir": data_dir,
            "graph": {
                "chunk_size": chunk,
                "n_layers": n_layers,
                "n_bits_for_layer_id": 8,
                "cv_mip": 0,
                "fan_out": 2,
                "spatial_bit_masks": {
                    str(lay): max(1, 10 - max(0, lay - 2)) for lay in range(1, n_layers + 1)
                },
            },
            "app": {"supported_api_versions": API_VERSIONS},
            "chunks_start_at_voxel_offset": True,
            "sharded_mesh": True,
            "verify_mesh": False,
            "mesh": "graphene_meshes",
        }
    )
    return info


MAX_EDIT_BODY = 8 * 1024 * 1024  # a split of ~100k points; larger bodies are refused unread


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The body, read (and un-gzipped) only up to ``limit`` bytes; more answers 413."""
    too_big = HTTPException(413, f"an edit request is at most {limit} bytes")
    try:
        if int(request.headers.get("content-length") or 0) > limit:
            raise too_big
    except ValueError as exc:
        raise HTTPException(400, "bad Content-Length") from exc
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise too_big
    if "gzip" in request.headers.get("content-encoding", "").lower():
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflate.decompress(bytes(data), limit + 1)
        except zlib.error as exc:
            raise HTTPException(400, "request body is not valid gzip") from exc
        if len(out) > limit:
            raise too_big
        return out
    return bytes(data)


def _edit_points(value: object, what: str) -> list[tuple[int, np.ndarray]]:
    """``[[id, x_nm, y_nm, z_nm], ...]`` -> [(id, point in nm)]; anything else is refused."""
    if not isinstance(value, list) or not value:
        raise HTTPException(400, f"{what}: expected a non-empty list of [id, x, y, z]")
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 4):
            raise HTTPException(400, f"{what}: every entry must be [id, x, y, z]")
        try:
            node = int(item[0])
            point = np.asarray([float(v) for v in item[1:]], np.float64)
        except (TypeError, ValueError) as exc:
            raise HTTPException(400, f"{what}: ids must be integers and coordinates numbers") from exc
        if not (0 <= node < 2**64) or not np.isfinite(point).all():
            raise HTTPException(400, f"{what}: id out of range or coordinate not finite")
        out.append((node, point))
    return out


def _resolve_supervoxels(
    seg: Segmentation, points: list[tuple[int, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Supervoxel ids (and points in voxels of the volume) of edit points. An id that is not
    a supervoxel of the graph (caveclient sends the root id when it has none) is replaced by
    the supervoxel under the point, as PyChunkedGraph does."""
    ids = np.array([p[0] for p in points], np.uint64)
    nm = np.stack([p[1] for p in points])
    graph = seg.roots
    _, known = graph.index.dense(ids)  # type: ignore[attr-defined]
    if not known.all():
        found = seg.supervoxels.lookup(nm[~known], points_resolution=(1.0, 1.0, 1.0)).supervoxel_ids
        ids[~known] = found
    return ids, nm / np.asarray(seg.supervoxels.resolution, np.float64)


def make_pcg_router(
    resolve: Callable[[str], Segmentation],
    *,
    serve_volumes: bool = True,
    editor: Callable[[Request, str], int] | None = None,
) -> APIRouter:
    """Router with ``/segmentation/...`` PCG routes; mount with ``app.include_router``.

    ``editor(request, table)`` authorises an edit (raise to refuse) and returns the user id
    recorded with it; without one, ``merge``/``split`` answer 403."""
    router = APIRouter(tags=["chunkedgraph"])
    api = "/segmentation/api/v1/table/{name}"

    def get(name: str) -> Segmentation:
        try:
            return resolve(name)
        except KeyError as exc:
            raise HTTPException(404, f"unknown chunkedgraph table {name!r}") from exc

    def roots_of(name: str):
        return get(name).roots

    @router.get("/segmentation/api/versions")
    def api_versions() -> list[int]:
        return API_VERSIONS

    @router.get("/segmentation/api/version")
    def version() -> str:
        return PCG_VERSION

    @router.get("/segmentation/table/{name}/info")
    def info(name: str, request: Request) -> dict:
        seg = get(name)
        cloudpath = seg.supervoxels.cloudpath
        data_dir = cloudpath
        if serve_volumes and cloudpath.startswith("file://"):
            data_dir = str(request.url_for("pcg_volume_file", name=name, path="info"))
            data_dir = data_dir[: -len("/info")]
        return graph_info(seg, data_dir)

    @router.get("/segmentation/table/{name}/volume/{path:path}", name="pcg_volume_file")
    def volume_file(name: str, path: str) -> Response:
        cloudpath = get(name).supervoxels.cloudpath
        if not (serve_volumes and cloudpath.startswith("file://")):
            raise HTTPException(404, "this table's volume is not served here")
        root = Path(cloudpath[len("file://") :]).resolve()
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise HTTPException(404, "not found")
        if target.is_file():
            return FileResponse(target)
        gz = target.with_name(target.name + ".gz")
        if gz.is_file():  # CloudVolume stores chunks gzipped; say so, let the client inflate
            return Response(
                gz.read_bytes(), media_type="application/octet-stream", headers={"Content-Encoding": "gzip"}
            )
        raise HTTPException(404, "not found")

    @router.post(api + "/roots_binary")
    async def roots_binary(name: str, request: Request) -> Response:
        graph, t = roots_of(name), _ts(request, "timestamp")
        svids = np.frombuffer(await _body(request), dtype="<u8").astype(np.uint64)
        roots = await run_in_threadpool(graph.get_roots, svids, from_us(t))
        return Response(np.asarray(roots, "<u8").tobytes(), media_type="application/octet-stream")

    @router.post(api + "/roots")
    async def roots_json(name: str, request: Request) -> Response:
        graph, t = roots_of(name), _ts(request, "timestamp")
        svids = await _json_ids(request, "node_ids")
        roots = await run_in_threadpool(graph.get_roots, svids, from_us(t))
        if request.query_params.get("as_binary") == "root_ids":
            return Response(np.asarray(roots, "<u8").tobytes(), media_type="application/octet-stream")
        return JSONResponse({"root_ids": _ids(roots)})

    @router.get(api + "/node/{node_id}/root")
    def node_root(name: str, node_id: int, request: Request) -> dict:
        graph, t = roots_of(name), _ts(request, "timestamp")
        return {"root_id": int(graph.get_roots(np.array([node_id], np.uint64), from_us(t))[0])}

    @router.get(api + "/delta_roots")
    def delta_roots(name: str, request: Request) -> dict:
        graph = roots_of(name)
        t0, t1 = _ts(request, "timestamp_past", False), _ts(request, "timestamp_future")
        old, new = graph.candidate_delta_roots(t0, t1)
        return {"old_roots": _ids(old), "new_roots": _ids(new)}

    @router.post(api + "/is_latest_roots")
    async def is_latest_roots(name: str, request: Request) -> dict:
        graph, t = roots_of(name), _ts(request, "timestamp")
        ids = await _json_ids(request, "node_ids")
        _, expired, known = graph.root_intervals(ids)
        return {"is_latest": (known & (expired > t)).tolist()}

    @router.post(api + "/root_timestamps")
    async def root_timestamps(name: str, request: Request) -> dict:
        graph = roots_of(name)
        ids = await _json_ids(request, "node_ids")
        created, expired, known = graph.root_intervals(ids)
        if not known.all():
            raise HTTPException(400, f"unknown root id {int(ids[~known][0])}")
        if _bool(request.query_params.get("latest")):
            # Last moment each root was valid: its retirement, or "timestamp" if still valid
            # (caveclient subtracts 1 ms from these).
            t = _ts(request, "timestamp")
            created = np.minimum(expired, t)
        return {"timestamp": [us_to_seconds(c) for c in created.tolist()]}

    @router.post(api + "/lineage_graph_multiple")
    async def lineage_graph_multiple(name: str, request: Request) -> dict:
        graph = roots_of(name)
        t0, t1 = _ts_or_zero(request, "timestamp_past"), _ts(request, "timestamp_future")
        ids = await _json_ids(request, "root_ids")
        return await run_in_threadpool(graph.lineage_graph, ids, t0, t1)

    @router.get(api + "/root/{root_id}/lineage_graph")
    def lineage_graph(name: str, root_id: int, request: Request) -> dict:
        t0 = _ts_or_zero(request, "timestamp_past")
        return roots_of(name).lineage_graph(
            np.array([root_id], np.uint64), t0, _ts(request, "timestamp_future")
        )

    @router.get(api + "/past_id_mapping")
    async def past_id_mapping(name: str, request: Request) -> dict:
        graph = roots_of(name)
        t0, t1 = _ts_or_zero(request, "timestamp_past"), _ts(request, "timestamp_future")
        ids = await _json_ids(request, "root_ids")
        past = await run_in_threadpool(graph.get_past_ids, ids, from_us(t0))
        past_ids = np.unique(np.concatenate([np.zeros(0, np.uint64), *past.values()]))
        future = await run_in_threadpool(graph.get_future_ids, past_ids, from_us(t1))
        # PCG maps a past id forward only when its future is a single root.
        fut_map = {str(p): int(f[0]) for p, f in future.items() if len(f) == 1}
        return {"past_id_map": {str(k): _ids(v) for k, v in past.items()}, "future_id_map": fut_map}

    @router.get(api + "/node/{node_id}/leaves")
    def leaves(name: str, node_id: int) -> dict:
        return {"leaf_ids": _ids(roots_of(name).get_leaves(node_id))}

    @router.post(api + "/node/leaves_many")
    @router.post(api + "/leaves_many")
    async def leaves_many(name: str, request: Request) -> dict:
        graph = roots_of(name)
        ids = await _json_ids(request, "node_ids")
        return {str(int(r)): _ids(graph.get_leaves(int(r))) for r in ids}

    def local_graph_of(name: str):
        from matengine.segmentation.local_graph import LocalGraph

        graph = roots_of(name)
        if not isinstance(graph, LocalGraph):
            raise HTTPException(400, "this chunkedgraph table has no edit log (flat segmentation)")
        return graph

    async def edit(
        name: str, request: Request, parse: Callable[[Segmentation, object], Merge | Split]
    ) -> dict:
        from matengine.segmentation.local_edits import EditRefused, apply_edit

        if editor is None:
            raise HTTPException(403, "edits are not enabled on this server")
        user = editor(request, name)
        seg = get(name)
        graph = local_graph_of(name)
        raw = await _bounded_body(request, MAX_EDIT_BODY)
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            raise HTTPException(400, "request body must be JSON") from exc
        change = await run_in_threadpool(parse, seg, payload)
        try:
            result = await run_in_threadpool(
                apply_edit, graph.files.directory, change, user_id=user, open_graph=lambda _d: graph
            )
        except EditRefused as exc:
            raise HTTPException(400, str(exc)) from exc
        return {"operation_id": result.operation_id, "new_root_ids": list(result.new_root_ids)}

    def parse_merge(seg: Segmentation, payload: object) -> Merge:
        points = _edit_points(payload, "merge")
        if len(points) != 2:
            raise HTTPException(400, "merge: expected exactly two [id, x, y, z] entries")
        ids, vox = _resolve_supervoxels(seg, points)
        return Merge(int(ids[0]), int(ids[1]), tuple(vox[0]), tuple(vox[1]))

    def parse_split(seg: Segmentation, payload: object) -> Split:
        if not isinstance(payload, dict):
            raise HTTPException(400, 'split: expected {"sources": [...], "sinks": [...]}')
        sources = _edit_points(payload.get("sources"), "sources")
        sinks = _edit_points(payload.get("sinks"), "sinks")
        ids, vox = _resolve_supervoxels(seg, sources + sinks)
        n = len(sources)
        return Split(
            tuple(int(i) for i in ids[:n]), tuple(int(i) for i in ids[n:]), None, tuple(vox[0]), tuple(vox[n])
        )

    @router.post(api + "/merge")
    async def merge(name: str, request: Request) -> dict:
        return await edit(name, request, parse_merge)

    @router.post(api + "/split")
    async def split(name: str, request: Request) -> dict:
        return await edit(name, request, parse_split)

    def history(fn, *args):
        from matengine.segmentation.local_history import BadHistoryRequest

        try:
            return fn(*args)
        except BadHistoryRequest as exc:
            raise HTTPException(400, str(exc)) from exc

    @router.get(api + "/root/{root_id}/change_log")
    def change_log(name: str, root_id: int, request: Request) -> dict:
        from matengine.segmentation.local_history import change_log_summary

        filtered = _bool(request.query_params.get("filtered", "false"))
        return history(change_log_summary, local_graph_of(name), root_id, filtered)

    @router.get(api + "/root/{root_id}/tabular_change_log")
    def tabular_change_log(name: str, root_id: int, request: Request) -> Response:
        from matengine.segmentation.local_history import tabular_change_log_json

        filtered = _bool(request.query_params.get("filtered", "true"))
        out = history(tabular_change_log_json, local_graph_of(name), [root_id], filtered)
        return Response(out[str(root_id)], media_type="application/json")

    @router.get(api + "/tabular_change_log_many")
    async def tabular_change_log_many(name: str, request: Request) -> dict:
        from matengine.segmentation.local_history import tabular_change_log_json

        graph = local_graph_of(name)
        filtered = _bool(request.query_params.get("filtered", "true"))
        ids = await _json_ids(request, "root_ids")
        return await run_in_threadpool(history, tabular_change_log_json, graph, _ids(ids), filtered)

    @router.get(api + "/root/{root_id}/merge_log")
    def merge_log(name: str, root_id: int) -> dict:
        from matengine.segmentation.local_history import merge_log

        return history(merge_log, local_graph_of(name), root_id)

    @router.get(api + "/operation_details")
    def operation_details(name: str, request: Request) -> dict:
        from matengine.segmentation.local_history import MAX_OPERATIONS, operation_details

        raw = request.query_params.get("operation_ids", "[]")
        try:
            ops = [int(v) for v in json.loads(raw)]
        except (ValueError, TypeError) as exc:
            raise HTTPException(400, "operation_ids must be a JSON list of integers") from exc
        if len(ops) > MAX_OPERATIONS:
            raise HTTPException(400, f"at most {MAX_OPERATIONS} operation ids per request")
        return operation_details(local_graph_of(name), ops)

    @router.get(api + "/oldest_timestamp")
    def oldest_timestamp(name: str) -> dict:
        graph = roots_of(name)
        files = getattr(graph, "files", None)
        t = files.created if files is not None else from_us(0)
        return {"iso": t.isoformat(" ")}

    return router
