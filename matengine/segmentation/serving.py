"""Run a FastAPI app under uvicorn in a background thread (tests, benchmarks, demos).

The server binds 127.0.0.1 on a free port chosen by the OS; ``url`` is its base URL.
Real HTTP end to end -- nothing is mocked.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from matengine.segmentation.base import Segmentation
from matengine.segmentation.server import make_pcg_router


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadedServer:
    """``with ThreadedServer(app) as srv: httpx.get(srv.url + "/...")``."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def pcg_app(resolve: Callable[[str], Segmentation]) -> FastAPI:
    """A minimal app serving only the PCG-compatible routes."""
    app = FastAPI(title="matengine chunkedgraph")
    app.include_router(make_pcg_router(resolve))
    return app
