"""The daemon: pollers -> batcher -> settlers, a heartbeat, and an orderly shutdown.

Threads (the dramatiq split of consumers and workers):
  pollers     long-poll SQS, parse + mask each message, hand lists to the batcher (bounded, so a
              slow database stops the receiving instead of piling messages up in memory)
  batcher     cuts batches by size or time window and gives each to a settler
  settlers    run Pipeline.settle (commit, then delete); on an outage they keep their batch,
              probe until the dependency is back, and settle it again
  heartbeat   extends the visibility of messages held too long, refreshes queue depths,
              prunes the ledger

Every message received is, at all times, in exactly one of: the inbox, a batch being settled,
or released back to the queue. `held` tracks them for the heartbeat and for shutdown.
"""

from __future__ import annotations

import contextlib
import queue as stdqueue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from login_etl import logs, metrics
from login_etl.health import Health
from login_etl.masking import Masker
from login_etl.messages import Received, parse
from login_etl.pipeline import Item, Outcome, Pipeline
from login_etl.queue import MAX_BATCH, Queue, QueueError
from login_etl.settings import Settings
from login_etl.store import Store, StoreError

log = logs.get("login_etl.worker")
_STOP = object()
UNTIL_EMPTY_WAIT_SECONDS = 1
# --until-empty: once a receive comes back short of a full 10 the end is near; short polls
# (this far apart when empty) then find it without each poller sitting out a 1 s long poll.
UNTIL_EMPTY_SHORT_POLL_PAUSE = 0.05
POLLER_GRACE_SECONDS = 2.0
RELEASE_SECONDS = 3.0  # the end of the shutdown bound kept for giving held messages back
# The longest pause between attempts while a dependency is down: its return is noticed (and
# committing resumes) within about this long, whatever the outage lasted.
OUTAGE_PAUSE_SECONDS = 1.0
# How long a thread may hold the GIL while another wants it (CPython's default: 5 ms). The
# settlers and pollers wake from socket waits many times per batch, and each wake used to wait
# out a parsing thread's 5 ms slice: the DB stage ran at 37,000 rows/s with 5 ms, 50,000-57,000
# with 0.2 ms (benchmarks/run.py), for no measurable CPU cost.
GIL_SWITCH_SECONDS = 0.0002


@dataclass
class _Held:
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


class Batcher:
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


