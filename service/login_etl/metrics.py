"""Every Prometheus metric of login-etl, declared once. Labels are bounded: no ids, no values."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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

# Series that alerts read with increase() exist at 0 from the start: a series born at 1 by
# its first event has no earlier sample, so increase() would not count that event.
for _attribute in ("login_etl_origin", "login_etl_redrive_of"):
    UNVERIFIED_MARKS.labels(_attribute)
REJECTIONS.labels("dlq_refused")
