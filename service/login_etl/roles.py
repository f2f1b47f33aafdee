"""The threads of the worker, one class per role (the dramatiq split of consumers and workers):

  Poller        long-polls SQS, parses + masks each message, hands lists to the batcher through
                the bounded inbox (handoff.py)
  Batcher       cuts batches by size or time window and gives each to a settler
  Settler       runs Pipeline.settle (commit, then delete); on an outage it keeps its batch,
                probes until the dependency is back, and settles it again
  Heartbeat     extends the visibility of messages held too long
  Housekeeping  queue depth gauges, a database ping when idle, ledger pruning

Each role takes what it uses as keyword arguments; what they all share is the Shutdown
(shutdown.py), InFlight (no role tracks messages itself) and Health. A role's unexpected
exception ends its turn, not its thread (see Role).
"""

from __future__ import annotations

import contextlib
import queue as stdqueue
import threading
import time
from collections import deque
from collections.abc import Sequence

from login_etl import ledger, logs, metrics
from login_etl.draining import UntilEmpty
from login_etl.handoff import STOP, BatchWindow, Handoff, Inbox
from login_etl.health import Health
from login_etl.inflight import InFlight
from login_etl.masking import Masker
from login_etl.messages import Received, parse
from login_etl.pgerrors import StoreError
from login_etl.pipeline import Item, Outcome, Pipeline
from login_etl.queue import Queue, QueueError
from login_etl.shutdown import Shutdown
from login_etl.store import Store

log = logs.get("login_etl.roles")

# The longest pause between attempts while a dependency is down: its return is noticed (and
# committing resumes) within about this long, whatever the outage lasted.
OUTAGE_PAUSE_SECONDS = 1.0
# A role failing this often within the window is not going to carry on: the worker halts and
# exits non-zero, for the orchestrator to start a fresh process.
FAILURE_LIMIT = 5
FAILURE_WINDOW_SECONDS = 60.0
FAILURE_PAUSE_SECONDS = 1.0


class Database:
    """Whether the database answers, as the settlers and pollers last saw it: while it is down
    the pollers take no messages they cannot store."""

    def __init__(self, store: Store, health: Health) -> None:
        self.store = store
        self.health = health
        self.up = threading.Event()
        self.up.set()

    def down(self, exc: Exception) -> None:
        if self.up.is_set():
            log.warning("database_unavailable", error=str(exc))
        self.up.clear()
        self.health.db_ok = False

    def back(self) -> None:
        if not self.up.is_set():
            log.info("database_recovered")
            self.up.set()
        self.health.db_ok = True

    def probe(self) -> None:
        if self.store.ping():
            self.back()


class Role:
    """One thread of the worker, turn after turn until it ends.

    An unexpected exception (a bug: every expected failure is handled inside the turn) ends the
    turn, not the thread: it is logged once, by type only (its text can quote a value), the
    messages the role had in hand are released, and the role carries on. Failing
    FAILURE_LIMIT times within FAILURE_WINDOW_SECONDS, it halts the worker instead.
    """

    def __init__(self, name: str, *, shutdown: Shutdown, inflight: InFlight,
                 health: Health) -> None:
        self.name = name
        self.shutdown = shutdown
        self.inflight = inflight
        self.health = health
        self.ended = False
        # The messages of the turn in progress that no one else has: released if it fails.
        self.holding: list[Received] = []
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._failures: deque[float] = deque(maxlen=FAILURE_LIMIT)

    def start(self) -> None:
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, until: float) -> None:
        if self.thread.ident is not None:
            self.thread.join(max(0.0, until - time.monotonic()))

    def running(self) -> bool:
        return not self.ended and not self.shutdown.stopping()

    def turn(self) -> None:
        raise NotImplementedError

    def let_go(self) -> list[Received]:
        """Hand over what this role holds (after a failed turn)."""
        messages, self.holding = self.holding, []
        return messages

    def _main(self) -> None:
        while self.running():
            try:
                self.turn()
            except Exception as exc:
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        messages = self.let_go()
        log.error("role_failed", role=self.name, error=type(exc).__name__, messages=len(messages))
        self.release(messages, "role_failed")
        now = time.monotonic()
        self._failures.append(now)
        if (len(self._failures) == FAILURE_LIMIT
                and now - self._failures[0] < FAILURE_WINDOW_SECONDS):
            self.shutdown.halt(f"{self.name} failed {FAILURE_LIMIT} times within "
                               f"{FAILURE_WINDOW_SECONDS:.0f} s")
            self.ended = True
            return
        self.shutdown.pause(FAILURE_PAUSE_SECONDS)

    def release(self, messages: Sequence[Received], why: str) -> None:
        released, failed = self.inflight.release(messages, why, self.shutdown.deadline)
        if released or failed:
            log.info("messages_released", messages=released + failed, failed=failed, reason=why)


