"""--until-empty: drain the queue and exit. Everything the mode changes is here: how long the
pollers wait on a receive, how often the worker checks for the end, and the end check itself.
(InFlight counts the receives the check reads, under its lock.)
"""

from __future__ import annotations

import threading
import time

from login_etl.handoff import Handoff, Inbox
from login_etl.inflight import InFlight
from login_etl.queue import Queue, QueueError
from login_etl.sqs.batches import MAX_BATCH

# A full receive says more is there: wait this long on the next, instead of a short poll
# (a short poll samples part of SQS's servers and can come back short of a full 10).
RECEIVE_WAIT_SECONDS = 1
# Near the end of what the queue showed, how often to ask it again: between two looks the
# pollers short-poll, so a drain does not end with each of them sitting out a 1 s long poll
# on an empty queue.
LOOK_SECONDS = 0.25
# Once a receive comes back short of a full 10 the end is near; short polls (this far apart
# when empty) then find it without each poller sitting out a 1 s long poll. The worker looks
# for the end as often.
SHORT_POLL_PAUSE = 0.05
# How long the end check waits for receives in progress (each a short poll or a 1 s long
# poll) before trying again on a later tick.
CONFIRM_SECONDS = 5.0


class UntilEmpty:
    """The drain's rules, for the pollers (`wait_after`) and the worker (`drained`)."""

    first_wait = 0
    pause = SHORT_POLL_PAUSE

    def __init__(self, source: Queue, inflight: InFlight, inbox: Inbox, handoff: Handoff,
                 pollers: int) -> None:
        self.source = source
        self.inflight = inflight
        self.inbox = inbox
        self.handoff = handoff
        self.pollers = pollers
        self._lock = threading.Lock()
        # Messages received so far, and what the last look at the queue implied in all.
        self._received = 0
        self._expected = 0
        self._next_look = 0.0
        self._looking = False

    def wait_after(self, received: int) -> int:
        """The long-poll wait of a poller's next receive, given what its last one brought.

        After a full receive, a long poll while the queue showed more than the pollers' next
        receives can take; past that point it is asked again by one poller (near the end, at
        most every LOOK_SECONDS), and short polls find the end meanwhile. A depth that
        cannot be read keeps the long poll for the poller that asked.
        """
        margin = MAX_BATCH * self.pollers
        with self._lock:
            self._received += received
            if received < MAX_BATCH:
                return 0
            if self._received + margin < self._expected:
                return RECEIVE_WAIT_SECONDS
            if self._looking or time.monotonic() < self._next_look:
                return 0
            self._looking = True
        visible: int | None = None
        try:
            visible = self.source.depth().visible
        except QueueError:
            pass
        finally:
            with self._lock:
                self._looking = False
                if visible is not None:
                    self._expected = self._received + visible
                if visible is None or visible <= margin:
                    self._next_look = time.monotonic() + LOOK_SECONDS
        return 0 if visible is not None and visible <= margin else RECEIVE_WAIT_SECONDS

    def drained(self) -> bool:
        """Nothing held, received, batched or settled, the pollers saw an empty queue, and
        SQS agrees (asked last, and believed only if no receive brought messages meanwhile)."""
        if self.handoff.busy or not self.inbox.empty():
            return False
        mark = self.inflight.quiet(self.pollers)
        if mark is None:
            return False
        try:
            empty = self.source.depth().visible == 0
        except Exception:
            # Not knowing is not empty.
            return False
        return empty and self.inflight.still_quiet(mark, CONFIRM_SECONDS)
