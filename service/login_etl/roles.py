"""The threads of the worker, one class per role (the dramatiq split of consumers and workers):

  Poller        long-polls SQS, parses + masks each message, hands lists to the batcher through
                a bounded inbox, so a slow database stops the receiving instead of piling
                messages up in memory
  Batcher       cuts batches by size or time window and gives each to a settler
  Settler       runs Pipeline.settle (commit, then delete); on an outage it keeps its batch,
                probes until the dependency is back, and settles it again
  Heartbeat     extends the visibility of messages held too long
  Housekeeping  queue depth gauges, a database ping when idle, ledger pruning

No role tracks messages itself: InFlight does. A role's unexpected exception ends its turn, not
its thread (see Role).
"""

from __future__ import annotations

import contextlib
import enum
import queue as stdqueue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from login_etl import ledger, logs, metrics
from login_etl.health import Health
from login_etl.inflight import InFlight
from login_etl.masking import Masker
from login_etl.messages import Received, parse
from login_etl.pgerrors import StoreError
from login_etl.pipeline import Item, Outcome, Pipeline
from login_etl.queue import MAX_BATCH, Queue, QueueError
from login_etl.settings import Settings
from login_etl.store import Store

log = logs.get("login_etl.roles")

# The inbox's last entry at shutdown: the batcher cuts what it has and ends.
class _End(enum.Enum):
    STOP = "stop"


STOP = _End.STOP
UNTIL_EMPTY_WAIT_SECONDS = 1
# --until-empty: once a receive comes back short of a full 10 the end is near; short polls
# (this far apart when empty) then find it without each poller sitting out a 1 s long poll.
UNTIL_EMPTY_SHORT_POLL_PAUSE = 0.05
# The end of the shutdown bound kept for giving held messages back.
RELEASE_SECONDS = 3.0
# The longest pause between attempts while a dependency is down: its return is noticed (and
# committing resumes) within about this long, whatever the outage lasted.
OUTAGE_PAUSE_SECONDS = 1.0
# A role failing this often within the window is not going to carry on: the worker halts and
# exits non-zero, for the orchestrator to start a fresh process.
FAILURE_LIMIT = 5
FAILURE_WINDOW_SECONDS = 60.0
FAILURE_PAUSE_SECONDS = 1.0


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
        self._lock = threading.Lock()
        self._busy = 0

    @property
    def busy(self) -> int:
        """Batches given out and not done yet."""
        return self._busy

    def submit(self, batch: list[Item], waiting: Callable[[], None]) -> None:
        while not self._slots.acquire(timeout=1.0):
            waiting()
        with self._lock:
            self._busy += 1
        self._batches.put(batch)

    def take(self) -> list[Item] | None:
        """The next batch, or None: the settler ends."""
        return self._batches.get()

    def done(self) -> None:
        with self._lock:
            self._busy -= 1
        self._slots.release()

    def close(self, settlers: int) -> None:
        """Idle settlers end; one stuck in the database is a daemon thread and dies with us."""
        for _ in range(settlers):
            self._batches.put(None)


class Crew:
    """What the roles share: the dependencies, the in-flight bookkeeping, the two queues
    between the roles, and the stop state the worker sets."""

    def __init__(self, settings: Settings, store: Store, source: Queue, pipeline: Pipeline,
                 masker: Masker, inflight: InFlight, health: Health) -> None:
        self.settings = settings
        self.store = store
        self.source = source
        self.pipeline = pipeline
        self.masker = masker
        self.inflight = inflight
        self.health = health
        self.inbox: stdqueue.Queue[Sequence[Item] | _End] = stdqueue.Queue(maxsize=settings.pollers * 4)
        self.handoff = Handoff(settings.pollers)
        self.stopping = threading.Event()
        self.db_up = threading.Event()
        self.db_up.set()
        self.deadline = float("inf")
        self.fatal: str | None = None

    def halt(self, reason: str) -> None:
        """A fault no retry can fix (queue deleted, access denied): stop and say why, exit 1."""
        if self.fatal is None:
            self.fatal = reason
            log.error("worker_halted", reason=reason)

    def past_settling(self) -> bool:
        """Stopping, and the time left is kept for giving messages back."""
        return (self.stopping.is_set()
                and time.monotonic() > self.deadline - RELEASE_SECONDS)

    def pause(self, seconds: float) -> None:
        """Back off; once stopping, still back off (no spinning) but never past the deadline."""
        if not self.stopping.wait(seconds):
            return
        time.sleep(max(0.0, min(seconds, self.deadline - RELEASE_SECONDS - time.monotonic())))

    def release(self, messages: Sequence[Received], why: str) -> None:
        released, failed = self.inflight.release(messages, why, self.deadline)
        if released or failed:
            log.info("messages_released", messages=released + failed, failed=failed, reason=why)

    def database_back(self) -> None:
        if not self.db_up.is_set():
            log.info("database_recovered")
            self.db_up.set()
        self.health.db_ok = True


