"""What is retried, how often, and how it is described: every class of error decided by a table.

A wrong decision either way hurts: an error that cannot heal retried hides its cause behind
minutes of backoff (and a NoCredentialsError retried forever is an outage nobody sees), an
outage not retried turns a blip into a paused worker.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import botocore.exceptions as boto
import psycopg
import psycopg.errors as pg
import psycopg_pool
import pytest
import tenacity
import tenacity.nap
import tenacity.wait

from login_etl import metrics, retrying
from login_etl.pgerrors import describe as pg_describe
from login_etl.pgerrors import heals as db_retryable
from login_etl.retrying import RetryAgain, heals
from login_etl.sqs.errors import QueueError, translated
from login_etl.sqs.errors import describe as sqs_describe
from login_etl.sqs.errors import retryable as sqs_retryable

RETRYABLE_SQS_CODES = [
    "ServiceUnavailable", "InternalError", "InternalFailure", "RequestThrottled",
    "ThrottlingException", "Throttling", "RequestTimeout", "SlowDown", "KmsThrottled",
    "KMS.ThrottlingException", "AWS.SimpleQueueService.ServiceUnavailable",
]
PERMANENT_SQS_CODES = [
    "AccessDenied", "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
    "InvalidParameterValue", "InvalidClientTokenId", "SignatureDoesNotMatch", "MissingParameter",
    "KMS.AccessDeniedException", "OverLimit", "", "throttling", "ServiceUnavailable ",
]
# botocore's own classes that are an outage of the connection: everything else is permanent
# (missing or partial credentials, bad parameters, no region, an unknown endpoint ...).
BOTO_RETRIED = {
    "ConnectionError", "EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError",
    "SSLError", "HTTPClientError", "ConnectionClosedError", "ReadTimeoutError",
    "ResponseStreamingError",
}
# SQLSTATE classes waited for (pgerrors.SQLSTATES, tested in full in test_sqlstates.py):
# connection (08), transaction rollback (40), resources (53), operator intervention (57:
# shutdown, query canceled), the server's system errors (58) ...
PG_RETRIED_CLASSES = {"08", "40", "53", "57", "58"}
# ... and codes of other classes: a read-only database (a failover), an idle session ended,
# an object or a lock held by another session.
PG_RETRIED_CODES = {"25006", "25P03", "55006", "55P03"}
# Codes of those classes that no wait heals: a deferred constraint (a row), a dropped database.
PG_NOT_RETRIED_CODES = {"40002", "57P04"}
# (operation, attempts in all, the first included)
ATTEMPTS = [("receive", 4), ("delete", 6), ("dlq_send", 6), ("visibility", 4),
            ("queue_attributes", 3), ("send", 6), ("connect", 5), ("commit", 5), ("schema", 10)]


def client_error(code: str | None, status: int | None) -> boto.ClientError:
    response: dict[str, Any] = {}
    if code is not None:
        response["Error"] = {"Code": code, "Message": "m"}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return boto.ClientError(response, "ReceiveMessage")  # type: ignore[arg-type]


def bare(cls: type[BaseException]) -> BaseException:
    """An instance without running __init__ (botocore's want keyword arguments per class)."""
    exc = cls.__new__(cls)
    Exception.__init__(exc)
    return exc


def classes(module: Any, base: type) -> Iterator[type]:
    for _, value in sorted(vars(module).items()):
        if inspect.isclass(value) and issubclass(value, base):
            yield value


@pytest.mark.parametrize("code", RETRYABLE_SQS_CODES)
@pytest.mark.parametrize("status", [400, 403, None])
def test_each_retryable_sqs_code_is_retried_whatever_the_status(code: str, status: int | None) -> None:
    assert sqs_retryable(client_error(code, status)) is True


@pytest.mark.parametrize("code", PERMANENT_SQS_CODES)
def test_other_codes_with_a_4xx_status_are_not_retried(code: str) -> None:
    for status in (400, 403, 404, 413, 499):
        assert sqs_retryable(client_error(code, status)) is False, (code, status)


@pytest.mark.parametrize(("status", "retried"), [
    (500, True), (501, True), (502, True), (503, True), (504, True), (599, True),
    (499, False), (429, False), (400, False), (200, False), (0, False), (None, False),
])
def test_5xx_is_retried_4xx_is_not(status: int | None, retried: bool) -> None:
    assert sqs_retryable(client_error("SomethingNew", status)) is retried
    # an answer without an Error element is decided by its status alone
    assert sqs_retryable(client_error(None, status)) is retried


@pytest.mark.parametrize("cls", list(classes(boto, boto.BotoCoreError)), ids=lambda c: c.__name__)
def test_each_botocore_class(cls: type[BaseException]) -> None:
    assert sqs_retryable(bare(cls)) is (cls.__name__ in BOTO_RETRIED)


def test_botocore_classes_are_all_covered() -> None:
    names = {c.__name__ for c in classes(boto, boto.BotoCoreError)}
    assert names >= BOTO_RETRIED and {"NoCredentialsError", "PartialCredentialsError",
                                      "ParamValidationError", "NoRegionError"} <= names


def test_a_botocore_error_is_retried_by_the_word_connect_in_its_name_only() -> None:
    class ProxyConnectFailure(boto.BotoCoreError):
        fmt = "x"

    class CredentialRefreshFailure(boto.BotoCoreError):
        fmt = "x"

    class ConnectHandshakeLost(Exception):
        """Not botocore's: no decision by name."""

    assert sqs_retryable(ProxyConnectFailure()) is True
    assert sqs_retryable(CredentialRefreshFailure()) is False
    assert sqs_retryable(ConnectHandshakeLost()) is False
    assert sqs_retryable(boto.NoCredentialsError()) is False


@pytest.mark.parametrize("exc", [
    ValueError("x"), KeyError("x"), RuntimeError("x"), ConnectionResetError(), TimeoutError(),
    psycopg.OperationalError("x"),
], ids=lambda e: type(e).__name__)
def test_non_sqs_errors_are_not_retried_by_the_sqs_policies(exc: BaseException) -> None:
    assert sqs_retryable(exc) is False


def test_retry_again_is_retried_by_both() -> None:
    assert sqs_retryable(RetryAgain()) is True
    assert db_retryable(RetryAgain()) is True


@pytest.mark.parametrize("cls", [c for c in classes(pg, psycopg.Error) if getattr(c, "sqlstate", None)],
                         ids=lambda c: f"{c.sqlstate}-{c.__name__}")
def test_each_psycopg_class_by_its_sqlstate(cls: type[psycopg.Error]) -> None:
    assert cls.sqlstate is not None
    assert db_retryable(cls()) is (cls.sqlstate not in PG_NOT_RETRIED_CODES
                                   and (cls.sqlstate[:2] in PG_RETRIED_CLASSES
                                        or cls.sqlstate in PG_RETRIED_CODES))


@pytest.mark.parametrize(("exc", "retried"), [
    (psycopg.OperationalError("x"), True),
    (pg.SerializationFailure(), True),
    (pg.DeadlockDetected(), True),
    (pg.AdminShutdown(), True),
    (pg.QueryCanceled(), True),
    (pg.LockNotAvailable(), True),
    (pg.TooManyConnections(), True),
    (psycopg_pool.PoolTimeout("x"), True),
    (psycopg_pool.TooManyRequests("x"), True),
    (psycopg.InterfaceError("x"), False),
    (psycopg.ProgrammingError("x"), False),
    (psycopg.DataError("x"), False),
    (psycopg.IntegrityError("x"), False),
    (pg.UniqueViolation(), False),
    (pg.UndefinedTable(), False),
    (pg.InsufficientPrivilege(), False),
    (pg.InFailedSqlTransaction(), False),
    (psycopg.InternalError("x"), False),
    (psycopg.Error("x"), False),
    (ValueError("x"), False),
    (boto.EndpointConnectionError(endpoint_url="http://x"), False),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_db_classes(exc: BaseException, retried: bool) -> None:
    assert db_retryable(exc) is retried


# -- describe() -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("describe", "exc", "text"), [
    (sqs_describe, client_error("AccessDenied", 403), "ClientError:AccessDenied"),
    (sqs_describe, client_error(None, 500), "ClientError:?"),
    (pg_describe, pg.UniqueViolation("duplicate key value (secret-id)"), "UniqueViolation:23505"),
    (pg_describe, pg.AdminShutdown("terminating"), "AdminShutdown:57P01"),
    (pg_describe, psycopg.OperationalError("connection to 10.0.0.1 failed"), "OperationalError"),
    (sqs_describe, boto.EndpointConnectionError(endpoint_url="http://secret-host"),
     "EndpointConnectionError"),
    (sqs_describe, ValueError("the value 192.0.2.1"), "ValueError"),
    (pg_describe, ValueError("the value 192.0.2.1"), "ValueError"),
    (pg_describe, psycopg_pool.PoolTimeout("x"), "PoolTimeout"),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "")
def test_describe_names_the_class_and_code_never_the_message(describe: Any, exc: BaseException,
                                                             text: str) -> None:
    assert describe(exc) == text


def test_describe_cuts_a_servers_sqlstate_to_16_characters() -> None:
    # A SQLSTATE is 5 characters; anything longer came from a server that is not PostgreSQL.
    exc = pg.UniqueViolation("x")
    exc.sqlstate = "23505" + "9" * 40  # type: ignore[misc]
    assert pg_describe(exc) == "UniqueViolation:235059999999999…"


# -- the policies ---------------------------------------------------------------------------------


class Clock:
    """Fake monotonic time: tenacity's sleeps and delay bound run on it, instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """tenacity's own references to time and random are replaced, not the stdlib modules:
    nothing else in the process sees the fake clock."""
    fake = Clock()
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=fake.sleep))
    monkeypatch.setattr(tenacity, "time", SimpleNamespace(monotonic=fake.monotonic))
    # the upper end of every jittered wait, so the waits are known
    monkeypatch.setattr(tenacity.wait, "random", SimpleNamespace(uniform=lambda low, high: high))
    return fake


def retries(operation: str) -> float:
    return metrics.RETRIES.labels(operation)._value.get()


def always(exc: BaseException, calls: list[Any]) -> Any:
    def fn(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        raise exc
    return fn


@pytest.mark.parametrize(("operation", "attempts"), ATTEMPTS)
def test_attempts_per_policy(clock: Clock, operation: str, attempts: int) -> None:
    database = operation in ("connect", "commit", "schema")
    outage = pg.AdminShutdown() if database else translated(
        boto.ConnectTimeoutError(endpoint_url="http://x"), "receive_message on source queue")
    calls: list[Any] = []
    before = retries(operation)
    with pytest.raises(type(outage)):
        retrying.call(operation, always(outage, calls), 1, key="v",
                      retry_if=db_retryable if database else heals)
    assert len(calls) == attempts
    assert retries(operation) == before + attempts - 1
    # exponential from 0.1 s, doubling
    assert clock.sleeps == [0.1 * 2 ** n for n in range(attempts - 1)]


@pytest.mark.parametrize(("operation", "attempts"), ATTEMPTS)
def test_a_permanent_error_is_one_attempt_under_every_policy(clock: Clock, operation: str,
                                                            attempts: int) -> None:
    calls: list[Any] = []
    before = retries(operation)
    with pytest.raises(ValueError):
        retrying.call(operation, always(ValueError("x"), calls))
    assert len(calls) == 1 and retries(operation) == before and clock.sleeps == []


def test_the_policies_are_the_operations_of_the_product() -> None:
    assert sorted(retrying.POLICIES) == sorted(op for op, _ in ATTEMPTS)


def test_sqs_policies_do_not_retry_database_errors_and_back(clock: Clock) -> None:
    """A QueueError raised inside a commit (the DLQ hand-off) is not the commit policy's to
    retry, however retryable: the transaction is rolled back and the caller decides."""
    for operation, exc, retry_if in (
            ("receive", psycopg.OperationalError("x"), heals),
            ("commit", QueueError("dlq_send failed: ConnectTimeoutError"), db_retryable)):
        calls: list[Any] = []
        with pytest.raises(type(exc)):
            retrying.call(operation, always(exc, calls), retry_if=retry_if)
        assert len(calls) == 1, operation


@pytest.mark.parametrize(("exc", "healed"), [
    (QueueError("x"), True), (QueueError("x", retryable=False), False),
    (translated(client_error("AWS.SimpleQueueService.NonExistentQueue", 400), "q"), False),
    (translated(client_error("ServiceUnavailable", 503), "q"), True),
    (boto.ConnectTimeoutError(endpoint_url="http://x"), False), (RetryAgain(), True),
    (ValueError("x"), False),
], ids=lambda v: repr(v)[:40] if isinstance(v, BaseException) else str(v))
def test_the_sqs_policies_read_what_the_adapter_decided(exc: BaseException, healed: bool) -> None:
    """retrying holds no classification of its own: an SQS failure is retried because the
    adapter translated it into a QueueError that says so; a raw botocore error is not."""
    assert heals(exc) is healed


def test_arguments_are_kept_on_every_retry(clock: Clock) -> None:
    seen: list[tuple[Any, ...]] = []

    def fn(a: int, b: str, *, key: str, other: int = 0) -> str:
        seen.append((a, b, key, other))
        if len(seen) < 3:
            raise RetryAgain()
        return f"{a}{b}{key}{other}"

    assert retrying.call("delete", fn, 1, "x", key="k", other=5) == "1xk5"
    assert seen == [(1, "x", "k", 5)] * 3


def test_the_value_of_a_later_attempt_is_returned(clock: Clock) -> None:
    answers = iter([RetryAgain(), RetryAgain(), "third"])

    def fn() -> str:
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert retrying.call("receive", fn) == "third"
    assert clock.sleeps == [0.1, 0.2]


def test_the_last_error_itself_is_raised_not_a_retry_error(clock: Clock) -> None:
    errors = [RetryAgain("first"), RetryAgain("second"), RetryAgain("third")]

    def fn() -> None:
        raise errors.pop(0)

    with pytest.raises(RetryAgain, match="third"):
        retrying.call("queue_attributes", fn)


def test_waits_are_capped_at_max_wait(clock: Clock) -> None:
    policy = retrying._policy("t", sqs_retryable, attempts=9, max_wait=0.5, max_delay=1000)
    with pytest.raises(RetryAgain):
        policy(always(RetryAgain(), []))
    assert clock.sleeps == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5]


def test_the_delay_bound_stops_before_the_attempts_do(clock: Clock) -> None:
    calls: list[Any] = []

    def slow(*args: Any) -> None:
        calls.append(args)
        clock.now += 4
        raise RetryAgain()

    policy = retrying._policy("t", db_retryable, attempts=50, max_wait=2, max_delay=10)
    with pytest.raises(RetryAgain):
        policy(slow)
    # 4 s per attempt plus the waits (0.1, 0.2): the third attempt ends at 12.3 s >= 10
    assert len(calls) == 3


def test_retries_are_counted_under_their_own_operation(clock: Clock) -> None:
    before = {op: retries(op) for op, _ in ATTEMPTS}
    with pytest.raises(RetryAgain):
        retrying.call("visibility", always(RetryAgain(), []))
    after = {op: retries(op) for op, _ in ATTEMPTS}
    assert {op: after[op] - before[op] for op in after if after[op] != before[op]} == {
        "visibility": 3}


# (operation, attempts, max_delay): a call that fails slowly is cut by the delay bound.
DELAYS = [("receive", 4, 10), ("delete", 6, 15), ("dlq_send", 6, 15), ("visibility", 4, 5),
          ("queue_attributes", 3, 5), ("send", 6, 30), ("connect", 5, 10), ("commit", 5, 15),
          ("schema", 10, 120)]


@pytest.mark.parametrize(("operation", "attempts", "max_delay"), DELAYS)
def test_the_delay_bound_of_each_policy(clock: Clock, operation: str, attempts: int,
                                        max_delay: float) -> None:
    """The bound counts from the first retry: one slow attempt just past it ends the calls
    (2 in all), one just short of it allows a third."""
    for duration, calls_expected in ((max_delay - 0.05, 2), (max_delay - 0.15, 3)):
        calls: list[Any] = []

        def slow(duration: float = duration, calls: list[Any] = calls) -> None:
            calls.append(clock.now)
            clock.now += duration
            raise RetryAgain()

        with pytest.raises(RetryAgain):
            retrying.call(operation, slow)
        assert len(calls) == calls_expected, (operation, duration)