class Poller(Role):
    def __init__(self, name: str, *, shutdown: Shutdown, inflight: InFlight, health: Health,
                 database: Database, inbox: Inbox, handoff: Handoff, masker: Masker,
                 wait_seconds: int, visibility_timeout: int, envelopes: bool,
                 until_empty: UntilEmpty | None = None) -> None:
        super().__init__(name, shutdown=shutdown, inflight=inflight, health=health)
        self.database = database
        self.inbox = inbox
        self.handoff = handoff
        self.masker = masker
        self.visibility_timeout = visibility_timeout
        self.envelopes = envelopes
        self.until_empty = until_empty
        self.wait = until_empty.first_wait if until_empty else wait_seconds
        self.backoff = OUTAGE_PAUSE_SECONDS / 4

    def turn(self) -> None:
        self.health.tick(self.name)
        if not self.database.up.wait(1.0):
            # The database is down: take no messages we cannot store. A settler riding out
            # the outage says when it is back; with none busy, look for ourselves.
            if not self.handoff.busy:
                self.database.probe()
            return
        try:
            received = self.inflight.receive(self.wait, self.visibility_timeout)
        except QueueError as exc:
            if not exc.retryable:
                self.shutdown.halt(f"receive failed and will not heal by retrying: {exc}")
                self.ended = True
                return
            if self.health.sqs_ok:
                log.warning("sqs_unavailable", error=str(exc), retry_in_seconds=self.backoff)
            self.health.sqs_ok = False
            self.shutdown.wait(self.backoff)
            self.backoff = min(self.backoff * 2, OUTAGE_PAUSE_SECONDS)
            return
        if not self.health.sqs_ok:
            log.info("sqs_recovered")
        self.health.sqs_ok, self.backoff = True, OUTAGE_PAUSE_SECONDS / 4
        if self.until_empty:
            self.wait = self.until_empty.wait_after(len(received))
        if not received:
            if self.until_empty:
                self.shutdown.wait(self.until_empty.pause)
            return
        self.holding = received
        items = [(m, parse(m, self.masker, self.envelopes)) for m in received]
        # Bounded hand-off: a full inbox (a slow database) stops the receiving.
        while not self.shutdown.stopping():
            try:
                self.inbox.put(items, timeout=1.0)
                self.holding = []
                return
            except stdqueue.Full:
                self.health.tick(self.name)
        self.release(self.let_go(), "shutdown")


class Batcher(Role):
    def __init__(self, name: str, *, shutdown: Shutdown, inflight: InFlight, health: Health,
                 inbox: Inbox, handoff: Handoff, window: BatchWindow) -> None:
        super().__init__(name, shutdown=shutdown, inflight=inflight, health=health)
        self.inbox = inbox
        self.handoff = handoff
        self.window = window

    def running(self) -> bool:
        """Until the inbox's STOP: what is in the window at shutdown is still settled."""
        return not self.ended

    def let_go(self) -> list[Received]:
        return [m for m, _ in self.window.cut()] + super().let_go()

    def turn(self) -> None:
        self.health.tick(self.name)
        window = self.window
        # Woken for the first list of a window, for enough to fill it, or by its end.
        wanted = window.size - len(window.items) if window.items else 1
        for got in self.inbox.take(wanted, window.timeout(time.monotonic())):
            if got is STOP:
                if window.items:
                    self._submit(window.cut())
                self.ended = True
                return
            window.add(got, time.monotonic())
        if window.ready(time.monotonic()):
            self._submit(window.cut())

    def _submit(self, batch: list[Item]) -> None:
        self.holding = [m for m, _ in batch]
        self.handoff.submit(batch, lambda: self.health.tick(self.name))
        self.holding = []


class Settler(Role):
    def __init__(self, name: str, *, shutdown: Shutdown, inflight: InFlight, health: Health,
                 database: Database, handoff: Handoff, pipeline: Pipeline) -> None:
        super().__init__(name, shutdown=shutdown, inflight=inflight, health=health)
        self.database = database
        self.handoff = handoff
        self.pipeline = pipeline

    def running(self) -> bool:
        """Until the handoff says so: batches given out before shutdown are settled."""
        return not self.ended

    def turn(self) -> None:
        batch = self.handoff.take()
        if batch is None:
            self.ended = True
            return
        self.holding = [m for m, _ in batch]
        try:
            self.settle(batch)
        finally:
            self.handoff.done()

    def settle(self, batch: list[Item]) -> None:
        """Settle one batch, riding out outages; give it back to the queue only at shutdown."""
        shutdown = self.shutdown
        backoff = OUTAGE_PAUSE_SECONDS / 4
        while True:
            started = time.perf_counter()
            try:
                outcome = self.pipeline.settle(batch)
            except (StoreError, QueueError) as exc:
                if not exc.retryable:
                    shutdown.halt(f"a batch cannot be settled and no wait will fix it: {exc}")
                if shutdown.fatal or shutdown.past_settling():
                    self.release(self.let_go(), "unsettled_at_shutdown")
                    return
                self._wait_for_recovery(exc, backoff)
                backoff = min(backoff * 2, OUTAGE_PAUSE_SECONDS)
                continue
            self.database.back()
            self._settled(batch, outcome, time.perf_counter() - started)
            return

    def _wait_for_recovery(self, exc: Exception, backoff: float) -> None:
        if isinstance(exc, StoreError):
            self.database.down(exc)
            self.shutdown.pause(backoff)
            self.database.probe()
        else:
            log.warning("dlq_handoff_failed", error=str(exc), retry_in_seconds=backoff)
            self.shutdown.pause(backoff)

    def _settled(self, batch: list[Item], outcome: Outcome, seconds: float) -> None:
        messages = self.holding
        self.inflight.settled(messages, outcome)
        self.holding = []
        metrics.BATCH_SECONDS.observe(seconds)
        metrics.BATCH_SIZE.observe(len(batch))
        log.info("batch_settled", messages=len(batch), stored=outcome.stored,
                 duplicates=outcome.duplicates, rejected=len(outcome.rejected),
                 rejected_ids=[i for i, _ in outcome.rejected],
                 reasons=sorted({r for _, r in outcome.rejected}),
                 not_deleted=len(outcome.not_deleted), left_in_queue=len(outcome.left_in_queue),
                 redelivered=sum(1 for m in messages if m.receive_count > 1),
                 commit_ms=round(outcome.commit_seconds * 1000, 2),
                 delete_ms=round(outcome.delete_seconds * 1000, 2),
                 batch_ms=round(seconds * 1000, 2))


