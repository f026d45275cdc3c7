"""The query deadlines' one timer thread: an armed deadline fires once, a disarmed one never."""

from __future__ import annotations

import threading
import time

from matengine.query.watchdog import Watchdog


def test_an_armed_deadline_fires_after_its_time():
    dog = Watchdog()
    fired = threading.Event()
    t0 = time.monotonic()
    dog.arm(0.1, fired.set)
    assert fired.wait(2)
    assert time.monotonic() - t0 >= 0.1


def test_a_disarmed_deadline_never_fires_and_later_ones_still_do():
    dog = Watchdog()
    early, late = threading.Event(), threading.Event()
    dog.arm(0.05, early.set).disarm()
    dog.arm(0.15, late.set)
    assert late.wait(2)
    assert not early.is_set()


def test_a_nearer_deadline_armed_later_wakes_the_thread():
    dog = Watchdog()
    far, near = threading.Event(), threading.Event()
    dog.arm(30, far.set)
    t0 = time.monotonic()
    dog.arm(0.05, near.set)
    assert near.wait(2) and time.monotonic() - t0 < 1
    assert not far.is_set()


def test_many_disarmed_deadlines_do_not_pile_up():
    dog = Watchdog()
    for _ in range(10_000):
        dog.arm(60, lambda: None).disarm()
    assert len(dog._heap) <= 4097
