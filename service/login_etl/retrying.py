"""Retry policies for every I/O boundary, in one place.

Each policy is bounded, jittered and exponential, counts every retry in
login_etl_retries_total{operation}, and retries only what can heal by itself
(connection loss, timeouts, throttling, 5xx). A missing queue, denied access or a
constraint violation fails at once: retrying it would only hide the cause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from login_etl import metrics

T = TypeVar("T")
Predicate = Callable[[BaseException], bool]


class RetryAgain(Exception):
    """Raised by a call that partly failed (e.g. some entries of a batch); always retried."""


def heals(exc: BaseException) -> bool:
    """What the adapters' errors say a wait can heal: QueueError (translated as each SQS
    attempt fails) carries `retryable`; a RetryAgain always can."""
    return isinstance(exc, RetryAgain) or getattr(exc, "retryable", False) is True


def _policy(operation: str, should_retry: Predicate, *, attempts: int,
            max_wait: float, max_delay: float) -> Retrying:
    def count(_state: Any) -> None:
        metrics.RETRIES.labels(operation).inc()

    return Retrying(
        retry=retry_if_exception(should_retry),
        wait=wait_random_exponential(multiplier=0.1, max=max_wait),
        stop=stop_after_attempt(attempts) | stop_after_delay(max_delay),
        before_sleep=count,
        reraise=True,
    )


# The SQS calls on the hot path: a short outage is ridden out, a long one surfaces to the
# worker, which pauses and probes instead of spinning. Each policy is given what its caller's
# errors say a wait can heal (`heals` unless the call passes its own).
POLICIES: dict[str, Callable[[Predicate], Retrying]] = {
    "receive": lambda retry_if: _policy("receive", retry_if, attempts=4, max_wait=2,
                                        max_delay=10),
    "delete": lambda retry_if: _policy("delete", retry_if, attempts=6, max_wait=2, max_delay=15),
    "dlq_send": lambda retry_if: _policy("dlq_send", retry_if, attempts=6, max_wait=2,
                                         max_delay=15),
    "visibility": lambda retry_if: _policy("visibility", retry_if, attempts=4, max_wait=1,
                                           max_delay=5),
    "queue_attributes": lambda retry_if: _policy("queue_attributes", retry_if, attempts=3,
                                                 max_wait=1, max_delay=5),
    "send": lambda retry_if: _policy("send", retry_if, attempts=6, max_wait=2, max_delay=30),
    "connect": lambda retry_if: _policy("connect", retry_if, attempts=5, max_wait=2,
                                        max_delay=10),
    "commit": lambda retry_if: _policy("commit", retry_if, attempts=5, max_wait=2, max_delay=15),
    # Creating the schema at start: a lock held by a claim or another replica's housekeeping
    # (55P03 after a second) is waited out for about a minute, not a reason to exit.
    "schema": lambda retry_if: _policy("schema", retry_if, attempts=10, max_wait=30,
                                       max_delay=120),
}


def call(operation: str, fn: Callable[..., T], *args: Any, retry_if: Predicate = heals,
         **kwargs: Any) -> T:
    """Run fn under the policy of this operation; retry_if decides what a wait can heal (the
    store passes pgerrors.heals: psycopg's errors are classified by their SQLSTATE).

    The first attempt runs before any tenacity object exists: nearly every call succeeds at
    once, and building and running a Retrying costs a sizeable part of a lean SQS call. A
    failed first attempt is handed to the policy as its own first attempt, so the predicate,
    the number of attempts, the waits and the retry count are the policy's (its delay bound
    starts after that first attempt).
    """
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        failed: list[Exception] = [exc]

    def attempt() -> T:
        if failed:
            raise failed.pop()
        return fn(*args, **kwargs)

    return POLICIES[operation](retry_if)(attempt)