class Role:
    """One thread of the worker, turn after turn until it ends.

    An unexpected exception (a bug: every expected failure is handled inside the turn) ends the
    turn, not the thread: it is logged once, by type only (its text can quote a value), the
    messages the role had in hand are released, and the role carries on. Failing
    FAILURE_LIMIT times within FAILURE_WINDOW_SECONDS, it halts the worker instead.
    """

    def __init__(self, name: str, crew: Crew) -> None:
        self.name = name
        self.crew = crew
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
        return not self.ended and not self.crew.stopping.is_set()

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
        self.crew.release(messages, "role_failed")
        now = time.monotonic()
        self._failures.append(now)
        if (len(self._failures) == FAILURE_LIMIT
                and now - self._failures[0] < FAILURE_WINDOW_SECONDS):
            self.crew.halt(f"{self.name} failed {FAILURE_LIMIT} times within "
                           f"{FAILURE_WINDOW_SECONDS:.0f} s")
            self.ended = True
            return
        self.crew.pause(FAILURE_PAUSE_SECONDS)


class Poller(Role):
    def __init__(self, name: str, crew: Crew, *, until_empty: bool = False) -> None:
        super().__init__(name, crew)
        self.until_empty = until_empty
        self.wait = 0 if until_empty else crew.settings.wait_time_seconds
        self.backoff = OUTAGE_PAUSE_SECONDS / 4

    def turn(self) -> None:
        crew = self.crew
        crew.health.tick(self.name)
        if not crew.db_up.wait(1.0):
            # The database is down: take no messages we cannot store. A settler riding out
            # the outage says when it is back; with none busy, look for ourselves.
            if not crew.handoff.busy and crew.store.ping():
                crew.database_back()
            return
        try:
            received = crew.inflight.receive(self.wait, crew.settings.visibility_timeout)
        except QueueError as exc:
            if not exc.retryable:
                crew.halt(f"receive failed and will not heal by retrying: {exc}")
                self.ended = True
                return
            if crew.health.sqs_ok:
                log.warning("sqs_unavailable", error=str(exc), retry_in_seconds=self.backoff)
            crew.health.sqs_ok = False
            crew.stopping.wait(self.backoff)
            self.backoff = min(self.backoff * 2, OUTAGE_PAUSE_SECONDS)
            return
        if not crew.health.sqs_ok:
            log.info("sqs_recovered")
        crew.health.sqs_ok, self.backoff = True, OUTAGE_PAUSE_SECONDS / 4
        if self.until_empty:
            self.wait = UNTIL_EMPTY_WAIT_SECONDS if len(received) == MAX_BATCH else 0
        if not received:
            if self.until_empty:
                crew.stopping.wait(UNTIL_EMPTY_SHORT_POLL_PAUSE)
            return
        self.holding = received
        envelopes = crew.settings.envelopes == "auto"
        items = [(m, parse(m, crew.masker, envelopes)) for m in received]
        # Bounded hand-off: a full inbox (a slow database) stops the receiving.
        while not crew.stopping.is_set():
            try:
                crew.inbox.put(items, timeout=1.0)
                self.holding = []
                return
            except stdqueue.Full:
                crew.health.tick(self.name)
        crew.release(self.let_go(), "shutdown")


class Batcher(Role):
    def __init__(self, name: str, crew: Crew) -> None:
        super().__init__(name, crew)
        self.window = BatchWindow(crew.settings.batch_size, crew.settings.batch_window_ms / 1000)

    def running(self) -> bool:
        """Until the inbox's STOP: what is in the window at shutdown is still settled."""
        return not self.ended

    def let_go(self) -> list[Received]:
        return [m for m, _ in self.window.cut()] + super().let_go()

    def turn(self) -> None:
        crew = self.crew
        crew.health.tick(self.name)
        try:
            got = crew.inbox.get(timeout=self.window.timeout(time.monotonic()))
        except stdqueue.Empty:
            got = None
        if got is STOP:
            if self.window.items:
                self._submit(self.window.cut())
            self.ended = True
            return
        if got:
            self.window.add(got, time.monotonic())
        if self.window.ready(time.monotonic()):
            self._submit(self.window.cut())

    def _submit(self, batch: list[Item]) -> None:
        self.holding = [m for m, _ in batch]
        self.crew.handoff.submit(batch, lambda: self.crew.health.tick(self.name))
        self.holding = []


