"""Every Prometheus metric of login-etl, declared once. Labels are bounded: no ids, no values."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector


class BatchHistogram(Collector):
    """A histogram fed a batch of observations at once: one lock per batch, where
    prometheus_client's Histogram takes one per observation (a settler observes hundreds of
    messages per commit, between two round trips to Postgres)."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(sorted(buckets))
        self._ms_bounds = tuple(b * 1000 for b in self.bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe_ages(self, sent_ms: list[int], now_ms: float) -> None:
        """Observe now - sent for each time (ms), in seconds: one bisect per value, one lock.

        An age below 0 (this clock behind SQS's) counts in the first bucket."""
        bounds = self._ms_bounds
        counts = [0] * (len(bounds) + 1)
        for ms in sent_ms:
            counts[bisect_left(bounds, now_ms - ms)] += 1
        total = max(0.0, (now_ms * len(sent_ms) - sum(sent_ms)) / 1000)
        with self._lock:
            for i, n in enumerate(counts):
                if n:
                    self._counts[i] += n
            self._sum += total

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding the q-quantile (inf past the last bound);
        None before any observation."""
        with self._lock:
            counts = list(self._counts)
        total = sum(counts)
        if not total:
            return None
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            running += n
            if running >= q * total:
                return bound
        return float("inf")

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                    sum_value=total)


# outcome: stored | rejected | duplicate.
MESSAGES = Counter("login_etl_messages", "Messages by final outcome", ["outcome"])
REJECTIONS = Counter("login_etl_rejections", "Rejected messages by reason code", ["reason"])
# attribute: login_etl_origin | login_etl_redrive_of (our names only, whatever a producer sets).
UNVERIFIED_MARKS = Counter(
    "login_etl_unverified_marks",
    "Attributes named like our sealed ledger ids that did not verify (ignored)", ["attribute"],
)
RETRIES = Counter("login_etl_retries", "Retried I/O calls by operation", ["operation"])
IO_ERRORS = Counter(
    "login_etl_io_errors", "I/O calls that failed after their retries, by operation", ["operation"]
)
BATCH_SECONDS = Histogram(
    "login_etl_batch_seconds", "Time to store and settle one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "login_etl_batch_messages", "Messages per batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
DB_COMMIT_SECONDS = Histogram(
    "login_etl_db_commit_seconds", "Time of the insert + ledger transaction including COMMIT",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SQS_SECONDS = Histogram(
    "login_etl_sqs_request_seconds", "SQS API call latency by operation", ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 21),
)
IN_FLIGHT = Gauge("login_etl_in_flight_messages", "Messages received and not yet settled")
# queue: source | dlq; state: visible | in_flight | delayed.
QUEUE_DEPTH = Gauge("login_etl_queue_messages", "Approximate queue depth", ["queue", "state"])
LAST_COMMIT = Gauge(
    "login_etl_last_commit_timestamp_seconds", "Unix time of the last successful commit"
)
LEDGER_MAINTENANCE_FAILURES = Counter(
    "login_etl_ledger_maintenance_failures",
    "Ledger maintenance runs (days ahead, drops, packing) that failed",
)
# What the alert reads: the first run fails within a second of start, before any scrape, so an
# increase() of the counter would not see it.
LEDGER_MAINTENANCE_FAILING = Gauge(
    "login_etl_ledger_maintenance_failing", "1 while the latest ledger maintenance run failed"
)
# dependency: postgres | sqs.
DEPENDENCY_UP = Gauge(
    "login_etl_dependency_up", "1 if the dependency answered its last check", ["dependency"]
)
# Sent (SQS SentTimestamp) -> committed, per stored row: "are we keeping up?".
FRESHNESS = BatchHistogram(
    "login_etl_freshness_seconds", "Seconds from a message's SentTimestamp to the commit of its row",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400),
)
OLDEST_IN_HAND = Gauge(
    "login_etl_oldest_message_age_seconds",
    "Seconds since the oldest message received and not yet settled was sent (0: none held)",
)

# Series that alerts read with increase() exist at 0 from the start: a series born at 1 by
# its first event has no earlier sample, so increase() would not count that event.
for _attribute in ("login_etl_origin", "login_etl_redrive_of"):
    UNVERIFIED_MARKS.labels(_attribute)
REJECTIONS.labels("dlq_refused")
