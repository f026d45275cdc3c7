"""Talking to the broker from outside a worker: the Celery configuration matengine uses, and
client apps that send tasks and control messages. Apart from :mod:`celery_app` (the tasks), so
that submitting a run does not import the tasks, and the tasks' scheduler can submit runs
without an import cycle."""

from __future__ import annotations

from celery import Celery

from matengine.config import Settings, get_settings


def configure(settings: Settings | None, target: Celery) -> Celery:
    """Apply settings to a Celery app: the worker-side one (``celery_app.app``) or a client."""
    settings = settings or get_settings()
    target.conf.update(
        broker_url=settings.broker_url,
        result_backend=settings.result_backend,
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        broker_connection_retry_on_startup=True,
        # a chunk takes seconds to minutes; redelivery of an unacked message (Redis) waits this long
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_expires=3600,
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "matengine-scheduler-tick": {"task": "matengine.tick", "schedule": 60.0},
        },
    )
    return target


_clients: dict[tuple[str | None, str | None, str], Celery] = {}


def client(settings: Settings | None = None) -> Celery:
    """An app for sending tasks and control messages with these settings. Kept apart from the
    worker-side ``app``, whose connection pool is fixed at first use, so one process can talk
    to several brokers (tests, tools)."""
    settings = settings or get_settings()
    key = (settings.broker_url, settings.result_backend, settings.queue)
    if key not in _clients:
        _clients[key] = configure(settings, Celery("matengine-client", set_as_current=False))
    return _clients[key]


def send(name: str, *args: object, settings: Settings | None = None) -> None:
    """Enqueue task ``name`` (``matengine.start_step`` …) from outside a worker."""
    settings = settings or get_settings()
    client(settings).send_task(name, args=args, queue=settings.queue)