class Settler(Role):
    def running(self) -> bool:
        """Until the handoff says so: batches given out before shutdown are settled."""
        return not self.ended

    def turn(self) -> None:
        batch = self.crew.handoff.take()
        if batch is None:
            self.ended = True
            return
        self.holding = [m for m, _ in batch]
        try:
            self.settle(batch)
        finally:
            self.crew.handoff.done()

    def settle(self, batch: list[Item]) -> None:
        """Settle one batch, riding out outages; give it back to the queue only at shutdown."""
        crew = self.crew
        backoff = OUTAGE_PAUSE_SECONDS / 4
        while True:
            started = time.perf_counter()
            try:
                outcome = crew.pipeline.settle(batch)
            except (StoreError, QueueError) as exc:
                if not exc.retryable:
                    crew.halt(f"a batch cannot be settled and no wait will fix it: {exc}")
                if crew.fatal or crew.past_settling():
                    crew.release(self.let_go(), "unsettled_at_shutdown")
                    return
                self._wait_for_recovery(exc, backoff)
                backoff = min(backoff * 2, OUTAGE_PAUSE_SECONDS)
                continue
            crew.database_back()
            self._settled(batch, outcome, time.perf_counter() - started)
            return

    def _wait_for_recovery(self, exc: Exception, backoff: float) -> None:
        crew = self.crew
        if isinstance(exc, StoreError):
            if crew.db_up.is_set():
                log.warning("database_unavailable", error=str(exc))
            crew.db_up.clear()
            crew.health.db_ok = False
            crew.pause(backoff)
            if crew.store.ping():
                crew.database_back()
        else:
            log.warning("dlq_handoff_failed", error=str(exc), retry_in_seconds=backoff)
            crew.pause(backoff)

    def _settled(self, batch: list[Item], outcome: Outcome, seconds: float) -> None:
        messages = self.holding
        self.crew.inflight.settled(messages, outcome)
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

    def __init__(self, name: str, crew: Crew) -> None:
        super().__init__(name, crew)
        self.visibility = crew.settings.visibility_timeout
        self.every = max(0.5, self.visibility / 6)

    def turn(self) -> None:
        crew = self.crew
        if crew.stopping.wait(self.every):
            return
        crew.health.tick(self.name)
        now = time.monotonic()
        due = crew.inflight.due(self.visibility / 3)
        if not due:
            return
        try:
            failed = set(crew.source.change_visibility([h.message for h in due],
                                                       self.visibility))
            log.info("visibility_extended", messages=len(due), failed=len(failed))
        except QueueError as exc:
            # All due again at the next beat (every visibility / 6).
            log.warning("visibility_extend_failed", messages=len(due), error=str(exc))
            return
        crew.inflight.extended(due, failed, now)


class Housekeeping(Role):
    """Source and DLQ depth gauges every 15 s, a database ping after a quiet while,
    ledger pruning every hour: slow calls stay off the heartbeat."""

    def __init__(self, name: str, crew: Crew) -> None:
        super().__init__(name, crew)
        self.next_prune = 0.0

    def turn(self) -> None:
        crew = self.crew
        if crew.stopping.wait(15.0 if self.next_prune else 1.0):
            return
        crew.health.tick(self.name)
        # Both depths, so the DLQ alert sees rejects without anyone rendering the status page.
        for queue in (crew.source, crew.pipeline.dlq):
            with contextlib.suppress(QueueError):
                queue.depth()
        if crew.health.db_ping_due():
            crew.health.db_ok = crew.store.ping()
        if time.monotonic() >= self.next_prune and crew.health.db_ok:
            self.next_prune = time.monotonic() + 3600
            try:
                keep = crew.settings.ledger_retention_days or ledger.keep_days(
                    crew.source.retention_seconds())
                # Redriven copies come back for the DLQ's retention and then the source's.
                try:
                    dlq_retention = crew.pipeline.dlq.retention_seconds()
                except QueueError:
                    dlq_retention = None
                redrive_keep = keep + ledger.keep_days(dlq_retention)
                done = crew.store.maintain_ledger(keep, redrive_keep)
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
