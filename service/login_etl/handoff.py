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
from collections import deque
from collections.abc import Callable, Sequence

from login_etl.pipeline import Item


# The inbox's last entry at shutdown: the batcher cuts what it has and ends.
class _End(enum.Enum):
    STOP = "stop"


STOP = _End.STOP
Entry = Sequence[Item] | _End


def inbox(pollers: int) -> Inbox:
    return Inbox(pollers * 4)


class Inbox:
    """The parsed lists of the pollers on their way to the batcher, at most `size` waiting: a
    full inbox stops the receiving.

    The batcher is woken only when it has something to do: the first list of its window (the
    window's clock starts), enough messages to fill its batch, a full inbox, or STOP. A put in
    between wakes nobody: one wake-up of the batcher per receive was a sixth of the worker's
    context switches.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: deque[Entry] = deque()
        self._messages = 0
        self._stopping = False
        # How many messages waiting make a put wake the batcher (set by each take()).
        self._wanted = 1
        lock = threading.Lock()
        self._not_full = threading.Condition(lock)
        self._due = threading.Condition(lock)

    def put(self, entry: Entry, timeout: float | None = None) -> None:
        """Raises queue.Full when the inbox stays full for `timeout` seconds."""
        with self._not_full:
            if not self._not_full.wait_for(lambda: len(self._entries) < self.size, timeout):
                raise stdqueue.Full
            self._entries.append(entry)
            if entry is STOP:
                self._stopping = True
            else:
                self._messages += len(entry)
            if self._ready():
                self._due.notify()

    def take(self, wanted: int, timeout: float) -> list[Entry]:
        """What waits, up to and including STOP, once `wanted` messages are there, the inbox
        is full or STOP came; after `timeout` seconds, what there is (maybe nothing)."""
        with self._due:
            self._wanted = wanted
            self._due.wait_for(self._ready, timeout)
            taken: list[Entry] = []
            while self._entries and taken[-1:] != [STOP]:
                taken.append(self._pop())
            if taken:
                self._not_full.notify_all()
            return taken

    def get_nowait(self) -> Entry:
        with self._not_full:
            if not self._entries:
                raise stdqueue.Empty
            entry = self._pop()
            self._not_full.notify()
            return entry

    def empty(self) -> bool:
        with self._not_full:
            return not self._entries

    def _pop(self) -> Entry:
        """The first entry, its messages no longer counted (the lock held)."""
        entry = self._entries.popleft()
        if entry is not STOP:
            self._messages -= len(entry)
        return entry

    def _ready(self) -> bool:
        return (self._stopping or self._messages >= self._wanted
                or len(self._entries) >= self.size)


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
