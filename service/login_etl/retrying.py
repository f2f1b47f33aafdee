"""Retry policies for every I/O boundary, in one place.

Each policy is bounded, jittered and exponential, counts every retry in
login_etl_retries_total{operation}, and retries only what can heal by itself
(connection loss, timeouts, throttling, 5xx). A missing queue, denied access or a
constraint violation fails at once: retrying it would only hide the cause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from login_etl import metrics, pgerrors
from login_etl.logs import printable
from login_etl.sqs.http11 import MalformedResponse

T = TypeVar("T")

_RETRYABLE_SQS_CODES = frozenset({
    "ServiceUnavailable", "InternalError", "InternalFailure", "RequestThrottled",
    "ThrottlingException", "Throttling", "RequestTimeout", "SlowDown",
    # KMS.ThrottlingException is how the query protocol spells KmsThrottled.
    "KmsThrottled", "KMS.ThrottlingException",
    "AWS.SimpleQueueService.ServiceUnavailable",
})


class RetryAgain(Exception):
    """Raised by a call that partly failed (e.g. some entries of a batch); always retried."""


def sqs_retryable(exc: BaseException) -> bool:
    if isinstance(exc, RetryAgain | BotoConnectionError | HTTPClientError | ReadTimeoutError
                  | MalformedResponse):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in _RETRYABLE_SQS_CODES or status >= 500
    return isinstance(exc, BotoCoreError) and "connect" in type(exc).__name__.lower()


def db_retryable(exc: BaseException) -> bool:
    """What pgerrors' table of SQLSTATEs marks `wait`."""
    return isinstance(exc, RetryAgain) or pgerrors.verdict(exc) == pgerrors.WAIT


def describe(exc: BaseException) -> str:
    """A short, value-free description for logs: class and error code, never the message."""
    # The code and the SQLSTATE come from the server: made printable and short (logs.printable).
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        return f"{type(exc).__name__}:{printable(code, 64)}"
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}:{printable(sqlstate, 16)}" if sqlstate else type(exc).__name__


def _policy(operation: str, should_retry: Callable[[BaseException], bool], *, attempts: int,
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
# worker, which pauses and probes instead of spinning.
POLICIES: dict[str, Callable[[], Retrying]] = {
    "receive": lambda: _policy("receive", sqs_retryable, attempts=4, max_wait=2, max_delay=10),
    "delete": lambda: _policy("delete", sqs_retryable, attempts=6, max_wait=2, max_delay=15),
    "dlq_send": lambda: _policy("dlq_send", sqs_retryable, attempts=6, max_wait=2, max_delay=15),
    "visibility": lambda: _policy("visibility", sqs_retryable, attempts=4, max_wait=1,
                                  max_delay=5),
    "queue_attributes": lambda: _policy("queue_attributes", sqs_retryable, attempts=3,
                                        max_wait=1, max_delay=5),
    "send": lambda: _policy("send", sqs_retryable, attempts=6, max_wait=2, max_delay=30),
    "connect": lambda: _policy("connect", db_retryable, attempts=5, max_wait=2, max_delay=10),
    "commit": lambda: _policy("commit", db_retryable, attempts=5, max_wait=2, max_delay=15),
    # Creating the schema at start: a lock held by a claim or another replica's housekeeping
    # (55P03 after a second) is waited out for about a minute, not a reason to exit.
    "schema": lambda: _policy("schema", db_retryable, attempts=10, max_wait=30, max_delay=120),
}


def call(operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run fn under the policy of this operation.

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

    return POLICIES[operation]()(attempt)
