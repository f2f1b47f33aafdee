"""What a failed database write means to the worker: wait and retry, refuse one row, or give up.

psycopg's and psycopg_pool's exceptions stop at the store: its callers see StoreError (with
whether a wait can heal it) or RowRefused (one row of the batch is bad, with its SQLSTATE).
The descriptions carry exception types and SQLSTATEs only, never a value.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from login_etl import logs, retrying

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


# What a write can meet, by SQLSTATE class (two characters) or code (five), the longest match
# deciding, each marked with what the worker does and (above it) why:
#   wait  an outage: retried, then the worker pauses (unready) and resumes by itself
#   row   this row is bad: the batch is halved until it is alone, then it goes to the DLQ
#   stop  no wait heals it and no row is to blame: the worker exits for an operator
# An entry is here only where it decides something: anything not here stops the worker.
WAIT, ROW, STOP = "wait", "row", "stop"
SQLSTATES: dict[str, str] = {
    # Connection exception: the server or the network went away.
    "08": WAIT,
    # Data exception: a value of this row does not fit its column (22001 too long, 22P05
    # not representable in the database's encoding ...).
    "22": ROW,
    # Integrity constraint violation: this row breaks a constraint of user_logins ...
    "23": ROW,
    # ... but a check violation (23514) on the ledger's own tables is a claim filed in the
    # default partition while its day's partition was attached: a race inside the ledger,
    # never a row's fault; the next attempt files it in the new partition.
    "23514:ledger": WAIT,
    # Read-only transaction: a failover in progress, or a session to a standby; the session
    # is dropped (it stays read-only after the database is writable again).
    "25006": WAIT,
    # Idle-in-transaction session timeout: the server ended a stalled session.
    "25P03": WAIT,
    # Transaction rollback: the server undid the transaction and the same work can commit in
    # a new one: serialization failure (40001), deadlock (40P01: the other side commits),
    # statement completion unknown (40003: the ledger makes a repeat a no-op) ...
    "40": WAIT,
    # ... but a deferred constraint refused at COMMIT (40002) is a row of this batch.
    "40002": ROW,
    # Insufficient resources (disk full, out of memory, too many connections): freed by
    # other sessions or an operator, not by a restart of ours.
    "53": WAIT,
    # Program limit exceeded, an index row too big: a value of this row (other limits stop).
    "54000": ROW,
    # Object in use: another session holds it for a moment.
    "55006": WAIT,
    # Lock not available (lock_timeout): DDL, a packing or maintenance holds the table.
    "55P03": WAIT,
    # Operator intervention: query canceled (57014: statement_timeout, a stuck lock or a slow
    # server, or an operator's cancel), admin shutdown (57P01: pg_terminate_backend, a server
    # stopping for a failover), crash shutdown (57P02), cannot connect now (57P03: starting,
    # in recovery), idle session timeout (57P05) ...
    "57": WAIT,
    # ... but a dropped database (57P04) has nothing to write into until an operator acts.
    "57P04": STOP,
    # System error (58030 I/O error) on the server: its storage, not this batch; a failover
    # or a repair heals it.
    "58": WAIT,
    # Everything else stops, among them: invalid transaction state (25: a statement the
    # worker should not have sent), invalid authorization (28: a password or role no wait
    # brings back), invalid catalog name (3D: no such database), syntax error or access rule
    # violation (42: a missing table or column, no privilege: the schema or the grants need
    # an operator), program limits (54: the same statement meets them again), object not in
    # prerequisite state (55), feature not supported (0A), internal error or corruption (XX).
}
# Errors without a SQLSTATE, by the driver's class: the client lost the server or timed out
# waiting for a pooled connection (wait), the driver could not encode a value (row).
_NO_SQLSTATE: tuple[tuple[type[BaseException], str], ...] = (
    (psycopg.OperationalError, WAIT), (psycopg.DataError, ROW),
    (psycopg.IntegrityError, ROW), (UnicodeError, ROW),
)
_LEDGER_TABLES = "login_etl_ledger"


def entry(exc: BaseException) -> str | None:
    """The key of SQLSTATES that decides exc: its code, else its class; None if neither."""
    code = getattr(exc, "sqlstate", None)
    if not code:
        return None
    if code == "23514" and _on_ledger(exc):
        return "23514:ledger"
    return code if code in SQLSTATES else code[:2] if code[:2] in SQLSTATES else None


def _on_ledger(exc: BaseException) -> bool:
    diag = getattr(exc, "diag", None)
    table = getattr(diag, "table_name", None) or ""
    return table.startswith(_LEDGER_TABLES)


def verdict(exc: BaseException) -> str:
    """wait, row or stop for exc (see SQLSTATES)."""
    key = entry(exc)
    if key is not None:
        return SQLSTATES[key]
    if getattr(exc, "sqlstate", None):
        return STOP
    for cls, what in _NO_SQLSTATE:
        if isinstance(exc, cls):
            return what
    return STOP


def heals(exc: BaseException) -> bool:
    """What the store's retry policies wait out: SQLSTATES marks it `wait` (or a RetryAgain)."""
    return isinstance(exc, retrying.RetryAgain) or verdict(exc) == WAIT


def describe(exc: BaseException) -> str:
    """A short, value-free description for logs: class and SQLSTATE, never the message."""
    # The SQLSTATE comes from the server: made printable and short (logs.printable).
    code = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__}:{logs.printable(code, 16)}" if code else type(exc).__name__


def is_data_error(exc: BaseException) -> bool:
    """This row, not the database, is bad (SQLSTATES marks it `row`)."""
    return verdict(exc) == ROW


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
    return getattr(exc, "sqlstate", None) == "25006"


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
    retryable = verdict(exc) == WAIT
    return StoreError(f"database {'unavailable' if retryable else 'refused the batch'}: "
                      f"{describe(exc)}", retryable=retryable)


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
    # the server's words, made printable: they reach a terminal at start-up
    server = f"the server said: {logs.printable(said[-1].strip(), None)}" if said else None
    lowered = text.lower()
    for needles, what in _FAILURES:
        if all(n in lowered for n in needles):
            return f"{what} ({server})" if server else what
    if server:
        return server
    return type(exc).__name__
