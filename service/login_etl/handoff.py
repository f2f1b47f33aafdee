"""The two bounded queues between the worker's threads: the inbox (pollers -> batcher, parsed
lists, STOP at its end on shutdown) and the handoff (batcher -> settlers, one slot a settler),
and the batch window the batcher cuts by. Bounded so that a slow database stops the receiving
instead of piling messages up in memory.
"""

from __future__ import annotations

import enum
import queue as stdqueue
import threading
import time
from collections.abc import Callable, Sequence

from login_etl.pipeline import Item


# The inbox's last entry at shutdown: the batcher cuts what it has and ends.
class _End(enum.Enum):
    STOP = "stop"


STOP = _End.STOP
Inbox = stdqueue.Queue[Sequence[Item] | _End]


def inbox(pollers: int) -> Inbox:
    return stdqueue.Queue(maxsize=pollers * 4)


class BatchWindow:
    """Cuts a batch when it holds `size` messages or its first message has waited `window` s."""

    IDLE_TIMEOUT = 0.5

    def __init__(self, size: int, window: float) -> None:
        self.size = size
        self.window = window
        self.items: list[Item] = []
        self._cut_at = float("inf")

    def add(self, items: Sequence[Item], now: float) -> None:
        if not self.items:
            self._cut_at = now + self.window
        self.items.extend(items)

    def ready(self, now: float) -> bool:
        return bool(self.items) and (len(self.items) >= self.size or now >= self._cut_at)

    def timeout(self, now: float) -> float:
        """How long the batcher may wait for more before the window closes."""
        return self.IDLE_TIMEOUT if not self.items else max(0.0, self._cut_at - now)

    def cut(self) -> list[Item]:
        batch, self.items, self._cut_at = self.items, [], float("inf")
        return batch


class Handoff:
    """Batches on their way from the batcher to the settlers, one slot per settler: with every
    slot taken the batcher waits, the inbox fills and the pollers stop receiving."""

    def __init__(self, slots: int) -> None:
        self._batches: stdqueue.Queue[list[Item] | None] = stdqueue.Queue()
        self._slots = threading.BoundedSemaphore(slots)
        self._idle = threading.Condition()
        self._busy = 0

    @property
    def busy(self) -> int:
        """Batches given out and not done yet."""
        return self._busy

    def submit(self, batch: list[Item], waiting: Callable[[], None]) -> None:
        while not self._slots.acquire(timeout=1.0):
            waiting()
        with self._idle:
            self._busy += 1
        self._batches.put(batch)

    def take(self) -> list[Item] | None:
        """The next batch, or None: the settler ends."""
        return self._batches.get()

    def done(self) -> None:
        with self._idle:
            self._busy -= 1
            if not self._busy:
                self._idle.notify_all()
        self._slots.release()

    def wait_idle(self, until: float) -> bool:
        """Wait until every batch given out is done, or the monotonic time `until`."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy,
                                       max(0.0, until - time.monotonic()))

    def close(self, settlers: int) -> None:
        """Idle settlers end; one stuck in the database is a daemon thread and dies with us."""
        for _ in range(settlers):
            self._batches.put(None)
