"""Writeback pacing: keep the data files a bulk workflow writes from piling up dirty in the
kernel's page cache, so a live insert's commit never queues behind a flush of hundreds of MB.

Why (docs/operations.md, "Live inserts during bulk work"): PostgreSQL writes a new index
outside its shared buffers and fsyncs the whole file when the build ends (the wait event
``DataFileImmediateSync``). The kernel starts writing dirty pages on its own only past
``vm.dirty_background_ratio`` (10% of the RAM: 2.4 GB here), so at the end of a build of a
10M-row index the fsync sends ~300 MB at once, and every commit's WAL fsync (``WalSync``) waits
behind it: live inserts took up to 490 ms during a version's index builds. COPY (through its
small ring of buffers) leaves dirty pages the same way for the next checkpoint's fsync.

While a workflow chunk that writes this way runs (``Step.paces_writeback``), a thread asks
the kernel every ``interval`` seconds to start writing the files of the database that changed
in the last few seconds (``sync_file_range(SYNC_FILE_RANGE_WRITE)``, the call PostgreSQL's own
``*_flush_after`` settings use; it does not wait for the disk). The end-of-build fsync then
finds little left to write.

It runs only where the server's data directory is a local folder this process can read
(the embedded default; a server on this machine reached as a superuser); elsewhere, and on
systems without ``sync_file_range``, it does nothing. ``MATENGINE_WRITEBACK_PACING=false``
turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages, do not wait
INTERVAL = 0.1  # seconds between passes: ~100 ms of writes is what one pass sends
RECENT = 3.0  # a file written within this many seconds is looked at
MIN_BYTES = 1 << 20  # smaller files hold too little to matter


def recent_files(
    directory: Path, now: float, recent: float = RECENT, min_bytes: int = MIN_BYTES
) -> list[Path]:
    """The files directly in ``directory`` of at least ``min_bytes`` modified within
    ``recent`` seconds of ``now`` (relation segments: ``16384``, ``16384.1``, ``16384_fsm``)."""
    out = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:  # dropped between the listing and the stat
            continue
        if st.st_size >= min_bytes and now - st.st_mtime <= recent and entry.is_file(follow_symlinks=False):
            out.append(Path(entry.path))
    return out


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _sync_file_range()


def supported() -> bool:
    return _SYNC_FILE_RANGE is not None


def start_writeback(path: Path) -> bool:
    """Ask the kernel to start writing ``path``'s dirty pages; False if it could not be asked."""
    if _SYNC_FILE_RANGE is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _SYNC_FILE_RANGE(fd, 0, 0, SYNC_FILE_RANGE_WRITE) == 0
    finally:
        os.close(fd)


def pace_once(directory: Path, now: float | None = None) -> int:
    """One pass: writeback started for each recently written file; how many."""
    now = time.time() if now is None else now
    return sum(start_writeback(p) for p in recent_files(directory, now))


class Pacer:
    """A thread that paces one directory while at least one holder is in :meth:`held`."""

    def __init__(self, directory: Path, interval: float = INTERVAL) -> None:
        self.directory, self.interval = directory, interval
        self._holders = 0
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self.passes = 0  # passes made (for tests and the curious)
        self.files = 0  # writebacks started
        self.holds = 0  # blocks that held it

    def _loop(self, stop: threading.Event) -> None:
        # the first pass waits an interval: a chunk shorter than that has nothing to pace
        while not stop.wait(self.interval):
            self.files += pace_once(self.directory)
            self.passes += 1
        self.files += pace_once(self.directory)  # what the last interval wrote

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._holders += 1
            self.holds += 1
            if self._holders == 1:
                self._stop = threading.Event()
                threading.Thread(
                    target=self._loop, args=(self._stop,), name="matengine-writeback", daemon=True
                ).start()
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._stop is not None:
                    self._stop.set()
                    self._stop = None  # the thread ends after its last pass; nobody waits for it


_pacers: dict[Path, Pacer] = {}
_directories: dict[str, Path | None] = {}
_registry_lock = threading.Lock()


def _is_local(engine: Engine) -> bool:
    host = engine.url.host or engine.url.query.get("host")
    if isinstance(host, tuple):
        host = host[0] if host else None
    return host is None or str(host).startswith("/") or str(host) in ("localhost", "127.0.0.1", "::1")


def database_directory(engine: Engine) -> Path | None:
    """The folder of the engine's database's files, if it is on this machine and readable
    (asked once per URL: it needs a superuser or ``pg_read_all_settings``)."""
    key = str(engine.url)
    if key in _directories:
        return _directories[key]
    found: Path | None = None
    if _is_local(engine):
        try:
            with engine.connect() as conn:
                row = conn.execute(
                    text(
                        "SELECT current_setting('data_directory'), oid FROM pg_database "
                        "WHERE datname = current_database()"
                    )
                ).one()
            candidate = Path(row[0]) / "base" / str(row[1])
            if candidate.is_dir() and os.access(candidate, os.R_OK | os.X_OK):
                found = candidate
        except Exception:  # no privilege to read the setting, or the server is elsewhere
            found = None
    _directories[key] = found
    return found


@contextmanager
def pacing(engine: Engine) -> Iterator[None]:
    """Pace the writeback of ``engine``'s database files for the duration of the block."""
    from matengine.config import get_settings

    directory = database_directory(engine) if supported() and get_settings().writeback_pacing else None
    if directory is None:
        yield
        return
    with _registry_lock:
        pacer = _pacers.setdefault(directory, Pacer(directory))
    with pacer.held():
        yield
