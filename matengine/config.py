"""Settings: environment variables (``MATENGINE_*``), CLI flags, and a TOML file of datastacks.

With no ``database_url`` matengine runs its embedded PostgreSQL (see :mod:`matengine.db.embedded`);
with no ``broker_url`` workflows run on an in-process worker. Production sets both.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_PREFIX = "MATENGINE_"


def _default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("matengine"))


class DatastackConfig(BaseModel):
    """A datastack declared in the TOML config file (``[datastacks.NAME]``)."""

    segmentation_source: str
    voxel_resolution: tuple[float, float, float]
    aligned_volume: str | None = None
    description: str = ""
    # cron-like schedule for periodic materialization, e.g. "0 3 * * *"
    schedule: str | None = None
    days_to_expire: int | None = None
    # periodic ingest + update-roots (no version) that keeps the live tables current
    live_schedule: str | None = None
    # served by the info routes for Neuroglancer and caveclient
    image_source: str | None = None
    viewer_site: str | None = None
    skeleton_source: str | None = None
    synapse_table: str | None = None
    soma_table: str | None = None


class Settings(BaseModel):
    """Every field can be set by ``MATENGINE_<FIELD>`` in the environment; values passed to
    the constructor (CLI flags) win. A plain pydantic model that reads the environment itself:
    pydantic-settings alone took longer to import than the rest of a CLI command's start."""

    model_config = ConfigDict(extra="ignore")

    database_url: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    config: Path | None = None
    home: Path = Field(default_factory=_default_home)
    # bearer token sent to graphene (PyChunkedGraph) servers
    segmentation_token: str | None = None
    # versions: default lifetime and how many valid ones are always kept
    default_days_to_expire: int = 7
    keep_valid_versions: int = 2
    # rows per workflow chunk
    chunk_rows: int = 200_000
    # chunks run side by side by the in-process worker (the embedded default)
    inline_workers: int = 2
    # the in-process worker retries a plan, chunk or finish that meets a transient error
    # (docs/design.md §11) up to this many times, waiting ``inline_retry_wait`` seconds before
    # the first retry and twice as long before each next one (at most a minute)
    inline_retries: int = 8
    inline_retry_wait: float = 2.0
    # maintenance_work_mem for a version's index builds
    index_memory: str = "512MB"
    # while a workflow chunk runs, start the kernel's writeback of the database files it writes
    # every 100 ms, so a live insert's commit never waits behind a build's fsync of hundreds of
    # MB (matengine/db/writeback.py; docs/operations.md, "Live inserts during bulk work")
    writeback_pacing: bool = True
    # seconds before a Redis broker redelivers an unacknowledged task (a killed worker's)
    visibility_timeout: int = 900
    # dead-worker recovery (docs/recovery.md): every worker writes a heartbeat this often; one
    # silent for ``worker_dead_after`` seconds is dead, and a reaper in every worker (and beat)
    # looks every ``reaper_interval`` seconds for tasks held by dead workers and sends them again
    worker_heartbeat: float = 5.0
    worker_dead_after: float = 20.0
    reaper_interval: float = 5.0
    # the Celery queue matengine's tasks go to (one per deployment sharing a broker)
    queue: str = "matengine"
    # how long a command waits for a worker to answer before saying none is online
    worker_wait: float = 8.0
    # query row limit announced to clients; None = no limit
    query_row_limit: int | None = None
    # bounds on the work one request may cause (docs/security.md)
    # seconds a query's SQL may run before PostgreSQL cancels it (the answer is a 503)
    query_timeout: float = 60.0
    # compress query results (zstd/lz4 inside the Arrow buffers, as the client's Accept-Encoding
    # asks) for callers on this machine too; off: a loopback transfer costs less than
    # compressing and decompressing (docs/operations.md, "Query serving")
    query_compress_loopback: bool = False
    # seconds the API keeps a token, a table's permissions and a version's row between requests
    # (this process's own changes clear it at once; 0: no cache; docs/operations.md)
    metadata_cache_seconds: float = 1.0
    # request body bytes, after any gzip/deflate Content-Encoding is inflated
    max_body_bytes: int = 16 * 1024 * 1024
    # values in one filter_in_dict / filter_notin_dict list
    max_filter_values: int = 100_000
    # characters of a regex filter; of any other text value in a request
    max_regex_length: int = 256
    max_text_length: int = 65_536
    # where bulk upload and export may read and write: comma-separated bucket prefixes
    # (gs://bucket/prefix, s3://bucket, https://host/path) and local folders; empty admits
    # only the embedded demo's folder
    source_roots: str = ""
    # hosts (names or addresses) that sources may name although they resolve to loopback,
    # link-local or private addresses (e.g. a local bucket emulator); comma-separated
    source_private_hosts: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        given = dict(data) if isinstance(data, dict) else {}
        for name in cls.model_fields:
            value = os.environ.get(ENV_PREFIX + name.upper())
            if value is not None and name not in given:
                given[name] = value
        return given

    def datastacks(self) -> dict[str, DatastackConfig]:
        """Datastacks declared in the TOML file named by ``config`` (empty if none)."""
        if self.config is None:
            return {}
        raw: dict[str, Any] = tomllib.loads(Path(self.config).read_text())
        return {
            name: DatastackConfig.model_validate(body) for name, body in raw.get("datastacks", {}).items()
        }


_overrides: dict[str, Any] = {}


def configure(**overrides: Any) -> None:
    """Set values from CLI flags; they win over the environment."""
    _overrides.update({k: v for k, v in overrides.items() if v is not None})
    get_settings.cache_clear()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(**_overrides)
