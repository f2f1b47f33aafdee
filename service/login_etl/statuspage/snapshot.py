"""What the status views show, gathered in one snapshot: queue depths, counters, latest rows.

Gathering only reads: queue depths (GetQueueAttributes, counts only: no message is ever
received, so no raw body, which holds ip and device_id, can reach a view), the worker's
counters, and rows of user_logins, which hold masked tokens only. A snapshot is cached for
CACHE_SECONDS (longer when gathering it was slow: five times its cost, so a big table is read
at most a fifth of the time) and gathered by one thread at a time, so any number of refreshing
browsers costs SQS and Postgres one read per interval.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from login_etl import logs, metrics
from login_etl.messages import COLUMNS
from login_etl.pgerrors import describe
from login_etl.queue import Depth, QueueError

ROW_LIMIT = 10
CACHE_SECONDS = 1.5
MAX_CACHE_SECONDS = 60.0
SAMPLE_SECONDS = 5.0
WINDOW_MINUTES = 10
OUTCOMES = ("stored", "duplicate", "rejected")
DEPTH_FIELDS = ("visible", "in_flight", "delayed")


class DepthSource(Protocol):
    """What the page needs of a Queue: counts only, never a receive."""

    label: str
    url: str

    def depth(self) -> Depth: ...


class RowSource(Protocol):
    """What the page needs of a Store."""

    def latest_rows(self, limit: int = ...) -> list[tuple[Any, ...]]: ...

    def count_rows(self) -> int: ...


# -- the worker's counters --------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one worker process at one moment.

    `history` is set when they come from a worker's own page: its per-minute counts, which a
    terminal started just now could not have sampled itself.
    """

    messages: dict[str, float]
    rejections: dict[str, float]
    last_commit: float | None
    history: list[tuple[int, dict[str, int]]] | None = None
    # Sent -> committed: the p99's bucket bound and the rows observed since the worker
    # started; the age of the oldest message it holds (0: none).
    freshness_p99: float | None = None
    freshness_count: int = 0
    oldest_age: float | None = None


def _counters_from(families: Iterable[Any]) -> Counters:
    messages: dict[str, float] = {}
    rejections: dict[str, float] = {}
    last_commit: float | None = None
    for family in families:
        for sample in family.samples:
            if sample.name == "login_etl_messages_total":
                messages[sample.labels.get("outcome", "")] = sample.value
            # Zero: a series created at start for the alerts (metrics.py), not a rejection.
            elif sample.name == "login_etl_rejections_total" and sample.value:
                rejections[sample.labels.get("reason", "")] = sample.value
            elif sample.name == "login_etl_last_commit_timestamp_seconds" and sample.value > 0:
                last_commit = sample.value
    return Counters(messages, rejections, last_commit)


def local_counters() -> Counters:
    """This process's own counters (the page served by a worker)."""
    families = [*metrics.MESSAGES.collect(), *metrics.REJECTIONS.collect(),
                *metrics.LAST_COMMIT.collect()]
    counters = _counters_from(families)
    [oldest] = [s.value for f in metrics.OLDEST_IN_HAND.collect() for s in f.samples]
    return Counters(counters.messages, counters.rejections, counters.last_commit,
                    freshness_p99=metrics.FRESHNESS.quantile(0.99),
                    freshness_count=metrics.FRESHNESS.count, oldest_age=oldest)


