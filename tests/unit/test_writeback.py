"""Writeback pacing (matengine/db/writeback.py): which files a pass picks, that the kernel is
asked, and that one thread paces while any holder is inside."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from matengine.db import writeback
from matengine.db.writeback import MIN_BYTES, Pacer, pace_once, recent_files, start_writeback

linux_only = pytest.mark.skipif(not writeback.supported(), reason="sync_file_range is Linux's")


def _file(folder: Path, name: str, size: int, age: float = 0.0) -> Path:
    path = folder / name
    path.write_bytes(b"\0" * size)
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def test_a_pass_picks_large_recently_written_files_only(tmp_path):
    new_big = _file(tmp_path, "16384", MIN_BYTES)
    _file(tmp_path, "16385", MIN_BYTES - 1)  # too small to matter
    _file(tmp_path, "16386", 2 * MIN_BYTES, age=60)  # written a minute ago: the kernel's by now
    (tmp_path / "16387").mkdir()
    assert recent_files(tmp_path, time.time()) == [new_big]


def test_a_missing_folder_has_no_files():
    assert recent_files(Path("/nonexistent/matengine/base/1"), time.time()) == []


@linux_only
def test_the_kernel_is_asked_to_write_each_picked_file(tmp_path):
    _file(tmp_path, "1", MIN_BYTES)
    _file(tmp_path, "2", 3 * MIN_BYTES)
    assert start_writeback(tmp_path / "1") is True
    assert pace_once(tmp_path) == 2


def test_a_file_that_vanished_is_not_written(tmp_path):
    assert start_writeback(tmp_path / "dropped") is False


@linux_only
def test_one_thread_paces_while_any_holder_is_inside(tmp_path):
    _file(tmp_path, "1", MIN_BYTES)
    pacer = Pacer(tmp_path, interval=0.02)

    def threads() -> int:
        return sum(t.name == "matengine-writeback" and t.is_alive() for t in threading.enumerate())

    before = threads()
    with pacer.held():
        with pacer.held():
            time.sleep(0.1)
            assert threads() == before + 1
        time.sleep(0.05)
        assert threads() == before + 1  # the outer holder still writes
    deadline = time.time() + 2
    while threads() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threads() == before
    assert pacer.passes >= 2 and pacer.files >= 2
