"""Server settings of the embedded PostgreSQL, sized to the machine (docs/operations.md,
"The embedded server's settings").

PostgreSQL's stock settings (128 MB of shared buffers, 1 GB of WAL between checkpoints) are
sized for a machine of twenty years ago. A version build, an ingest or an update-roots of
millions of rows then reads its indexes through the kernel's page cache and checkpoints every
few seconds, writing a full image of every page it touches again after each checkpoint; a
live insert's commit waits behind those writes. The embedded server is ours to configure,
so it gets the settings a DBA would give a database server on this machine (the values of
common tuning guides: a quarter of the RAM for shared buffers, half for the planner's cache
estimate, checkpoints every 15 minutes or 4-16 GB of WAL, as the disk affords). Not
``wal_compression``: the embedded build has only pglz, which made every random update
(update-roots, ingest) 4-5x slower.

An external server (``--database-url``) is the operator's: nothing here touches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
GIB = 2**30

CONF_NAME = "matengine.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_NAME}'"


@dataclass(frozen=True)
class Machine:
    """What the settings are sized from."""

    ram_bytes: int
    cpus: int
    # free space where the data directory lives (0: unknown); WAL between checkpoints uses it
    disk_free_bytes: int = 0


def _mb(n: int) -> str:
    return f"{max(1, n // MIB)}MB"


def tuned_settings(machine: Machine) -> dict[str, str]:
    """PostgreSQL settings for a server that has ``machine`` (mostly) to itself.

    Shared buffers: a quarter of the RAM, between 128 MB (the stock value) and 8 GB (past
    which the kernel's cache serves as well). The rest is the planner's cache estimate
    (half the RAM), checkpoint spacing, and parallel index builds that fit the cores."""
    ram = max(machine.ram_bytes, 512 * MIB)
    step = 128 * MIB  # whole multiples, so the value reads as set (5888MB, not 6026MB)
    shared = min(max(ram // 4 // step * step, step), 8 * GIB)
    return {
        "shared_buffers": _mb(shared),
        "effective_cache_size": _mb(ram // 2),
        "work_mem": _mb(min(max(ram // 512, 4 * MIB), 64 * MIB)),
        "max_wal_size": _max_wal_size(ram, machine.disk_free_bytes),
        "min_wal_size": "1GB" if ram >= 4 * GIB else "80MB",
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "random_page_cost": "1.1",
        # a version's index step builds two indexes side by side (``inline_workers``): each
        # gets half the cores, its leader included; more processes than cores only made the
        # builds slower and live inserts wait longer (docs/operations.md)
        "max_parallel_maintenance_workers": str(max(0, min(4, machine.cpus // 2 - 1))),
    }


def _max_wal_size(ram: int, disk_free: int) -> str:
    """WAL between checkpoints. After a checkpoint every page's first change writes the whole
    page to the WAL; a version build at 10M rows rewrites rows all over the store, so with 4 GB
    it checkpointed every few builds and wrote mostly page images, which live commits queued
    behind (p99 128 ms; 50 ms with 16 GB, docs/versions.md). So as much as the disk affords,
    in coarse steps so that a start does not change it for a few GB more or less of free
    space: 16 GB from 64 GB free, 8 GB from 32 GB, else 4 GB (1 GB on a small machine)."""
    if ram < 4 * GIB:
        return "1GB"
    if disk_free >= 64 * GIB:
        return "16GB"
    if disk_free >= 32 * GIB:
        return "8GB"
    return "4GB"


def render_conf(settings: dict[str, str]) -> str:
    """The include file's text (the values are ours, never a caller's: quoted as literals)."""
    lines = ["# written by matengine (matengine/db/server_tuning.py); ALTER SYSTEM overrides it"]
    lines += [f"{name} = '{value}'" for name, value in sorted(settings.items())]
    return "\n".join(lines) + "\n"


def with_include(postgresql_conf: str) -> str:
    """``postgresql.conf`` with the include of our file as its last line (once)."""
    if INCLUDE_LINE in postgresql_conf.splitlines():
        return postgresql_conf
    sep = "" if postgresql_conf.endswith("\n") or not postgresql_conf else "\n"
    return f"{postgresql_conf}{sep}{INCLUDE_LINE}\n"


def this_machine(data_dir: Path | None = None) -> Machine:
    """This machine; ``data_dir`` (or its nearest existing parent) for the free disk space."""
    import os
    import shutil

    import psutil

    free = 0
    if data_dir is not None:
        place = Path(data_dir)
        while not place.exists() and place != place.parent:
            place = place.parent
        try:
            free = shutil.disk_usage(place).free
        except OSError:
            free = 0
    return Machine(int(psutil.virtual_memory().total), os.cpu_count() or 1, free)