class Heartbeat(Role):
    """Extends held messages at a third of the timeout; nothing else runs on this thread."""

    def __init__(self, name: str, *, shutdown: Shutdown, inflight: InFlight, health: Health,
                 source: Queue, visibility_timeout: int) -> None:
        super().__init__(name, shutdown=shutdown, inflight=inflight, health=health)
        self.source = source
        self.visibility = visibility_timeout
        self.every = max(0.5, self.visibility / 6)

    def turn(self) -> None:
        if self.shutdown.wait(self.every):
            return
        self.health.tick(self.name)
        now = time.monotonic()
        due = self.inflight.due(self.visibility / 3)
        if not due:
            return
        try:
            failed = set(self.source.change_visibility([h.message for h in due],
                                                       self.visibility))
            log.info("visibility_extended", messages=len(due), failed=len(failed))
        except QueueError as exc:
            # All due again at the next beat (every visibility / 6).
            log.warning("visibility_extend_failed", messages=len(due), error=str(exc))
            return
        self.inflight.extended(due, failed, now)


class Housekeeping(Role):
    """Source and DLQ depth gauges every 15 s, a database ping after a quiet while,
    ledger pruning every hour: slow calls stay off the heartbeat."""

    def __init__(self, name: str, *, shutdown: Shutdown, inflight: InFlight, health: Health,
                 store: Store, source: Queue, dlq: Queue, retention_days: int) -> None:
        super().__init__(name, shutdown=shutdown, inflight=inflight, health=health)
        self.store = store
        self.source = source
        self.dlq = dlq
        self.retention_days = retention_days
        self.next_prune = 0.0

    def turn(self) -> None:
        if self.shutdown.wait(15.0 if self.next_prune else 1.0):
            return
        self.health.tick(self.name)
        # Both depths, so the DLQ alert sees rejects without anyone rendering the status page.
        for queue in (self.source, self.dlq):
            with contextlib.suppress(QueueError):
                queue.depth()
        if self.health.db_ping_due():
            self.health.db_ok = self.store.ping()
        if time.monotonic() >= self.next_prune and self.health.db_ok:
            self.next_prune = time.monotonic() + 3600
            try:
                keep = self.retention_days or ledger.keep_days(
                    self.source.retention_seconds())
                # Redriven copies come back for the DLQ's retention and then the source's.
                try:
                    dlq_retention = self.dlq.retention_seconds()
                except QueueError:
                    dlq_retention = None
                redrive_keep = keep + ledger.keep_days(dlq_retention)
                done = self.store.maintain_ledger(keep, redrive_keep)
                # A step that failed left the rest to run; the run still counts as failing.
                if done.failed:
                    metrics.LEDGER_MAINTENANCE_FAILURES.inc()
                    log.warning("ledger_prune_failed", steps=done.failed)
                metrics.LEDGER_MAINTENANCE_FAILING.set(1 if done.failed else 0)
                if (done.days_dropped or done.ids_deleted or done.days_packed
                        or done.days_created or done.packing_waits):
                    log.info("ledger_pruned", days=done.days_dropped, ids=done.ids_deleted,
                             days_packed=done.days_packed, ids_packed=done.ids_packed,
                             days_created=done.days_created, longest_step_ms=round(done.longest_step * 1000),
                             packing_waits=done.packing_waits, keep_days=keep)
            except Exception as exc:
                metrics.LEDGER_MAINTENANCE_FAILURES.inc()
                metrics.LEDGER_MAINTENANCE_FAILING.set(1)
                log.warning("ledger_prune_failed", error=type(exc).__name__)