def worker_counters(base_url: str, timeout: float = 1.0) -> Counters | None:
    """A running worker's throughput history, rejections and last commit, read from its
    /status.json (for `login-etl status` in another process); None if it does not answer."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/status.json",
                                    timeout=timeout) as response:
            data = json.loads(response.read(4_000_000))
        history = [(int(m["start"]), {o: int(m[o]) for o in OUTCOMES})
                   for m in data["throughput"]["minutes"]]
        rejections = {str(r["reason"]): float(r["count"]) for r in data["rejections"]["reasons"]}
        last = data["last_commit"]["timestamp"]
        fresh = data.get("freshness") or {}
        p99, oldest = fresh.get("p99"), fresh.get("oldest_in_hand")
        return Counters({}, rejections, float(last) if last else None, history,
                        freshness_p99=float(p99) if p99 is not None else None,
                        freshness_count=int(fresh.get("count") or 0),
                        oldest_age=float(oldest) if oldest is not None else None)
    except Exception:
        return None


class Throughput:
    """Messages settled per minute, from samples of the cumulative counters (a small ring).

    Keeps the first and last sample seen in each of the last `minutes` + 1 minutes; a
    minute's count is its last sample minus the previous minute's last. A counter that went
    down (the scraped worker restarted) counts from zero again.
    """

    def __init__(self, minutes: int = WINDOW_MINUTES) -> None:
        self.minutes = minutes
        self._lock = threading.Lock()
        self._ring: dict[int, tuple[dict[str, float], dict[str, float]]] = {}

    def add(self, totals: dict[str, float], now: float) -> None:
        minute = int(now // 60)
        with self._lock:
            first, _ = self._ring.get(minute, (totals, totals))
            self._ring[minute] = (first, dict(totals))
            for old in [m for m in self._ring if m < minute - self.minutes]:
                del self._ring[old]

    def per_minute(self, now: float) -> list[tuple[int, dict[str, int]]]:
        """(minute start as unix time, counts by outcome), oldest first; the last is in progress."""
        current = int(now // 60)
        with self._lock:
            ring = dict(self._ring)
        result = []
        previous: dict[str, float] | None = None
        for minute in range(current - self.minutes, current + 1):
            if minute in ring:
                first, last = ring[minute]
                base = previous if previous is not None else first
                counts = {o: _delta(last.get(o, 0.0), base.get(o, 0.0)) for o in OUTCOMES}
                previous = last
            else:
                counts = dict.fromkeys(OUTCOMES, 0)
            if minute > current - self.minutes:
                result.append((minute * 60, counts))
        return result


def _delta(now: float, before: float) -> int:
    return int(now - before) if now >= before else int(now)


# -- the snapshot -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueView:
    label: str
    name: str
    depth: Depth | None
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    queues: tuple[QueueView, ...]
    throughput: list[tuple[int, dict[str, int]]]
    rejections: list[tuple[str, int]]
    last_commit: float | None
    counters_scope: str
    counters_ok: bool
    columns: tuple[str, ...]
    rows: list[tuple[str | None, ...]]
    total_rows: int | None
    errors: list[str] = field(default_factory=list)
    freshness_p99: float | None = None
    freshness_count: int = 0
    oldest_age: float | None = None


def printable(value: Any) -> str | None:
    """A stored value as display text: control and bidi-override characters spelled out.

    Escaping keeps markup out; this keeps a stored value from moving a terminal's cursor or
    reordering the text around it.
    """
    if value is None:
        return None
    return logs.printable(value.isoformat() if isinstance(value, dt.date) else value, None)


class Snapshots:
    """Gathers snapshots, cached, one gatherer at a time."""

    def __init__(self, source: DepthSource, dlq: DepthSource, store: RowSource, *,
                 counters: Callable[[], Counters | None] = local_counters,
                 counters_scope: str = "this worker process", limit: int = ROW_LIMIT,
                 cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.queues = (source, dlq)
        self.store = store
        self.counters = counters
        self.counters_scope = counters_scope
        self.limit = limit
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.throughput = Throughput()
        self._lock = threading.Lock()
        self._cached: Snapshot | None = None
        self._cached_at = 0.0
        self._ttl = cache_seconds

    def sample(self) -> Counters | None:
        counters = self.counters()
        if counters is not None and counters.history is None:
            self.throughput.add(counters.messages, self.clock())
        return counters

    def start_sampling(self, every: float = SAMPLE_SECONDS) -> threading.Thread:
        """Sample the counters in the background so throughput has history before anyone looks."""
        def loop() -> None:
            while True:
                # A failed sample is a gap in the chart, not a reason to end the thread.
                with contextlib.suppress(Exception):
                    self.sample()
                time.sleep(every)

        thread = threading.Thread(target=loop, name="status-sampler", daemon=True)
        thread.start()
        return thread

    def snapshot(self) -> Snapshot:
        """The cached snapshot if fresh; while another thread gathers, the previous one."""
        cached = self._cached
        if cached is not None and time.monotonic() - self._cached_at < self._ttl:
            return cached
        # Callers wait only while there is no snapshot yet; later, the one gathering is alone.
        if cached is None:
            self._lock.acquire()
        elif not self._lock.acquire(blocking=False):
            return cached
        try:
            if self._cached is not None and time.monotonic() - self._cached_at < self._ttl:
                return self._cached
            started = time.monotonic()
            snapshot = self._gather()
            self._cached, self._cached_at = snapshot, time.monotonic()
            self._ttl = max(self.cache_seconds,
                            min(MAX_CACHE_SECONDS, 5 * (self._cached_at - started)))
            return snapshot
        finally:
            self._lock.release()

    def _gather(self) -> Snapshot:
        errors: list[str] = []
        views = []
        for queue in self.queues:
            try:
                views.append(QueueView(queue.label, queue.url.rstrip("/").rsplit("/", 1)[-1],
                                       queue.depth()))
            except Exception as exc:
                # QueueError's text holds no values; any other error is described by its type.
                # An error code in it came from the server: printable, as every error shown.
                message = logs.printable(str(exc) if isinstance(exc, QueueError)
                                         else type(exc).__name__)
                views.append(QueueView(queue.label, queue.url.rsplit("/", 1)[-1], None, message))
                errors.append(message)
        rows: list[tuple[str | None, ...]] = []
        total: int | None = None
        try:
            rows = [tuple(printable(v) for v in row) for row in self.store.latest_rows(self.limit)]
            total = self.store.count_rows()
        except Exception as exc:
            errors.append(logs.printable(f"database: {describe(exc)}"))
        counters = self.sample()
        now = self.clock()
        rejections = sorted(((printable(r) or "", int(n)) for r, n in
                             (counters.rejections.items() if counters else ()) if n > 0),
                            key=lambda item: (-item[1], item[0]))
        history = counters.history if counters and counters.history is not None else None
        if history is None:
            # No counters, no throughput: an empty window, not ten minutes of 0 settled.
            history = self.throughput.per_minute(now) if counters is not None else []
        return Snapshot(
            taken_at=now, queues=tuple(views), throughput=history,
            rejections=rejections, last_commit=counters.last_commit if counters else None,
            counters_scope=self.counters_scope, counters_ok=counters is not None,
            columns=COLUMNS, rows=rows, total_rows=total, errors=errors,
            freshness_p99=counters.freshness_p99 if counters else None,
            freshness_count=counters.freshness_count if counters else 0,
            oldest_age=counters.oldest_age if counters else None)
