"""The unit tests' fakes, in one place: stand-ins for the store and the queues that record
calls or fail on demand, and builders for a worker over them. No I/O; pure logic only (the
integration tests run the real parts).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg.errors as pg

from login_etl.inflight import Held
from login_etl.masking import Masker
from login_etl.messages import LoginEvent, Received
from login_etl.pipeline import Item, Outcome
from login_etl.queue import Depth, QueueError
from login_etl.settings import MaskingKey, Settings
from login_etl.store import Store
from login_etl.worker import Worker

# --- the worker over a slow source (test_worker_bookkeeping, test_supervision)

BODY = ('{"user_id": "u", "app_version": "2.3.0", "device_type": "ios", "ip": "10.0.0.1",'
        ' "locale": "RU", "device_id": "d-1"}')


class SlowSource:
    """A queue whose first receive (by the first poller to ask) is slow: SQS has hidden its
    messages, but the worker does not hold them yet."""

    def __init__(self, messages: list[Received], slow_seconds: float) -> None:
        self.messages = messages
        self.slow_seconds = slow_seconds
        self.released: list[str] = []
        self.extended: list[list[str]] = []
        self.extended_at: list[float] = []
        self.fail_extend = 0
        self._first = threading.Lock()

    def receive(self, wait: int, visibility: int) -> list[Received]:
        if self.messages and self._first.acquire(blocking=False):
            time.sleep(self.slow_seconds)
            taken, self.messages = self.messages, []
            return taken
        time.sleep(0.01)
        return []

    def depth(self) -> Depth:
        return Depth(0, 0, 0)  # the slow receive's messages are in flight, not visible

    def change_visibility(self, messages: Sequence[Received], timeout: int,
                          deadline: float | None = None) -> list[str]:
        if timeout == 0:
            self.released += [m.receipt_handle for m in messages]
            return []
        self.extended_at.append(time.monotonic())  # read after `extended`: written first
        self.extended.append([m.receipt_handle for m in messages])
        if self.fail_extend:
            self.fail_extend -= 1
            raise QueueError("change_message_visibility_batch failed")
        return []


class IdleStore:
    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def settings(**changes: Any) -> Settings:
    return Settings(masking_keys=(MaskingKey("k", b"k" * 32),), **changes)


def worker(source: SlowSource, visibility: int = 3,
           **kwargs: Any) -> tuple[Worker, list[list[Item]]]:
    s = settings(pollers=3, batch_window_ms=10, visibility_timeout=visibility)
    w = Worker(s, IdleStore(), source, source, Masker(list(s.masking_keys)),  # type: ignore[arg-type]
               **kwargs)
    settled: list[list[Item]] = []

    def settle(batch: list[Item]) -> Outcome:
        settled.append(batch)
        return Outcome(stored=len(batch), rejected=[("x", "r")])

    w.pipeline.settle = settle  # type: ignore[method-assign]
    return w, settled


def received(i: int, handle: str | None = None) -> Received:
    return Received(f"id{i}", handle or f"rh{i}", BODY, 1_700_000_000_000)


def hold(w: Worker, *messages: Received, age: float = 0.0) -> None:
    """Held as a receive holds them, last extended `age` seconds ago."""
    w.inflight.hold(messages)
    for h in w.inflight.due(-1.0):
        if h.message in messages:
            h.extended_at -= age


def held(w: Worker) -> dict[str, Held]:
    return {h.message.receipt_handle: h for h in w.inflight.due(-1.0)}


# --- Pipeline.settle over recording fakes (test_pipeline_settle)

Calls = list[tuple[str, Any]]


class RecordingTransaction:
    def __init__(self, store: RecordingStore) -> None:
        self.store = store
        self.claimed: list[str] = []
        self.rows: list[LoginEvent] = []

    def claim(self, claims: Sequence[tuple[str, str, int, bool]]) -> set[str]:
        self.store.calls.append(("claim", [c[0] for c in claims]))
        self.store.claims += claims
        self.store.outcomes.update((c[0], c[1]) for c in claims)
        if any(c[0] in self.store.refuse_claim for c in claims):
            raise pg.StringDataRightTruncation("value too long for the ledger")
        new = {c[0] for c in claims if c[0] not in self.store.ledger}
        self.claimed += sorted(new)
        return new

    def insert(self, events: Sequence[LoginEvent]) -> None:
        self.store.calls.append(("insert", [e.message_id for e in events]))
        for event in events:
            if event.user_id in self.store.refuse:
                raise self.store.refuse[event.user_id]
        self.rows += events

    def unclaim(self, claims: Sequence[tuple[str, int]]) -> None:
        ids = [i for i, _ in claims]
        if ids:
            self.store.calls.append(("unclaim", ids))
        self.claimed = [i for i in self.claimed if i not in ids]


class RecordingStore:
    """Rows and ledger entries become visible at COMMIT; an exception rolls the lot back.

    write() is the real Store.write over the fake transaction: its retries and its
    translation of psycopg's errors are the product's.
    """

    write = Store.write

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.ledger: set[str] = set()
        # the outcome each id was claimed with, as the ledger would keep it
        self.outcomes: dict[str, str] = {}
        # every claim as the pipeline made it: (id, outcome, day, redriven)
        self.claims: list[tuple[str, str, int, bool]] = []
        self.rows: list[LoginEvent] = []
        self.refuse: dict[str, BaseException] = {}
        self.refuse_claim: set[str] = set()
        self.commit_failures: list[BaseException] = []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[RecordingTransaction]:
        self.calls.append(("begin", None))
        tx = RecordingTransaction(self)
        try:
            yield tx
        except BaseException:
            self.calls.append(("rollback", None))
            raise
        if self.commit_failures:
            self.calls.append(("commit_failed", None))
            raise self.commit_failures.pop(0)
        self.ledger.update(tx.claimed)
        self.rows += tx.rows
        self.calls.append(("commit", None))


class RecordingQueue:
    def __init__(self, calls: Calls, name: str) -> None:
        self.calls = calls
        self.name = name
        self.sent: list[tuple[str, str]] = []
        self.refuse: set[str] = set()
        self.fail_after: int | None = None
        self.undeletable: set[str] = set()
        self.delete_error: QueueError | None = None

    def delete(self, messages: Sequence[Received]) -> list[str]:
        self.calls.append((f"{self.name}.delete", [m.message_id for m in messages]))
        if self.delete_error:
            raise self.delete_error
        return [m.message_id for m in messages if m.message_id in self.undeletable]

    def send_rejections(self, rejected: Sequence[tuple[Received, str]]) -> list[str]:
        self.calls.append((f"{self.name}.send", [(m.message_id, r) for m, r in rejected]))
        taken = [(m.message_id, r) for m, r in rejected if m.message_id not in self.refuse]
        if self.fail_after is not None:
            error = QueueError("dlq down", delivered=[i for i, _ in taken[:self.fail_after]])
            self.sent += taken[:self.fail_after]
            raise error
        self.sent += taken
        return [m.message_id for m, _ in rejected if m.message_id in self.refuse]


# --- the status page: counts and masked rows only (test_statuspage, test_freshness)

RAW_BODY = json.dumps({"user_id": "u1", "ip": "203.0.113.77", "device_id": "raw-device-4242"})


class DepthQueue:
    """Counts only; receiving would expose bodies, so it fails the test if ever called."""

    def __init__(self, label: str, depth: Depth | Exception) -> None:
        self.label = label
        self.url = f"http://127.0.0.1:4566/000000000000/q-{label}"
        self._depth = depth
        self.bodies = [RAW_BODY]
        self.calls = 0

    def depth(self) -> Depth:
        self.calls += 1
        if isinstance(self._depth, Exception):
            raise self._depth
        return self._depth

    def receive(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the status page must never receive messages")


class RowStore:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self.calls = 0

    def latest_rows(self, limit: int = 10) -> list[tuple[Any, ...]]:
        self.calls += 1
        return self.rows[:limit]

    def count_rows(self) -> int:
        return len(self.rows)


# --- Store.write over a transaction that fails on demand (test_store_errors)

class FailingStore:
    """The real Store.write over a transaction that raises what it is given, once each."""

    write = Store.write

    def __init__(self, *failures: BaseException, read_only_at: float = float("-inf")) -> None:
        self.failures = list(failures)
        self.attempts = 0
        self._read_only_at = read_only_at

    @contextlib.contextmanager
    def transaction(self) -> Iterator[str]:
        self.attempts += 1
        yield "tx"
        if self.failures:
            raise self.failures.pop(0)
