"""What a failed database write means to the worker: wait and retry, refuse one row, or give up.

psycopg's and psycopg_pool's exceptions stop at the store: its callers see StoreError (with
whether a wait can heal it) or RowRefused (one row of the batch is bad, with its SQLSTATE).
The descriptions carry exception types and SQLSTATEs only, never a value.
"""

from __future__ import annotations

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