class Worker:
    def __init__(self, settings: Settings, store: Store, source: Queue, dlq: Queue,
                 masker: Masker, *, until_empty: bool = False, keep_messages: bool = False,
                 ) -> None:
        self.settings = settings
        self.store = store
        self.source = source
        self.masker = masker
        self.until_empty = until_empty
        self.keep_messages = keep_messages
        self.pipeline = Pipeline(store, source, dlq, keep_messages=keep_messages)
        self.health = Health()
        self.stopping = threading.Event()
        self.db_up = threading.Event()
        self.db_up.set()
        self.totals = Totals()
        self.fatal: str | None = None
        self._inbox: stdqueue.Queue[object] = stdqueue.Queue(maxsize=settings.pollers * 4)
        # Keyed by receipt handle: after a visibility lapse the same message id can be held
        # twice (two receives), and each copy must be extended, settled and released itself.
        self._held: dict[str, _Held] = {}
        # --keep-messages: settled but not deleted; kept invisible by the heartbeat (so they are
        # not received again and again towards maxReceiveCount) and released at exit.
        self._kept: dict[str, _Held] = {}
        self._lock = threading.Lock()
        # Daemon threads, not an executor: a settler stuck in the database must not keep the
        # process alive past the shutdown bound (its messages are released by then).
        self._batches: stdqueue.Queue[list[Item] | None] = stdqueue.Queue()  # None: stop
        self._slots = threading.BoundedSemaphore(settings.pollers)
        self._busy = 0
        self._empty_receives = 0
        self._receiving = 0  # receives in progress: their messages are hidden but not held yet
        self._receives = 0  # receives that brought messages, ever: _drained compares it
        self._deadline = float("inf")
        self._threads: list[threading.Thread] = []
        self._wait = UNTIL_EMPTY_WAIT_SECONDS if until_empty else settings.wait_time_seconds

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        for i in range(self.settings.pollers):
            self._spawn(f"poller-{i}", self._poll)
        self._spawn("batcher", self._batch)
        for i in range(self.settings.pollers):
            self._spawn(f"settler-{i}", self._settle_forever)
        self._spawn("heartbeat", self._heartbeat)
        self._spawn("housekeeping", self._housekeeping)
        log.info("worker_started", pollers=self.settings.pollers,
                 batch_size=self.settings.batch_size,
                 batch_window_ms=self.settings.batch_window_ms, until_empty=self.until_empty,
                 keep_messages=self.keep_messages, masking_mode=self.masker.mode,
                 key_id=self.masker.key_id)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def run(self, stop: threading.Event) -> Totals:
        """Run until `stop` is set (a signal) or, with until_empty, the queue is drained."""
        started = time.monotonic()
        self.start()
        tick = UNTIL_EMPTY_SHORT_POLL_PAUSE if self.until_empty else 0.2
        while not stop.wait(tick) and self.fatal is None:
            self.health.tick("main")
            if self.until_empty and self._drained():
                break
        self.shutdown()
        seconds = time.monotonic() - started
        log.info("worker_stopped", seconds=round(seconds, 3), stored=self.totals.stored,
                 duplicates=self.totals.duplicates, rejected=self.totals.rejected,
                 not_deleted=self.totals.not_deleted, left_in_queue=self.totals.left_in_queue)
        return self.totals

    def shutdown(self) -> None:
        """Stop receiving, settle what is in hand, release the rest; bounded by shutdown_timeout.

        Each wait ends before the deadline, leaving RELEASE_SECONDS to give back whatever is
        still held (settlers stuck in the database give up at the same point).
        """
        self._deadline = time.monotonic() + self.settings.shutdown_timeout
        settle_by = self._deadline - RELEASE_SECONDS
        self.stopping.set()
        log.info("worker_stopping", held=self.in_flight())
        with contextlib.suppress(stdqueue.Full):  # full: the batcher is stuck on a slot; the
            # held messages are released below whatever it does
            self._inbox.put(_STOP, timeout=max(0.1, settle_by - time.monotonic()))
        for thread in self._threads:
            if thread.name == "batcher":
                thread.join(max(0.0, settle_by - time.monotonic()))
        while self._busy and time.monotonic() < settle_by:
            time.sleep(0.05)
        # A poller may sit in a 20 s long poll on an idle queue; waiting it out would make every
        # idle shutdown take 20 s. Give them a short grace: what a poll returns after the process
        # is gone stays invisible until its visibility timeout, then is redelivered (not lost).
        grace_end = min(time.monotonic() + POLLER_GRACE_SECONDS, settle_by)
        for thread in self._threads:
            if thread.name.startswith("poller"):
                thread.join(max(0.0, grace_end - time.monotonic()))
        leftovers = self._drain_inbox()
        with self._lock:
            leftovers += [h.message for h in self._held.values()]
            leftovers += [h.message for h in self._kept.values()]
        self._release(leftovers, "shutdown")
        for _ in range(self.settings.pollers):  # idle settlers end; a stuck one is a daemon
            self._batches.put(None)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._held)

    def _drained(self) -> bool:
        """Nothing held, nothing being received or settled, pollers saw an empty queue, and
        SQS agrees."""
        with self._lock:
            if self._held or self._receiving or self._busy or not self._inbox.empty():
                return False
            if self._empty_receives < self.settings.pollers:
                return False
            receives = self._receives
        try:
            empty = self.source.depth().visible == 0
        except Exception:  # not knowing is not empty
            return False
        with self._lock:  # a receive during depth() hid messages SQS then did not count
            return empty and receives == self._receives and not (self._held or self._receiving)

    # -- threads ---------------------------------------------------------------------------

    def _poll(self) -> None:
        name = threading.current_thread().name
        backoff = OUTAGE_PAUSE_SECONDS / 4
        wait = 0 if self.until_empty else self._wait
        while not self.stopping.is_set():
            self.health.tick(name)
            if not self.db_up.wait(1.0):
                # The database is down: take no messages we cannot store. A settler riding out
                # the outage says when it is back; with none busy, look for ourselves.
                if not self._busy and self.store.ping():
                    self._database_back()
                continue
            try:
                received = self._receive(wait)
            except QueueError as exc:
                if not exc.retryable:
                    self._halt(f"receive failed and will not heal by retrying: {exc}")
                    return
                self._sqs_down(exc, backoff)
                backoff = min(backoff * 2, OUTAGE_PAUSE_SECONDS)
                continue
            if not self.health.sqs_ok:
                log.info("sqs_recovered")
            self.health.sqs_ok, backoff = True, OUTAGE_PAUSE_SECONDS / 4
            if self.until_empty:
                wait = self._wait if len(received) == MAX_BATCH else 0
            if not received:
                if self.until_empty:
                    self.stopping.wait(UNTIL_EMPTY_SHORT_POLL_PAUSE)
                continue
            if self.stopping.is_set():
                self._forget_and_release(received, "shutdown")
                return
            items = [(m, parse(m, self.masker)) for m in received]
            while True:  # bounded hand-off: a full inbox (slow database) stops the receiving
                try:
                    self._inbox.put(items, timeout=1.0)
                    break
                except stdqueue.Full:
                    self.health.tick(name)
                    if self.stopping.is_set():
                        self._forget_and_release(received, "shutdown")
                        return

    def _receive(self, wait: int) -> list[Received]:
        """Receive and hold in one step: _drained must never see messages SQS has hidden that
        no one holds yet (it would end --until-empty and they would be released unstored)."""
        with self._lock:
            self._receiving += 1
        try:
            received = self.source.receive(wait, self.settings.visibility_timeout)
            now = time.monotonic()
            with self._lock:
                self._empty_receives = 0 if received else self._empty_receives + 1
                self._receives += bool(received)
                for message in received:
                    self._held[message.receipt_handle] = _Held(message, now)
                metrics.IN_FLIGHT.set(len(self._held))
            return received
        finally:
            with self._lock:
                self._receiving -= 1

    def _halt(self, reason: str) -> None:
        """A fault no retry can fix (queue deleted, access denied): stop and say why, exit 1."""
        if self.fatal is None:
            self.fatal = reason
            log.error("worker_halted", reason=reason)

    def _sqs_down(self, exc: QueueError, backoff: float) -> None:
        if self.health.sqs_ok:
            log.warning("sqs_unavailable", error=str(exc), retry_in_seconds=backoff)
        self.health.sqs_ok = False
        self.stopping.wait(backoff)

    def _batch(self) -> None:
        batcher = Batcher(self.settings.batch_size, self.settings.batch_window_ms / 1000)
        while True:
            self.health.tick("batcher")
            try:
                got = self._inbox.get(timeout=batcher.timeout(time.monotonic()))
            except stdqueue.Empty:
                got = None
            if got is _STOP:
                if batcher.items:
                    self._submit(batcher.cut())
                return
            if got:
                batcher.add(got, time.monotonic())  # type: ignore[arg-type]
            if batcher.ready(time.monotonic()):
                self._submit(batcher.cut())

    def _submit(self, batch: list[Item]) -> None:
        while not self._slots.acquire(timeout=1.0):
            self.health.tick("batcher")
        with self._lock:
            self._busy += 1
        self._batches.put(batch)

    def _settle_forever(self) -> None:
        while (batch := self._batches.get()) is not None:
            self._settle(batch)

    def _settle(self, batch: list[Item]) -> None:
        """Settle one batch, riding out outages; give it back to the queue only at shutdown."""
        backoff = OUTAGE_PAUSE_SECONDS / 4
        messages = [m for m, _ in batch]
        try:
            while True:
                started = time.perf_counter()
                try:
                    outcome = self.pipeline.settle(batch)
                except (StoreError, QueueError) as exc:
                    if not exc.retryable:
                        self._halt(f"a batch cannot be settled and no wait will fix it: {exc}")
                    if self.fatal or (self.stopping.is_set()
                                      and time.monotonic() > self._deadline - RELEASE_SECONDS):
                        self._forget_and_release(messages, "unsettled_at_shutdown")
                        return
                    self._wait_for_recovery(exc, backoff)
                    backoff = min(backoff * 2, OUTAGE_PAUSE_SECONDS)
                    continue
                self._database_back()
                self._settled(batch, outcome, time.perf_counter() - started)
                return
        except Exception as exc:  # a bug: keep the messages safe (they come back) and say so
            log.error("settle_failed", error=type(exc).__name__, messages=len(batch))
            self._forget_and_release(messages, "settle_failed")
        finally:
            with self._lock:
                self._busy -= 1
            self._slots.release()

    def _pause(self, seconds: float) -> None:
        """Back off; once stopping, still back off (no spinning) but never past the deadline."""
        if not self.stopping.wait(seconds):
            return
        time.sleep(max(0.0, min(seconds, self._deadline - RELEASE_SECONDS - time.monotonic())))

    def _wait_for_recovery(self, exc: Exception, backoff: float) -> None:
        if isinstance(exc, StoreError):
            if self.db_up.is_set():
                log.warning("database_unavailable", error=str(exc))
            self.db_up.clear()
            self.health.db_ok = False
            self._pause(backoff)
            if self.store.ping():
                self._database_back()
        else:
            log.warning("dlq_handoff_failed", error=str(exc), retry_in_seconds=backoff)
            self._pause(backoff)

    def _database_back(self) -> None:
        if not self.db_up.is_set():
            log.info("database_recovered")
            self.db_up.set()
        self.health.db_ok = True

    def _settled(self, batch: list[Item], outcome: Outcome, seconds: float) -> None:
        messages = [m for m, _ in batch]
        with self._lock:
            now = time.monotonic()
            for m in messages:
                held = self._held.pop(m.receipt_handle, None)
                if self.keep_messages:
                    self._kept[m.receipt_handle] = _Held(m, held.extended_at if held else now)
            metrics.IN_FLIGHT.set(len(self._held))
            self.totals.add(outcome)
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

    def _heartbeat(self) -> None:
        """Extend held messages at a third of the timeout; nothing else runs on this thread."""
        vis = self.settings.visibility_timeout
        every = max(0.5, vis / 6)
        while not self.stopping.wait(every):
            self.health.tick("heartbeat")
            now = time.monotonic()
            with self._lock:  # held first: they are the ones still to be stored
                due = [h for held in (self._held, self._kept) for h in held.values()
                       if now - h.extended_at > vis / 3]
            if due:
                try:
                    failed = set(self.source.change_visibility([h.message for h in due], vis))
                    log.info("visibility_extended", messages=len(due), failed=len(failed))
                except QueueError as exc:  # all due again at the next beat (every vis/6)
                    log.warning("visibility_extend_failed", messages=len(due), error=str(exc))
                    continue
                with self._lock:
                    for h in due:
                        if h.message.receipt_handle not in failed:
                            h.extended_at = now

    def _housekeeping(self) -> None:
        """Queue depth gauges every 15 s, ledger pruning every hour; slow calls stay off the heartbeat."""
        next_prune = 0.0
        while not self.stopping.wait(15.0 if next_prune else 1.0):
            self.health.tick("housekeeping")
            with contextlib.suppress(QueueError):
                self.source.depth()
            if self.health.db_ping_due():
                self.health.db_ok = self.store.ping()
            if time.monotonic() >= next_prune and self.health.db_ok:
                next_prune = time.monotonic() + 3600
                try:
                    pruned = self.store.prune_ledger(self.settings.ledger_retention_days)
                    if pruned:
                        log.info("ledger_pruned", ids=pruned)
                except Exception as exc:
                    log.warning("ledger_prune_failed", error=type(exc).__name__)

    # -- giving messages back --------------------------------------------------------------

    def _drain_inbox(self) -> list[Received]:
        messages: list[Received] = []
        while True:
            try:
                got = self._inbox.get_nowait()
            except stdqueue.Empty:
                return messages
            if got is not _STOP and got:
                messages.extend(m for m, _ in got)  # type: ignore[union-attr]

    def _forget_and_release(self, messages: Sequence[Received], why: str) -> None:
        with self._lock:
            for m in messages:
                self._held.pop(m.receipt_handle, None)
            metrics.IN_FLIGHT.set(len(self._held))
        self._release(messages, why)

    def _release(self, messages: Sequence[Received], why: str) -> None:
        """Visibility 0: the messages are redelivered at once instead of after the timeout."""
        if not messages:
            return
        try:  # at shutdown, within its bound: what is left returns after its timeout anyway
            failed = self.source.change_visibility(messages, 0, deadline=self._deadline)
        except QueueError as exc:
            log.warning("release_failed", messages=len(messages), reason=why, error=str(exc))
            return
        log.info("messages_released", messages=len(messages), failed=len(failed), reason=why)
