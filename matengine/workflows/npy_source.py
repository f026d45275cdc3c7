"""Reading ``.npy`` column files from a bucket folder by byte range (cloud-files: gs://, s3://,
http(s)://, file://). Only headers are read whole; rows come as ranges, so no worker ever holds
a whole file and memory stays flat as row counts grow."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cloudfiles import CloudFiles, paths

from matengine.config import Settings
from matengine.errors import BucketUnavailable, InvalidInput, bucket_errors
from matengine.sources import check_source_url

log = logging.getLogger("matengine.upload")

_HEADER_PROBE = 4096


@dataclass(frozen=True)
class NpyHeader:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # bytes before the first row

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 0

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


class NpyFolder:
    """A folder of ``NAME.npy`` files at ``url``, which must lie under a configured source
    root (:func:`matengine.sources.check_source_url`).

    Errors name the file and the folder, never what the store answered: a caller must not
    learn the content of a URL, nor tell a closed port from a missing file.
    """

    def __init__(self, url: str, settings: Settings | None = None, *, retry_transient: bool = False):
        """``retry_transient``: a running upload's task passes True, so that a transient
        fault of the store raises :class:`BucketUnavailable` (the task retries); checking a
        request leaves it False, and then such a fault reads as a missing file."""
        self.retry_transient = retry_transient
        if not isinstance(url, str) or not url.strip():
            raise InvalidInput(
                "source must be a folder URL (file://, gs://, s3://, http(s)://)", field="source"
            )
        scheme, sep, rest = url.partition("://")
        if sep and paths.get_protocol(url) is None:  # else cloud-files reads it as a local path
            raise InvalidInput(
                f"source {url!r}: unsupported protocol {scheme!r} (use file://, gs://, s3:// or http(s)://)",
                field="source",
            )
        if sep and not rest.strip("/"):
            raise InvalidInput(f"source {url!r} names no bucket or folder", field="source")
        check_source_url(url, settings)
        self.url = url.rstrip("/")
        self._headers: dict[str, NpyHeader] = {}

    @cached_property
    def files(self) -> CloudFiles:
        url = self.url
        if "://" not in url:
            url = "file://" + url
        return CloudFiles(url, progress=False)

    def _get(self, path: str, start: int | None = None, end: int | None = None) -> bytes | None:
        req: dict[str, str | int | None] = {"path": path}
        if start is not None:
            req.update(start=start, end=end)
        [res] = self.files.get([req], raw=True)
        if res.get("error") is not None:
            raise res["error"]
        return res["content"]

    def header(self, name: str) -> NpyHeader:
        if name in self._headers:
            return self._headers[name]
        path = f"{name}.npy"
        # a transient fault (timeout, 5xx, throttling) is retried by a running upload's task;
        # any other failure reads as "missing" (a caller must not learn which ports are closed)
        try:
            with bucket_errors(f"cannot read {path} in {self.url}", field=name):
                head = self._get(path, 0, _HEADER_PROBE)
        except InvalidInput:
            head = None
        except BucketUnavailable:
            if not self.retry_transient:
                head = None
            else:
                raise
        if head is None:
            raise InvalidInput(
                f"missing file {path} in {self.url} (absent, or the store could not be read)", field=name
            )
        try:
            f = io.BytesIO(head)
            major, _minor = np.lib.format.read_magic(f)
            reader = (
                np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = reader(f)
        except Exception:  # numpy's message quotes the bytes read: never echo them
            raise InvalidInput(f"{path} is not a readable .npy file", field=name) from None
        if fortran and len(shape) > 1:
            raise InvalidInput(f"{path} is stored in Fortran order; save it C-ordered", field=name)
        if dtype.hasobject:
            raise InvalidInput(
                f"{path} holds Python objects; use a numeric or fixed-width string dtype", field=name
            )
        header = NpyHeader(name, tuple(shape), dtype, f.tell())
        need = header.offset + header.rows * header.row_bytes
        # a short probe was the whole file; otherwise ask the store (one HEAD-like request)
        size = len(head) if len(head) < _HEADER_PROBE else self._size(path)
        if size is not None and size < need:
            raise InvalidInput(
                f"{path} is shorter than its header says: shape {header.shape} "
                f"of {dtype} needs {need} bytes, the file has {size}",
                field=name,
            )
        self._headers[name] = header
        return header

    def _size(self, path: str) -> int | None:
        try:
            size = self.files.size(path)
        except Exception:  # a store that cannot tell: rows are still length-checked when read
            return None
        return None if size is None else int(size)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of ``name.npy`` as an array of shape ``(stop-start, …)``."""
        h = self.header(name)
        if stop <= start:
            return np.empty((0, *h.shape[1:]), dtype=h.dtype)
        first = h.offset + start * h.row_bytes
        last = h.offset + stop * h.row_bytes
        with bucket_errors(f"cannot read rows of {name}.npy in {self.url}", field=name):
            data = self._get(f"{name}.npy", first, last)
        if data is None or len(data) != last - first:
            raise InvalidInput(f"{name}.npy is shorter than its header says", field=name)
        return np.frombuffer(data, dtype=h.dtype).reshape((stop - start, *h.shape[1:]))
