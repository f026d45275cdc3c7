"""``Server-Timing: app;dur=<ms>`` on every answer: the server's own time for the request.

The clock starts when the request reaches the app and stops when the answer's head is sent.
An answer sent in one body (every query result that fits one batch of rows, every JSON
answer) is complete at that moment, so ``dur`` is all of the server's work on it; a result
streamed over several batches sends its head after its first batch, so ``dur`` is its time to
first batch. A client's own round trip minus ``dur`` is transfer and client-side work.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"server-timing"


def header_value(seconds: float) -> bytes:
    return f"app;dur={seconds * 1000:.2f}".encode("ascii")


class ServerTiming:
    """ASGI middleware adding the ``Server-Timing`` header to every HTTP answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((HEADER, header_value(time.perf_counter() - start)))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)
