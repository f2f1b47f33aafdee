"""What a failed database write means to the worker: wait and retry, refuse one row, or give up.

psycopg's and psycopg_pool's exceptions stop at the store: its callers see StoreError (with
whether a wait can heal it) or RowRefused (one row of the batch is bad, with its SQLSTATE).
The descriptions carry exception types and SQLSTATEs only, never a value.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from login_etl import retrying

# What a transaction can raise from the driver and the pool (the pool's PoolTimeout is a
# psycopg.OperationalError). UnicodeError: text the driver cannot encode for the connection's
# encoding, found before the server sees it.
DB_ERRORS = (psycopg.Error, UnicodeError)


class StoreError(RuntimeError):
    """The database refused or could not be reached after retries; value-free description."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        # False when no wait heals it (a missing table, no permission).
        self.retryable = retryable


class RowRefused(StoreError):
    """The database refused a row, not the batch: retrying the same batch cannot succeed,
    a smaller one without that row can (the pipeline halves the batch to find it)."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"the database refused a row ({sqlstate})", retryable=False)
        self.sqlstate = sqlstate


def is_data_error(exc: BaseException) -> bool:
    """Class 22 (data exception) and 23 (constraint violation): a row, not the database, is bad.
    So is text the driver cannot encode for the connection (UnicodeError, no SQLSTATE)."""
    return isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError
                      | UnicodeError)


class ReadOnlySession(psycopg.errors.ReadOnlySqlTransaction):
    """A pooled session the server said is read-only: every write on it would fail."""


def read_only(conn: psycopg.Connection[Any]) -> bool:
    """A session to a standby or one opened while its database was read-only: it stays so
    whatever the server becomes, so it is dropped, not retried. Both parameters are reported
    by the server (PostgreSQL 14+) at the start and on change: no round trip."""
    return (conn.info.parameter_status("default_transaction_read_only") == "on"
            or conn.info.parameter_status("in_hot_standby") == "on")


def drops_session(exc: BaseException) -> bool:
    """An error that condemns the session, not the server: read-only (25006)."""
    return isinstance(exc, psycopg.errors.ReadOnlySqlTransaction)


def sqlstate(exc: BaseException) -> str:
    """The server's SQLSTATE of a refused row; `encoding` for text the driver could not encode
    for the connection (no SQLSTATE: the server never saw it)."""
    if isinstance(exc, UnicodeError):
        return "encoding"
    return getattr(exc, "sqlstate", None) or "unknown"


def translated(exc: BaseException) -> StoreError:
    """The error a write's caller sees once the commit policy has given up on exc."""
    if is_data_error(exc):
        return RowRefused(sqlstate(exc))
    retryable = retrying.db_retryable(exc)
    return StoreError(f"database {'unavailable' if retryable else 'refused the batch'}: "
                      f"{retrying.describe(exc)}", retryable=retryable)


# Why a connection could not be made, in words that never quote the URL.

_REFUSALS = {
    "28P01": "password authentication failed", "28000": "the role may not log in here",
    "3D000": "the database does not exist", "42501": "permission denied",
    "53300": "too many connections", "57P03": "the server is starting up or shutting down",
}
# Errors at connection time mostly come without a SQLSTATE: told apart by libpq's wording,
# which is matched, never shown.
_FAILURES = (
    (("password authentication failed",), "password authentication failed"),
    (("pg_hba.conf",), "refused by the server's pg_hba.conf"),
    (("database", "does not exist"), "the database does not exist"),
    (("role", "does not exist"), "the role does not exist"),
    (("refused",), "connection refused"), (("resolve host",), "host name not found"),
    (("translate host",), "host name not found"), (("timeout",), "timed out"),
    (("timed out",), "timed out"), (("ssl",), "TLS negotiation failed"),
    (("invalid",), "an invalid connection option"),
)


# What a server (PostgreSQL or a pooler) sent back, as libpq quotes it after the attempt:
# '... port 6432 failed: FATAL:  unsupported startup parameter: options'.
_SERVER_SAID = re.compile(r" failed: (?:FATAL|ERROR|PANIC):  ([^\n]{1,300})")


# Refusals the server sends that no wait heals: retrying them only delays the one line that
# says what is wrong. Matched in the server's own words, after "FATAL:".
_FOR_GOOD = re.compile(r"FATAL:  (?:password authentication failed|no pg_hba\.conf entry"
                       r"|(?:role|database) \"[^\n]*\" does not exist"
                       r"|unsupported startup parameter)")


class RefusedForGood(Exception):
    """Not a psycopg error, so the connect policy does not retry it."""

    def __init__(self, error: psycopg.OperationalError) -> None:
        super().__init__()
        self.error = error


def refused_for_good(exc: psycopg.OperationalError) -> bool:
    return _FOR_GOOD.search(str(exc)) is not None


def why_not(exc: psycopg.Error) -> str:
    """The server's own refusal, else a fixed description, never libpq's client-side text:
    that can quote a mistyped URL, and with it a piece of the password (an unencoded "@" in
    it makes the rest look like the host). A server never echoes a password."""
    sqlstate = exc.sqlstate
    if sqlstate in _REFUSALS:
        return f"{_REFUSALS[sqlstate]} ({sqlstate})"
    text = str(exc)
    said = _SERVER_SAID.findall(text)
    server = f"the server said: {said[-1].strip()}" if said else None
    lowered = text.lower()
    for needles, what in _FAILURES:
        if all(n in lowered for n in needles):
            return f"{what} ({server})" if server else what
    if server:
        return server
    return type(exc).__name__
