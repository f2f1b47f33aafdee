"""pgerrors.SQLSTATES by table: what every SQLSTATE psycopg knows means to a write.

Wrong either way hurts: an outage taken for a bad row sends good messages to the DLQ, one
taken for a refusal halts the worker (a failover becomes an exit); a refusal waited for hides
its cause behind an unready worker forever.
"""

from __future__ import annotations

import inspect
from typing import Any

import psycopg
import psycopg.errors as pg
import psycopg_pool
import pytest

from login_etl import pgerrors
from login_etl.pgerrors import ROW, SQLSTATES, STOP, WAIT, RowRefused, translated, verdict

# Written out here, not read from SQLSTATES: a change of the table must change this too.
# The longest of a code and its class decides; a class not listed stops.
EXPECTED_CLASSES = {"08": WAIT, "22": ROW, "23": ROW, "40": WAIT, "53": WAIT, "57": WAIT,
                    "58": WAIT}
EXPECTED_CODES = {
    "25006": WAIT, "25P03": WAIT, "40002": ROW, "54000": ROW, "55006": WAIT, "55P03": WAIT,
    "57P04": STOP,
}
# Those the issue of the failover names, each for itself.
NAMED = {"08006": WAIT, "08001": WAIT, "25006": WAIT, "40001": WAIT, "40P01": WAIT,
         "53100": WAIT, "53200": WAIT, "53300": WAIT, "55P03": WAIT, "57014": WAIT,
         "57P01": WAIT, "57P02": WAIT, "57P03": WAIT, "22001": ROW, "22P05": ROW,
         "23502": ROW, "23505": ROW, "23514": ROW, "42P01": STOP, "42501": STOP,
         "28P01": STOP, "3D000": STOP, "0A000": STOP, "XX000": STOP, "XX001": STOP,
         "25P02": STOP, "54001": STOP, "55000": STOP}


def expected(code: str) -> str:
    return EXPECTED_CODES.get(code) or EXPECTED_CLASSES.get(code[:2], STOP)


def psycopg_classes() -> list[type[psycopg.Error]]:
    return [c for _, c in sorted(vars(pg).items())
            if inspect.isclass(c) and issubclass(c, psycopg.Error) and getattr(c, "sqlstate", None)]


@pytest.mark.parametrize("cls", psycopg_classes(), ids=lambda c: f"{c.sqlstate}-{c.__name__}")
def test_each_sqlstate_psycopg_knows(cls: type[psycopg.Error]) -> None:
    assert verdict(cls()) == expected(cls.sqlstate)


@pytest.mark.parametrize(("code", "what"), sorted(NAMED.items()))
def test_the_named_ones(code: str, what: str) -> None:
    assert verdict(pg.lookup(code)()) == what
    assert expected(code) == what


def test_every_entry_decides_something() -> None:
    """Each entry is a verdict that differs from what its absence would give (the longest
    match left, or stop): the reasons are the comments above them."""
    for key, what in SQLSTATES.items():
        assert what in (WAIT, ROW, STOP), key
        assert len(key) in (2, 5) or key == "23514:ledger", key
        assert key == "23514:ledger" or expected(key) == what, key
        shorter = key[:2] if len(key) > 2 and key[:2] in SQLSTATES else None
        assert what != (SQLSTATES[shorter] if shorter else STOP), key


class _Diag:
    def __init__(self, table: str | None) -> None:
        self.table_name = table


def check_violation_on(table: str | None) -> psycopg.Error:
    """A 23514 as the server reports it, naming the table (psycopg fills diag from the
    server's answer; here it is given)."""

    class OnTable(pg.CheckViolation):
        @property
        def diag(self) -> Any:
            return _Diag(table)

    return OnTable("new row violates a constraint")


@pytest.mark.parametrize(("table", "what"), [
    ("login_etl_ledger_default", WAIT), ("login_etl_ledger", WAIT),
    ("login_etl_ledger_p20261207", WAIT), ("user_logins", ROW), (None, ROW), ("", ROW),
])
def test_a_check_violation_is_the_row_unless_on_the_ledger(table: str | None,
                                                           what: str) -> None:
    """The ledger's own 23514 is a race with a partition attach: never a row's fault."""
    error = check_violation_on(table)
    assert verdict(error) == what
    result = translated(error)
    assert isinstance(result, RowRefused) is (what == ROW)
    assert result.retryable is (what == WAIT)


