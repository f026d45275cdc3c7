"""One timer thread for every query's deadline.

A query arms a deadline before each wait for rows and disarms it when the rows arrive; the
deadline almost never fires. A ``threading.Timer`` per wait would start a thread per batch
(a measurable part of a small query's time); here one daemon thread sleeps until the nearest
armed deadline. A deadline that fires runs its callback on a thread of its own, so a slow
callback (cancelling a query on a busy server) delays no other deadline.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Deadline:
    """An armed deadline; :meth:`disarm` it when the wait it guards is over."""

    __slots__ = ("callback", "disarmed")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.disarmed = False

    def disarm(self) -> None:
        self.disarmed = True


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, callback: Callable[[], None]) -> Deadline:
        """Run ``callback`` in ``seconds`` unless the returned deadline is disarmed first."""
        deadline = Deadline(callback)
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="matengine-watchdog", daemon=True)
                self._thread.start()
            if len(self._heap) > 4096:  # waits end long before their deadline: drop those
                self._heap = [e for e in self._heap if not e[2].disarmed]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._seq), deadline))
            if self._heap[0][2] is deadline:
                self._cond.notify()
        return deadline

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].disarmed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                due = self._heap[0][0] - time.monotonic()
                if due > 0:
                    self._cond.wait(due)
                    continue
                _, _, deadline = heapq.heappop(self._heap)
            if not deadline.disarmed:
                threading.Thread(target=deadline.callback, daemon=True).start()


WATCHDOG = Watchdog()
