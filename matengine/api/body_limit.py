"""Request bodies of bounded size, compressed or not.

Every request body is read here before any route sees it, up to ``MATENGINE_MAX_BODY_BYTES``
(16 MiB by default). A ``Content-Encoding: gzip`` or ``deflate`` body is inflated here,
chunk by chunk with a bound on the output, so a 254 KB gzip bomb costs at most the limit,
never 256 MB; routes then see the plain body (the header is dropped). Over the limit the
answer is 413 in the API's error shape; an encoding we do not know is 415.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyTooLarge(Exception):
    pass


def inflate(chunks: Iterable[bytes], encoding: str, limit: int) -> bytes:
    """The inflated body of ``chunks``; :class:`BodyTooLarge` once it passes ``limit`` bytes."""
    d = zlib.decompressobj(_WBITS[encoding])
    out = bytearray()
    for chunk in chunks:
        data = chunk
        while data:
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise BodyTooLarge
            data = d.unconsumed_tail
    out += d.flush(limit + 1 - len(out))
    if len(out) > limit:
        raise BodyTooLarge
    return bytes(out)


async def _answer(send: Send, status: int, message: str, kind: str) -> None:
    body = json.dumps({"message": message, "error": kind}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware bounding request bodies (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = int(scope["app"].state.settings.max_body_bytes)
        headers = dict(scope.get("headers") or [])
        too_large = (
            f"request body larger than {limit} bytes (MATENGINE_MAX_BODY_BYTES, counted after "
            "decompression); send less per request"
        )
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if encoding in ("", "identity"):
            encoding = ""
        elif encoding not in _WBITS:
            await _answer(send, 415, f"unsupported Content-Encoding {encoding[:40]!r}", "InvalidInput")
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _answer(send, 413, too_large, "TooLarge")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, 413, too_large, "TooLarge")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if encoding:
            try:
                body = inflate([body], encoding, limit)
            except BodyTooLarge:
                await _answer(send, 413, too_large, "TooLarge")
                return
            except zlib.error:
                await _answer(send, 400, f"the body is not valid {encoding} data", "InvalidInput")
                return
        kept = [
            (k, v) for k, v in scope.get("headers") or [] if k not in (b"content-encoding", b"content-length")
        ]
        scope = {**scope, "headers": [*kept, (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)
