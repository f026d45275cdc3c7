"""The metadata cache on its own: entries live their time, failures are not kept, and a value
loaded while a change cleared the cache is not kept either."""

from __future__ import annotations

import time

import pytest

from matengine.metadata_cache import MetadataCache


def test_a_value_is_kept_for_its_lifetime_then_read_again():
    cache = MetadataCache()
    loads = []

    def load():
        loads.append(1)
        return len(loads)

    assert cache.get("k", load, 0.2) == 1
    assert cache.get("k", load, 0.2) == 1
    time.sleep(0.25)
    assert cache.get("k", load, 0.2) == 2


def test_no_lifetime_means_no_cache():
    cache = MetadataCache()
    values = iter(range(10))
    assert [cache.get("k", lambda: next(values), 0) for _ in range(3)] == [0, 1, 2]


def test_a_failed_load_is_not_kept():
    cache = MetadataCache()

    def fail():
        raise LookupError("gone")

    with pytest.raises(LookupError):
        cache.get("k", fail, 30)
    assert cache.get("k", lambda: "back", 30) == "back"


def test_a_value_loaded_while_the_cache_was_cleared_is_not_kept():
    """A reader that loaded before a change committed must not keep what it read."""
    cache = MetadataCache()

    def load_during_a_change():
        cache.clear()  # a write to a cached table, while this load ran
        return "old"

    assert cache.get("k", load_during_a_change, 30) == "old"
    assert cache.get("k", lambda: "new", 30) == "new"


def test_clear_drops_every_entry_and_peek_never_loads():
    cache = MetadataCache()
    cache.get("a", lambda: 1, 30)
    assert cache.peek("a") == (True, 1)
    cache.clear()
    assert cache.peek("a") == (False, None)
