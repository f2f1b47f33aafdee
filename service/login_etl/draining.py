"""--until-empty: drain the queue and exit. Everything the mode changes is here: how long the
pollers wait on a receive, how often the worker checks for the end, and the end check itself.
(InFlight counts the receives the check reads, under its lock.)
"""

from __future__ import annotations

from login_etl.handoff import Handoff, Inbox
from login_etl.inflight import InFlight
from login_etl.queue import MAX_BATCH, Queue

# A full receive says more is there: wait this long on the next, instead of a short poll.
RECEIVE_WAIT_SECONDS = 1
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

    @staticmethod
    def wait_after(received: int) -> int:
        """The long-poll wait of a poller's next receive, given what its last one brought."""
        return RECEIVE_WAIT_SECONDS if received == MAX_BATCH else 0

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
