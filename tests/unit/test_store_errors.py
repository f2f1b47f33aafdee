"""psycopg's errors stop at the store: what each becomes, and what Store.write retries.

The pipeline only sees RowRefused (halve the batch) and StoreError (pause, or halt when no wait
heals it), so a wrong translation here either drops good rows to the DLQ or halts the worker
on one bad row.
"""

from __future__ import annotations

import time

import psycopg
import psycopg.errors as pg
import psycopg_pool
import pytest

from login_etl import metrics
from login_etl.pgerrors import RowRefused, StoreError, translated
from login_etl.queue import QueueError
from login_etl.store import Store
from tests.unit.fakes import FailingStore

# (error, retryable, the description the worker logs and halts with)
WHOLE_BATCH = [
    (psycopg.OperationalError("server closed the connection"), True,
     "database unavailable: OperationalError"),
    (psycopg_pool.PoolTimeout("no connection in 3 s"), True, "database unavailable: PoolTimeout"),
    (pg.SerializationFailure("could not serialize"), True,
     "database unavailable: SerializationFailure:40001"),
    (pg.UndefinedTable("no user_logins"), False,
     "database refused the batch: UndefinedTable:42P01"),
    (pg.InsufficientPrivilege("permission denied"), False,
     "database refused the batch: InsufficientPrivilege:42501"),
]

# (error, the SQLSTATE of the refused row)
ONE_ROW = [
    (pg.CheckViolation("new row violates check constraint"), "23514"),
    (pg.UniqueViolation("duplicate key"), "23505"),
    (pg.StringDataRightTruncation("value too long"), "22001"),
    (pg.UntranslatableCharacter("no equivalent in LATIN1"), "22P05"),
    (psycopg.DataError("no code"), "unknown"),
    (UnicodeEncodeError("latin-1", "ü", 0, 1, "not encodable"), "encoding"),
]


@pytest.mark.parametrize(("error", "retryable", "text"), WHOLE_BATCH)
def test_a_failed_transaction_is_a_store_error(error: BaseException, retryable: bool,
                                               text: str) -> None:
    result = translated(error)
    assert type(result) is StoreError
    assert result.retryable is retryable and str(result) == text


@pytest.mark.parametrize(("error", "sqlstate"), ONE_ROW)
def test_a_bad_row_is_a_row_refusal_with_its_sqlstate(error: BaseException,
                                                      sqlstate: str) -> None:
    result = translated(error)
    assert isinstance(result, RowRefused) and isinstance(result, StoreError)
    assert result.sqlstate == sqlstate and result.retryable is False
    assert str(result) == f"the database refused a row ({sqlstate})"


def test_a_store_error_is_retryable_unless_said_otherwise() -> None:
    assert StoreError("x").retryable is True
    assert StoreError("x", retryable=False).retryable is False


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _s: None)


def io_errors() -> float:
    return metrics.IO_ERRORS.labels("commit")._value.get()


def test_write_returns_what_the_work_returns_once_committed() -> None:
    store = FailingStore(psycopg.OperationalError("lost"))
    assert store.write(lambda tx: f"{tx} done") == "tx done"
    assert store.attempts == 2


@pytest.mark.parametrize("error", [psycopg.OperationalError("lost"),
                                   psycopg_pool.PoolTimeout("no connection")])
def test_write_gives_up_after_the_commit_policy_and_counts_one_io_error(
        error: BaseException) -> None:
    store = FailingStore(*[error] * 5)
    before = io_errors()
    with pytest.raises(StoreError) as info:
        store.write(lambda tx: None)
    assert store.attempts == 5 and info.value.retryable is True
    assert info.value.__cause__ is error
    assert io_errors() == before + 1


def test_a_pool_timeout_after_read_only_sessions_were_dropped_says_read_only() -> None:
    """The pool drops read-only sessions in its check, so the write meets only a timeout."""
    now = time.monotonic()
    for read_only_at, text in ((now - 1, "database unavailable: read-only (25006)"),
                               (now - 60, "database unavailable: PoolTimeout")):
        store = FailingStore(*[psycopg_pool.PoolTimeout("no connection")] * 5,
                          read_only_at=read_only_at)
        with pytest.raises(StoreError) as info:
            store.write(lambda tx: None)
        assert str(info.value) == text and info.value.retryable is True


def test_a_refused_row_is_one_attempt_and_no_io_error() -> None:
    store = FailingStore(pg.CheckViolation("refused"))
    before = io_errors()
    with pytest.raises(RowRefused) as info:
        store.write(lambda tx: None)
    assert store.attempts == 1 and info.value.sqlstate == "23514"
    assert io_errors() == before


def test_what_the_work_raises_otherwise_passes_through_unchanged() -> None:
    store = FailingStore()
    error = QueueError("dlq down")
    before = io_errors()

    def work(tx: str) -> None:
        raise error

    with pytest.raises(QueueError) as info:
        store.write(work)
    assert info.value is error and store.attempts == 1
    assert io_errors() == before


SERVER_REFUSALS = [
    ('FATAL:  password authentication failed for user "etl"', "password authentication failed"),
    ('FATAL:  database "nope" does not exist', "the database does not exist"),
    ('FATAL:  role "nope" does not exist', "the role does not exist"),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "etl"',
     "refused by the server's pg_hba.conf"),
    ("FATAL:  unsupported startup parameter: options", "the server said: unsupported"),
]


@pytest.mark.parametrize(("said", "reported"), SERVER_REFUSALS)
def test_a_refusal_no_wait_heals_is_not_retried_at_connect(
        monkeypatch: pytest.MonkeyPatch, said: str, reported: str) -> None:
    attempts: list[str] = []

    def connect(*_args: object, **_kwargs: object) -> None:
        attempts.append("connect")
        raise psycopg.OperationalError(
            f'connection failed: connection to server at "127.0.0.1", port 5432 failed: {said}')

    monkeypatch.setattr(psycopg, "connect", connect)
    with pytest.raises(StoreError) as caught:
        Store("postgresql://etl@127.0.0.1:5432/etl").open(wait_seconds=3)
    assert attempts == ["connect"]
    assert caught.value.retryable is False
    assert reported in str(caught.value)


def test_a_refused_connection_is_retried_at_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[str] = []

    def connect(*_args: object, **_kwargs: object) -> None:
        attempts.append("connect")
        raise psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed:'
            " Connection refused")

    monkeypatch.setattr(psycopg, "connect", connect)
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _seconds: None)
    with pytest.raises(StoreError) as caught:
        Store("postgresql://etl@127.0.0.1:5432/etl").open(wait_seconds=3)
    assert len(attempts) == 5
    assert caught.value.retryable is True
    assert "connection refused" in str(caught.value)
