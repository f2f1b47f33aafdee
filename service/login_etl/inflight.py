"""The messages this process holds, and the one rule about them: every message received is in
exactly one place (being received, held, or kept) until it is deleted or released.

The roles of the worker never track messages themselves; they ask this class, under its one
lock, and the lock is never held across a call to SQS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from login_etl import logs, metrics
from login_etl.messages import Received
from login_etl.pipeline import Outcome
from login_etl.queue import Queue, QueueError

log = logs.get("login_etl.inflight")


@dataclass
class Held:
    message: Received
    extended_at: float


@dataclass
class Totals:
    """Counts over the worker's life: numbers only, so a daemon's memory does not grow."""

    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    not_deleted: int = 0
    left_in_queue: int = 0

    def add(self, outcome: Outcome) -> None:
        self.stored += outcome.stored
        self.duplicates += outcome.duplicates
        self.rejected += len(outcome.rejected)
        self.not_deleted += len(outcome.not_deleted)
        self.left_in_queue += len(outcome.left_in_queue)


class InFlight:
    """Held: received and not settled yet. Kept (--keep-messages): settled but not deleted,
    kept invisible by the heartbeat so they are not received again and again towards
    maxReceiveCount, and released at exit.

    Both are keyed by receipt handle: after a visibility lapse the same message id can be held
    twice (two receives), and each copy must be extended, settled and released itself.
    """

    def __init__(self, source: Queue, *, keep_settled: bool = False) -> None:
        self.source = source
        self.keep_settled = keep_settled
        self.totals = Totals()
        self._held: dict[str, Held] = {}
        # Computed when scraped: nothing on the hot path.
        metrics.OLDEST_IN_HAND.set_function(self.oldest_age)
        self._kept: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._receive_ended = threading.Condition(self._lock)
        # Receives in progress (a token each): SQS has hidden their messages, nobody holds them
        # yet.
        self._receiving: set[object] = set()
        # Receives that brought messages, ever, and empty ones since the last that did not.
        self._receives = 0
        self._empty_receives = 0

    def receive(self, wait: int, visibility: int) -> list[Received]:
        """Receive and hold in one step: `quiet` must never see messages SQS has hidden that
        nobody holds (--until-empty would end and release them unstored)."""
        token = object()
        with self._lock:
            self._receiving.add(token)
        try:
            received = self.source.receive(wait, visibility)
            with self._lock:
                self._empty_receives = 0 if received else self._empty_receives + 1
                self._receives += bool(received)
                self._hold(received)
            return received
        finally:
            with self._lock:
                self._receiving.discard(token)
                self._receive_ended.notify_all()

    def hold(self, messages: Sequence[Received]) -> None:
        with self._lock:
            self._hold(messages)

    def _hold(self, messages: Sequence[Received]) -> None:
        now = time.monotonic()
        for message in messages:
            self._held[message.receipt_handle] = Held(message, now)
        metrics.IN_FLIGHT.set(len(self._held))

    def settled(self, messages: Sequence[Received], outcome: Outcome) -> None:
        """Committed (and deleted, unless kept): no longer ours to extend or release."""
        with self._lock:
            now = time.monotonic()
            for m in messages:
                held = self._held.pop(m.receipt_handle, None)
                if self.keep_settled:
                    self._kept[m.receipt_handle] = Held(m, held.extended_at if held else now)
            metrics.IN_FLIGHT.set(len(self._held))
            self.totals.add(outcome)

    def release(self, messages: Sequence[Received], why: str,
                deadline: float | None = None) -> tuple[int, int]:
        """Give back at visibility 0 (redelivered at once instead of after the timeout) those of
        `messages` still held or kept: one already settled or released is not ours any more.
        Returns how many were given back and how many SQS did not take."""
        with self._lock:
            mine = [m for m in messages if self._held.pop(m.receipt_handle, None)
                    or self._kept.pop(m.receipt_handle, None)]
            metrics.IN_FLIGHT.set(len(self._held))
        if not mine:
            return 0, 0
        # At shutdown, within its bound: what is left returns after its timeout anyway.
        try:
            failed = self.source.change_visibility(mine, 0, deadline=deadline)
        except QueueError as exc:
            log.warning("release_failed", messages=len(mine), reason=why, error=str(exc))
            return 0, len(mine)
        return len(mine) - len(failed), len(failed)

    def due(self, older_than: float) -> list[Held]:
        """Held and kept messages last extended `older_than` seconds ago or more: held first,
        as they are the ones still to be stored."""
        now = time.monotonic()
        with self._lock:
            return [h for held in (self._held, self._kept) for h in held.values()
                    if now - h.extended_at > older_than]

    def extended(self, due: Sequence[Held], failed: set[str], at: float) -> None:
        """Failures are matched by receipt handle, so a stale copy's failure leaves the live
        copy of the same id extended; a failed one is due again at the next beat."""
        with self._lock:
            for h in due:
                if h.message.receipt_handle not in failed:
                    h.extended_at = at

    def all_held(self) -> list[Received]:
        with self._lock:
            return [h.message for held in (self._held, self._kept) for h in held.values()]

    def oldest_age(self) -> float:
        """Seconds since the oldest held message was sent; 0 when none is held."""
        with self._lock:
            oldest = min((h.message.sent_timestamp_ms for h in self._held.values()), default=None)
        return 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000)

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def quiet(self, pollers: int) -> int | None:
        """Nothing held, and every poller came back empty: a mark for `still_quiet` (the
        receives so far), else None. Receives in progress are settled by `still_quiet`."""
        with self._lock:
            if self._held or self._empty_receives < pollers:
                return None
            return self._receives

    def still_quiet(self, mark: int, timeout: float) -> bool:
        """No receive brought messages since `mark`, counting those in progress now, which
        are waited for (up to `timeout`). Receives that start later only find what was sent
        after the caller's look at the queue; waiting for a moment with none in progress
        instead would never come on an endpoint whose calls take as long as the pollers'
        pause between them."""
        with self._lock:
            pending = set(self._receiving)
            if not self._receive_ended.wait_for(
                    lambda: pending.isdisjoint(self._receiving), timeout):
                return False
            return mark == self._receives and not self._held