@pytest.mark.parametrize(("exc", "what"), [
    (psycopg.OperationalError("server closed the connection"), WAIT),
    (psycopg_pool.PoolTimeout("no connection"), WAIT),
    (psycopg_pool.TooManyRequests("queue full"), WAIT),
    (psycopg.DataError("no code"), ROW),
    (psycopg.IntegrityError("no code"), ROW),
    (UnicodeEncodeError("latin-1", "ü", 0, 1, "not encodable"), ROW),
    (psycopg.InterfaceError("closed"), STOP),
    (psycopg.ProgrammingError("no code"), STOP),
    (psycopg.InternalError("no code"), STOP),
    (psycopg.Error("no code"), STOP),
    (ValueError("x"), STOP),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_errors_without_a_sqlstate_by_their_class(exc: BaseException, what: str) -> None:
    assert verdict(exc) == what


@pytest.mark.parametrize(("code", "text"), [
    ("25006", "database unavailable: ReadOnlySqlTransaction:25006"),
    ("57014", "database unavailable: QueryCanceled:57014"),
    ("55P03", "database unavailable: LockNotAvailable:55P03"),
    ("53300", "database unavailable: TooManyConnections:53300"),
    ("42P01", "database refused the batch: UndefinedTable:42P01"),
    ("XX001", "database refused the batch: DataCorrupted:XX001"),
])
def test_what_the_worker_says(code: str, text: str) -> None:
    assert str(translated(pg.lookup(code)("a value 10.0.0.1"))) == text


def test_only_a_read_only_session_is_dropped() -> None:
    dropped = [c.sqlstate for c in psycopg_classes() if pgerrors.drops_session(c())]
    assert dropped == ["25006"]
    # what is not psycopg's (a pool timeout, a lost socket) carries no SQLSTATE at all
    assert not pgerrors.drops_session(OSError("connection reset"))


class _CheckViolation(Exception):
    """A 23514 as another layer may hand it on: a SQLSTATE, and a diag or none."""

    sqlstate = "23514"

    def __init__(self, diag: object = None) -> None:
        super().__init__("new row violates check constraint")
        if diag is not None:
            self.diag = diag


class _Fields:
    def __init__(self, **fields: str) -> None:
        self.__dict__.update(fields)


@pytest.mark.parametrize(("exc", "what"), [
    (_CheckViolation(), ROW),
    (_CheckViolation(_Fields()), ROW),
    (_CheckViolation(_Fields(table_name="login_etl_ledger_p20240101")), WAIT),
], ids=["no-diag", "diag-without-table", "ledger"])
def test_a_check_violation_without_diagnostics_is_the_rows(exc: BaseException,
                                                           what: str) -> None:
    assert verdict(exc) == what


class _Info:
    def __init__(self, reported: dict[str, str]) -> None:
        self.reported = reported

    def parameter_status(self, name: str) -> str | None:
        return self.reported.get(name)


class _Conn:
    def __init__(self, **reported: str) -> None:
        self.info = _Info(reported)


@pytest.mark.parametrize(("reported", "read_only"), [
    ({"default_transaction_read_only": "off", "in_hot_standby": "off"}, False),
    ({"default_transaction_read_only": "on", "in_hot_standby": "off"}, True),
    ({"default_transaction_read_only": "off", "in_hot_standby": "on"}, True),
    ({"default_transaction_read_only": "on", "in_hot_standby": "on"}, True),
    # A server before PostgreSQL 14 (or a pooler) reports neither: the write finds out.
    ({}, False),
])
def test_a_read_only_session_by_what_the_server_reported(reported: dict[str, str],
                                                         read_only: bool) -> None:
    assert pgerrors.read_only(_Conn(**reported)) is read_only  # type: ignore[arg-type]
