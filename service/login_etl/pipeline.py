"""A batch of received messages -> one outcome per message. The commit-then-delete order lives here.

`settle` is the only function that deletes from the source queue, and it does so only after
the transaction that holds every message of the batch (as a row, or as a DLQ hand-off
recorded in the ledger) has committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from login_etl import logs, metrics
from login_etl.messages import LoginEvent, Received, Rejection
from login_etl.pgerrors import RowRefused
from login_etl.queue import Queue, QueueError
from login_etl.store import Store, Transaction

Parsed = LoginEvent | Rejection
# Reasons (rejections metric) of rejects left in the source queue.
DLQ_REFUSED = "dlq_refused"
LEDGER_REFUSED = "ledger_refused"
log = logs.get("login_etl.pipeline")
Item = tuple[Received, Parsed]


@dataclass
class Outcome:
    stored: int = 0
    duplicates: int = 0
    # (message id, reason), the reason being a rejections label.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    not_deleted: list[str] = field(default_factory=list)
    # Rejects left in the source queue, (message id, why): the DLQ refused them for good, or
    # not even their ledger entry could be written. SQS's RedrivePolicy moves them in the end.
    left_in_queue: list[tuple[str, str]] = field(default_factory=list)
    commit_seconds: float = 0.0
    delete_seconds: float = 0.0

    def merge(self, other: Outcome) -> Outcome:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.not_deleted += other.not_deleted
        self.left_in_queue += other.left_in_queue
        return self


class Pipeline:
    def __init__(self, store: Store, source: Queue, dlq: Queue, *, keep_messages: bool = False):
        self.store = store
        self.source = source
        self.dlq = dlq
        self.keep_messages = keep_messages
        # Rejects already handed to the DLQ by a transaction that then failed to commit: a
        # retry of the same batch must not hand them off a second time.
        self._handed_off: set[str] = set()
        self._lock = threading.Lock()

    def settle(self, items: Sequence[Item]) -> Outcome:
        """Store the batch and hand off its rejects in one transaction, COMMIT, then delete.

        Raises StoreError or QueueError (from the DLQ hand-off) if the transaction could not
        commit: then nothing was deleted and the caller still holds every message. Once it has
        committed, it never raises: a delete that fails is reported in `not_deleted` (those
        messages come back and the ledger skips them).
        """
        started = time.perf_counter()
        unique = _unique(items)
        outcome = self._commit(unique)
        outcome.duplicates += len(items) - len(unique)
        outcome.commit_seconds = time.perf_counter() - started
        metrics.LAST_COMMIT.set_to_current_time()
        if not self.keep_messages:
            started = time.perf_counter()
            left = {message_id for message_id, _ in outcome.left_in_queue}
            settled = [m for m, _ in items if m.message_id not in left]
            try:
                outcome.not_deleted = self.source.delete(settled)
            except QueueError:
                outcome.not_deleted = [m.message_id for m in settled]
            outcome.delete_seconds = time.perf_counter() - started
        metrics.MESSAGES.labels("stored").inc(outcome.stored)
        metrics.MESSAGES.labels("duplicate").inc(outcome.duplicates)
        metrics.MESSAGES.labels("rejected").inc(len(outcome.rejected))
        for _, reason in outcome.rejected + outcome.left_in_queue:
            metrics.REJECTIONS.labels(reason).inc()
        if outcome.left_in_queue:
            log.warning("rejects_left_in_source", messages=len(outcome.left_in_queue),
                        message_ids=[i for i, _ in outcome.left_in_queue],
                        reasons=sorted({r for _, r in outcome.left_in_queue}))
        return outcome

    def _commit(self, items: Sequence[Item]) -> Outcome:
        """Commit; a row the database refuses is isolated by halving the batch."""
        try:
            return self._write(items)
        except RowRefused as refusal:
            if len(items) > 1:
                half = len(items) // 2
                return self._commit(items[:half]).merge(self._commit(items[half:]))
            received, parsed = items[0]
            if isinstance(parsed, Rejection):
                # Not even its ledger entry can be written (no such id should exist): leave it
                # in the queue, where the RedrivePolicy moves it to the DLQ in the end.
                return Outcome(left_in_queue=[(received.message_id, LEDGER_REFUSED)])
            reason = f"db_rejected:{refusal.sqlstate}"
            return self._commit([(received, Rejection(parsed.message_id, reason))])

    def _write(self, items: Sequence[Item]) -> Outcome:
        """One transaction of the batch (retried by the store while the database is out)."""
        new_ids, fresh_rejects, refused = self.store.write(
            lambda tx: self._in_transaction(tx, items))
        committed = time.time() * 1000
        with self._lock:
            self._handed_off.difference_update(m.message_id for m, _ in fresh_rejects)
        sent = [received.sent_timestamp_ms for received, p in items
                if isinstance(p, LoginEvent) and p.message_id in new_ids]
        metrics.FRESHNESS.observe_ages(sent, committed)
        return Outcome(
            stored=len(sent),
            duplicates=len(items) - len(new_ids),
            rejected=[(r.message_id, reason) for r, reason in fresh_rejects],
            left_in_queue=[(message_id, DLQ_REFUSED) for message_id in refused],
        )

    def _in_transaction(self, tx: Transaction, items: Sequence[Item]
                        ) -> tuple[set[str], list[tuple[Received, str]], list[str]]:
        """Claim, insert and hand off: the ids new to the ledger, the rejects the DLQ took
        and the ids of those it refused."""
        new_ids = tx.claim([
            (received.message_id, "stored" if isinstance(p, LoginEvent) else "rejected",
             received.day, received.redrive_day is not None)
            for received, p in items
        ])
        tx.insert([p for _, p in items if isinstance(p, LoginEvent) and p.message_id in new_ids])
        fresh_rejects = [(received, p.reason) for received, p in items
                         if isinstance(p, Rejection) and p.message_id in new_ids]
        with self._lock:
            unsent = [(m, r) for m, r in fresh_rejects if m.message_id not in self._handed_off]
        refused: list[str] = []
        if unsent:
            # Inside the transaction: if the hand-off fails, the ledger rows roll back and
            # the messages stay in the source queue. A crash after it and before COMMIT can
            # only repeat the hand-off (the DLQ copy carries its origin), never lose it.
            try:
                refused = self.dlq.send_rejections(unsent)
            # Part of them may be in the DLQ already: a retry must not send those again.
            except QueueError as exc:
                with self._lock:
                    self._handed_off.update(exc.delivered)
                raise
            # Only what the DLQ took: a refused one must be sent again. Recorded at once, so
            # a failure below does not send them a second time.
            with self._lock:
                self._handed_off.update(m.message_id for m, _ in unsent
                                        if m.message_id not in refused)
            # Left in the source queue: SQS's RedrivePolicy moves them in the end.
            tx.unclaim([(m.message_id, m.day) for m, _ in unsent if m.message_id in refused])
        fresh_rejects = [(m, r) for m, r in fresh_rejects if m.message_id not in refused]
        return new_ids, fresh_rejects, refused


def _unique(items: Sequence[Item]) -> list[Item]:
    """One entry per message id (the same message can arrive twice after a visibility lapse)."""
    return list({received.message_id: (received, parsed) for received, parsed in items}.values())
