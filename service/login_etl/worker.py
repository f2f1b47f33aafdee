"""The daemon: starts the roles (pollers -> batcher -> settlers, heartbeat, housekeeping; see
roles.py), watches that each thread is alive, and stops them in order.

Every message received is, at all times, in exactly one place until it is deleted or released:
InFlight (inflight.py) keeps that, and nothing else tracks messages.
"""

from __future__ import annotations

import contextlib
import queue as stdqueue
import sys
import threading
import time

from login_etl import logs
from login_etl.draining import UntilEmpty
from login_etl.handoff import STOP, BatchWindow, Handoff, inbox
from login_etl.health import Health
from login_etl.inflight import InFlight, Totals
from login_etl.masking import Masker
from login_etl.pipeline import Pipeline
from login_etl.queue import Queue
from login_etl.roles import Batcher, Database, Heartbeat, Housekeeping, Poller, Role, Settler
from login_etl.settings import Settings
from login_etl.shutdown import RELEASE_SECONDS, Shutdown
from login_etl.store import Store

log = logs.get("login_etl.worker")
# A poller may sit in a 20 s long poll on an idle queue; waiting it out would make every idle
# shutdown take 20 s. What a poll returns after the process is gone stays invisible until its
# visibility timeout, then is redelivered (not lost).
POLLER_GRACE_SECONDS = 2.0
# A role gone: the batches settlers are in the middle of get this long to finish (commit, then
# delete) before the release; exiting under them left their messages hidden for a visibility
# timeout.
HALT_SETTLE_SECONDS = 1.0
# How long a thread may hold the GIL while another wants it (CPython's default: 5 ms). The
# settlers and pollers wake from socket waits many times per batch, and each wake would wait
# out a parsing thread's whole slice; a shorter interval costs CPU in forced switches.
# docs/performance.md has the DB stage, the latency and the CPU at 0.2, 1 and 5 ms.
GIL_SWITCH_SECONDS = 0.001


