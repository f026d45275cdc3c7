"""Real Celery workers in subprocesses, on the machine's Redis and RabbitMQ."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

BROKERS = {
    "redis": "redis://127.0.0.1:6379/9",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
}


def worker_env(database_url: str, broker: str, queue: str, **settings: object) -> dict[str, str]:
    """The environment of a worker; ``settings`` (e.g. ``visibility_timeout=5``) become
    ``MATENGINE_*`` variables, anything not named keeps its default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATENGINE_")}
    env.update(MATENGINE_DATABASE_URL=database_url, MATENGINE_BROKER_URL=broker, MATENGINE_QUEUE=queue)
    env.update({f"MATENGINE_{k.upper()}": str(v) for k, v in settings.items()})
    # uploads read only under the source roots: the tests' one, configured explicitly
    env["MATENGINE_SOURCE_ROOTS"] = os.environ.get("MATENGINE_SOURCE_ROOTS", "")
    return env


class Worker:
    def __init__(self, env: dict[str, str], concurrency: int = 2):
        # the default node name, QUEUE.PID@HOST, names the leases this worker takes
        self.queue = env["MATENGINE_QUEUE"]
        # the worker's log goes to a file, never to a pipe nobody reads: a worker that logs
        # more than a pipe holds (64 KiB of retries while PostgreSQL restarts) would block in
        # its logging call, heartbeat thread included, and look dead or stuck
        self.log = tempfile.NamedTemporaryFile(prefix="matengine-worker-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "matengine",
                "worker",
                "--concurrency",
                str(concurrency),
                "--loglevel",
                "WARNING",
            ],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def log_tail(self, size: int = 20_000) -> str:
        """The last ``size`` bytes of the worker's log (for a failing test's message)."""
        path = Path(self.log.name)
        data = path.read_bytes() if path.exists() else b""
        return data[-size:].decode(errors="replace")

    @property
    def node(self) -> str:
        import socket

        return f"{self.queue}.{self.proc.pid}@{socket.gethostname()}"

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes: no chance to ack or clean up."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            self.kill()


FAST_REDELIVERY = {"visibility_timeout": 5}


@contextmanager
def broker_settings(database_url: str, broker: str, settings: dict[str, object] | None = None):
    """Point this process's settings at ``broker`` with a queue of its own. ``settings`` go
    to this process and the workers alike (default: a 5 s visibility timeout; pass ``{}``
    for the defaults a user gets)."""
    from matengine.config import _overrides, configure, get_settings

    settings = FAST_REDELIVERY if settings is None else settings
    queue = f"matengine_test_{uuid.uuid4().hex[:8]}"
    saved = dict(_overrides)
    configure(broker_url=broker, queue=queue, database_url=database_url, **settings)
    try:
        yield worker_env(database_url, broker, queue, **settings)
    finally:
        _overrides.clear()
        _overrides.update(saved)
        get_settings.cache_clear()


def wait_until(predicate, timeout: float = 60, poll: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError("condition not met in time")
