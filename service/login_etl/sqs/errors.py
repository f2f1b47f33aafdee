"""What a failed SQS call means to the worker, decided where it fails: wait, or give up.

Both clients (the lean one and boto3's) fail with botocore's exceptions; Queue translates each
failed attempt into a QueueError here, so botocore stops at the SQS adapter as psycopg stops
at the store (pgerrors). The retry policies read `retryable`, callers read the subclass (a
queue that is gone, access denied, a batch refused for its content) and `delivered`; the
texts carry exception types and SQS error codes only, never a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from login_etl.logs import printable
from login_etl.retrying import RetryAgain
from login_etl.sqs.http11 import MalformedResponse

_RETRYABLE_CODES = frozenset({
    "ServiceUnavailable", "InternalError", "InternalFailure", "RequestThrottled",
    "ThrottlingException", "Throttling", "RequestTimeout", "SlowDown",
    # KMS.ThrottlingException is how the query protocol spells KmsThrottled.
    "KmsThrottled", "KMS.ThrottlingException",
    "AWS.SimpleQueueService.ServiceUnavailable",
})
# Error codes (whole call or one entry) that say what was sent cannot be taken as it is.
CONTENT_REFUSALS = ("BatchRequestTooLong", "MessageTooLong", "RequestEntityTooLarge",
                    "InvalidMessageContents", "InvalidParameterValue")
_GONE = ("NonExistentQueue", "QueueDoesNotExist")
# Denied access (AccessDenied, AccessDeniedException) and credentials SQS does not accept.
_DENIED = ("AccessDenied", "InvalidClientTokenId", "UnrecognizedClient", "SignatureDoesNotMatch",
           "InvalidSecurity")


class QueueError(RuntimeError):
    """A queue call failed (for good once its retries are spent); a value-free description.

    retryable: False for faults no wait can heal (missing queue, denied access, bad
    credentials). code: the SQS error code, "" when SQS did not answer one. delivered: for a
    batch call that failed part way, the entries the queue confirmed before it failed
    (send_rejections: message ids), so a retry does not send them again.
    """

    def __init__(self, message: str, *, retryable: bool = True, code: str = "",
                 delivered: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.delivered: list[str] = list(delivered)

    def having_delivered(self, delivered: Sequence[str]) -> QueueError:
        """The same failure, naming what was delivered before it (a new error: none mutates)."""
        copy = type(self)(str(self), retryable=self.retryable, code=self.code,
                          delivered=delivered)
        copy.__cause__ = self.__cause__
        return copy


class QueueGone(QueueError):
    """The queue does not exist (deleted, a wrong URL): a command says so and exits 2."""


class AccessDenied(QueueError):
    """The credentials may not use this queue, or SQS does not accept them: a command says so
    and exits 1 (as for a wrong database password)."""


class ContentRefused(QueueError):
    """A whole batch call refused for what its entries hold (their total size, or one entry's
    content), not for the queue or the caller: smaller groups can go through."""


def code_refuses_content(code: str) -> bool:
    return any(word in code for word in CONTENT_REFUSALS)


def retryable(exc: BaseException) -> bool:
    """Whether a wait can heal this failure of an SQS call: lost or broken connections, time
    outs, throttling, 5xx; not a missing queue, denied access or missing credentials."""
    if isinstance(exc, RetryAgain | BotoConnectionError | HTTPClientError | ReadTimeoutError
                  | MalformedResponse):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in _RETRYABLE_CODES or status >= 500
    return isinstance(exc, BotoCoreError) and "connect" in type(exc).__name__.lower()


def describe(exc: BaseException) -> str:
    """A short, value-free description for logs: class and error code, never the message."""
    # The code comes from the server: made printable and short (logs.printable).
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        return f"{type(exc).__name__}:{printable(code, 64)}"
    return type(exc).__name__


def _refused_for_content(exc: BaseException) -> bool:
    response: Any = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    error = response.get("Error") or {}
    code = f"{error.get('Code', '')} {error.get('QueryErrorCode', '')}"
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return status == 413 or code_refuses_content(code)


def translated(exc: BaseException, what: str) -> QueueError:
    """The QueueError for a failed attempt of `what` (an operation on a queue)."""
    if isinstance(exc, QueueError):
        return exc
    code = ""
    if isinstance(exc, ClientError):
        code = printable(str(exc.response.get("Error", {}).get("Code") or ""), 64)
    kind: type[QueueError] = QueueError
    if any(word in code for word in _GONE):
        kind = QueueGone
    elif any(word in code for word in _DENIED):
        kind = AccessDenied
    elif _refused_for_content(exc):
        kind = ContentRefused
    return kind(f"{what} failed: {describe(exc)}", retryable=retryable(exc), code=code)