class Worker:
    def __init__(self, settings: Settings, store: Store, source: Queue, dlq: Queue,
                 masker: Masker, *, until_empty: bool = False, keep_messages: bool = False,
                 health: Health | None = None) -> None:
        self.settings = settings
        self.store = store
        self.source = source
        self.masker = masker
        self.keep_messages = keep_messages
        self.health = health or Health()
        self._switch_before = sys.getswitchinterval()
        self.shutdown = Shutdown()
        self.inflight = InFlight(source, keep_settled=keep_messages)
        self.pipeline = Pipeline(store, source, dlq, keep_messages=keep_messages)
        self.database = Database(store, self.health)
        self.inbox = inbox(settings.pollers)
        self.handoff = Handoff(settings.pollers)
        self.until_empty = (UntilEmpty(source, self.inflight, self.inbox, self.handoff,
                                       settings.pollers) if until_empty else None)
        shutdown, inflight, health = self.shutdown, self.inflight, self.health
        # Daemon threads, not an executor: a settler stuck in the database must not keep the
        # process alive past the shutdown bound (its messages are released by then).
        self.pollers = [
            Poller(f"poller-{i}", shutdown=shutdown, inflight=inflight, health=health,
                   database=self.database, inbox=self.inbox, handoff=self.handoff,
                   masker=masker, wait_seconds=settings.wait_time_seconds,
                   visibility_timeout=settings.visibility_timeout,
                   envelopes=settings.envelopes == "auto", until_empty=self.until_empty)
            for i in range(settings.pollers)]
        self.batcher = Batcher(
            "batcher", shutdown=shutdown, inflight=inflight, health=health, inbox=self.inbox,
            handoff=self.handoff,
            window=BatchWindow(settings.batch_size, settings.batch_window_ms / 1000))
        self.settlers = [
            Settler(f"settler-{i}", shutdown=shutdown, inflight=inflight, health=health,
                    database=self.database, handoff=self.handoff, pipeline=self.pipeline)
            for i in range(settings.pollers)]
        self.heartbeat = Heartbeat(
            "heartbeat", shutdown=shutdown, inflight=inflight, health=health, source=source,
            visibility_timeout=settings.visibility_timeout)
        self.housekeeping = Housekeeping(
            "housekeeping", shutdown=shutdown, inflight=inflight, health=health, store=store,
            source=source, dlq=dlq, retention_days=settings.ledger_retention_days)

    @property
    def roles(self) -> list[Role]:
        return [*self.pollers, self.batcher, *self.settlers, self.heartbeat, self.housekeeping]

    @property
    def totals(self) -> Totals:
        return self.inflight.totals

    @property
    def fatal(self) -> str | None:
        return self.shutdown.fatal

    def start(self) -> None:
        # Process-wide: the one before is given back by stop().
        self._switch_before = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        for role in self.roles:
            role.start()
        self.health.watch([role.thread for role in self.roles])
        log.info("worker_started", pollers=self.settings.pollers,
                 batch_size=self.settings.batch_size,
                 batch_window_ms=self.settings.batch_window_ms,
                 until_empty=self.until_empty is not None,
                 keep_messages=self.keep_messages, masking_mode=self.masker.mode,
                 key_id=self.masker.key_id)

    def run(self, stop: threading.Event) -> Totals:
        """Run until `stop` is set (a signal), a role halts the worker or is gone, or, with
        until_empty, the queue is drained; then stop (which closes the store)."""
        started = time.monotonic()
        self.start()
        tick = self.until_empty.pause if self.until_empty else 0.2
        gone: list[str] = []
        try:
            while not stop.wait(tick):
                self.health.tick("main")
                gone = [role.name for role in self.roles if not role.alive()]
                # A role that halts the worker says so before its thread ends: not gone.
                if self.shutdown.fatal is not None:
                    gone = []
                    break
                if gone:
                    self.shutdown.halt(f"thread ended unexpectedly: {', '.join(gone)}")
                    break
                if self.until_empty and self.until_empty.drained():
                    break
        finally:
            self.stop(settle=not gone)
        totals = self.totals
        log.info("worker_stopped", seconds=round(time.monotonic() - started, 3),
                 stored=totals.stored, duplicates=totals.duplicates, rejected=totals.rejected,
                 not_deleted=totals.not_deleted, left_in_queue=totals.left_in_queue)
        return totals

    def stop(self, settle: bool = True) -> None:
        """Stop intake, settle what is in hand, release the rest, close the pools: in that
        order, bounded by shutdown_timeout, its last RELEASE_SECONDS kept for the release
        (settlers stuck in the database give up at the same point). A role gone breaks the
        chain the settling needs: then only the batches settlers are in the middle of get
        HALT_SETTLE_SECONDS, and the process exits after the release, for the orchestrator to
        start a whole one.
        """
        shutdown = self.shutdown
        shutdown.begin(self.settings.shutdown_timeout if settle
                       else HALT_SETTLE_SECONDS + RELEASE_SECONDS)
        settle_by = shutdown.settle_by
        log.info("worker_stopping", held=len(self.inflight))
        try:
            # Full: the batcher is stuck on a slot; what it holds is released below.
            with contextlib.suppress(stdqueue.Full):
                self.inbox.put(STOP, timeout=max(0.1, settle_by - time.monotonic()))
            self.batcher.join(settle_by)
            self.handoff.wait_idle(settle_by)
            log.info("worker_settled", unfinished_batches=self.handoff.busy,
                     held=len(self.inflight))

            grace_end = min(time.monotonic() + POLLER_GRACE_SECONDS, settle_by)
            for poller in self.pollers:
                poller.join(grace_end)
            self._empty_inbox()
            leftovers = self.inflight.all_held()
            if not settle:
                # Batches live settlers are committing now: releasing them would only race
                # their deletes (and a release that fails is retried into the bound).
                settling = {m.receipt_handle for s in self.settlers if s.alive()
                            for m in s.holding}
                leftovers = [m for m in leftovers if m.receipt_handle not in settling]
            released, failed = self.inflight.release(leftovers, "shutdown", shutdown.deadline)
            log.info("messages_released", messages=released + failed, failed=failed,
                     reason="shutdown")
            self.handoff.close(len(self.settlers))
        finally:
            self.store.close()
            log.info("pools_closed")
            sys.setswitchinterval(self._switch_before)

    def _empty_inbox(self) -> None:
        """Parsed lists no batcher will take: their messages are held, so released with the
        rest."""
        while True:
            try:
                self.inbox.get_nowait()
            except stdqueue.Empty:
                return
