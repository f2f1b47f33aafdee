"""The Postgres side: the pool, the schema, and the one-transaction write of rows + ledger.

The ledger (login_etl_ledger, see ledger.py) holds the SQS message id of every message
settled, written in the same transaction as its row. A redelivered message finds its id there
and becomes a no-op, which is what makes "commit, then delete" safe against crashes between
the two, an ambiguous commit (connection lost after COMMIT was sent), and several replicas at
once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from login_etl import ledger, metrics, retrying
from login_etl.messages import COLUMNS, LoginEvent
from login_etl.pgerrors import (
    DB_ERRORS,
    WAIT,
    ReadOnlySession,
    RefusedForGood,
    RowRefused,
    StoreError,
    describe,
    drops_session,
    heals,
    read_only,
    refused_for_good,
    translated,
    verdict,
    why_not,
)

T = TypeVar("T")
# The table as it exists in production, its columns in the order of messages.COLUMNS: created
# with the ledger's tables, under the same lock (ledger.init).
SCHEMA = ledger.ROWS_DDL
# The rows' lines (LoginEvent.line) hold the columns in this order.
_COPY = f"COPY user_logins ({', '.join(COLUMNS)}) FROM STDIN"
# Heap pages latest_rows reads first (about 500 rows of user_logins): the latest rows
# without a scan of the whole table.
_TAIL_PAGES = 8


# Startup parameters PgBouncer passes on (it refuses `options`): the statement bounds are set
# per transaction instead (Bounds). Keepalives find dead peers.
CONNECTION_OPTIONS: dict[str, Any] = {
    # With the ledger protocol's version: replicas of older versions are told apart by it
    # (ledger.replicas).
    "application_name": ledger.replicas.APPLICATION_NAME,
    # Text goes to the server as UTF-8 whatever the database's encoding, so the server decides
    # per row what it can store (untranslatable text is a row's data error, 22P05), never the
    # driver for a whole batch. A startup parameter PgBouncer passes on and tracks.
    "client_encoding": "UTF8",
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
}
# No server-side prepared statements: behind PgBouncer in transaction mode the next
# transaction may run on a server connection that never saw the PREPARE.
CONNECTION_KWARGS: dict[str, Any] = {**CONNECTION_OPTIONS, "prepare_threshold": None}


@dataclass(frozen=True)
class Bounds:
    """Limits on every transaction, so a stuck lock or a half-dead server cannot hold a batch
    (and a shutdown) forever; both errors are retried like an outage.

    Set with set_config(..., true) (SET LOCAL) as the first statement of each transaction:
    session settings would not survive transaction pooling, where each transaction may run
    on another server connection.
    """

    statement_ms: int = 30_000
    lock_ms: int = 10_000
    idle_in_transaction_ms: int = 60_000

    def sql(self) -> str:
        # Answers one value, the database's UTC day: the ledger's "today", never a replica's
        # clock (read with the bounds, so no statement of its own). Store.bounded sends it in
        # the same message as its BEGIN.
        return ("SELECT (now() AT TIME ZONE 'UTC')::date - DATE '1970-01-01' FROM (SELECT"
                f" set_config('statement_timeout', '{self.statement_ms:d}', true),"
                f" set_config('lock_timeout', '{self.lock_ms:d}', true),"
                " set_config('idle_in_transaction_session_timeout',"
                f" '{self.idle_in_transaction_ms:d}', true)) AS bounds")


# psycopg_pool doubles the wait between reconnect attempts without bound (1, 2, 4, 8, 16 s),
# so after a 15 s outage the pool could sit out another 16 s with the server back. Each run of
# attempts is cut after this long and a new one started at once: one attempt about every
# second, for as long as the outage lasts.
RECONNECT_SECONDS = 1.0


# A pool timeout this soon after a read-only session was dropped is reported as read-only.
READ_ONLY_SAID_SECONDS = 10.0


def _reconnect_now(pool: ConnectionPool[Any]) -> None:
    """The pool gave up a run of reconnect attempts: check() starts the next one now."""
    if not pool.closed:
        pool.check()


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """End a failed transaction; an error doing so is the session's end, left to the pool
    (the first error is the one raised)."""
    if conn.info.transaction_status in (psycopg.pq.TransactionStatus.INTRANS,
                                        psycopg.pq.TransactionStatus.INERROR):
        with contextlib.suppress(psycopg.Error):
            conn.rollback()


def _once(_operation: str, fn: Callable[..., T], *args: Any, retry_if: Any = None,
          **kwargs: Any) -> T:
    return fn(*args, **kwargs)


class Store:
    def __init__(self, database_url: str, *, pool_size: int = 2,
                 bounds: Bounds | None = None) -> None:
        self.bounds = bounds or Bounds()
        self._begin_sql = f"BEGIN; {self.bounds.sql()}"
        # A settle's: with the ledger claim's savepoint already set.
        self._begin_claim_sql = f"{self._begin_sql}; SAVEPOINT {ledger.CLAIM_SAVEPOINT}"
        # Whether claims also consult login_etl_ledger_legacy, the unpartitioned ledger an
        # earlier schema kept (ledger.py), until no id it holds can be redelivered.
        self.legacy = False
        # The database's UTC day (days since 1970-01-01) as of the latest transaction begun:
        # read with each transaction's bounds.
        self.today = 0
        # Whether the redriven copies' table exists (a role without CREATE on a schema of
        # before runs without it until init-db adds it).
        self.redriven = True
        # Whether the replicas' registry exists (ledger.replicas).
        self.registry = True
        # When the pool last dropped a read-only session: a pool timeout meanwhile is that.
        self._read_only_at = float("-inf")
        self._conninfo = database_url
        self.pool = ConnectionPool(
            database_url, min_size=1, max_size=max(1, pool_size), open=False,
            kwargs=CONNECTION_KWARGS, name="login-etl", timeout=3,
            check=self._usable,
            reconnect_timeout=RECONNECT_SECONDS, reconnect_failed=_reconnect_now,
        )

    def _usable(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check before each use: alive, and not a read-only session (after a
        failover such a session stays read-only while the server is writable again), which
        the pool then drops and replaces (a failed check given back open would be handed out
        again)."""
        if read_only(conn):
            self._read_only_at = time.monotonic()
            conn.close()
            raise ReadOnlySession()
        ConnectionPool.check_connection(conn)

    def open(self, wait_seconds: float = 10.0, *, patient: bool = True) -> None:
        """Connect once directly, then open the pool: a wrong host, database, role or
        password fails at start with what went wrong (a pool that times out only says
        PoolTimeout). Patient: under the connect policy; else one attempt (the caller waits
        between its own). Again after a failure: the pool is opened once."""
        call = retrying.call if patient else _once
        try:
            call("connect", self._probe, wait_seconds, retry_if=heals)
        except RefusedForGood as refused:
            raise StoreError(f"cannot connect to the database: {why_not(refused.error)}",
                             retryable=False) from refused.error
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the database: {why_not(exc)}") from exc
        self.pool.open()
        try:
            call("connect", self.pool.wait, timeout=wait_seconds, retry_if=heals)
        except Exception as exc:
            raise StoreError(f"cannot connect to the database: {describe(exc)}") from exc

    def _probe(self, wait_seconds: float) -> None:
        timeout = max(1, int(wait_seconds / 3))
        try:
            psycopg.connect(self._conninfo, connect_timeout=timeout,
                            **CONNECTION_KWARGS).close()
        except psycopg.OperationalError as exc:
            if refused_for_good(exc):
                raise RefusedForGood(exc) from exc
            raise

    def close(self, timeout: float = 1.0) -> None:
        """Short: at shutdown the bound matters more than a tidy goodbye to a stuck server."""
        self.pool.close(timeout=timeout)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection without Bounds (for tools and tests); the store's own
        statements all run in bounded()."""
        with self.pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def bounded(self, timeout: float | None = None, *, claim: bool = False
                ) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction that starts by setting its Bounds (and
        with claim, the ledger claim's savepoint).

        Every statement of the store runs in one: a read alone would otherwise carry no
        statement_timeout at all behind PgBouncer.
        """
        with self.pool.connection(timeout=timeout) as conn:
            # BEGIN and the bounds in one message, one round trip: in autocommit mode psycopg
            # sends no BEGIN of its own, and COMMIT / ROLLBACK are sent here. The statements
            # inside still nest their savepoints with conn.transaction().
            conn.autocommit = True
            try:
                cur = conn.execute(self._begin_claim_sql if claim else self._begin_sql)
                cur.nextset()
                row = cur.fetchone()
                if row:
                    self.today = row[0]
                try:
                    yield conn
                except BaseException:
                    _rollback(conn)
                    raise
                # COMMIT of a transaction an error aborted answers ROLLBACK, not an error:
                # taken for a commit, its messages would be deleted with no row behind them.
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
                    raise psycopg.errors.InFailedSqlTransaction(
                        "the transaction was aborted by an error that was not raised")
                conn.commit()
            except psycopg.Error as exc:
                _rollback(conn)
                # Closed, the pool drops it and connects anew instead of handing it out again.
                if drops_session(exc):
                    conn.close()
                raise
            finally:
                # A broken connection keeps it: the pool drops that one anyway.
                with contextlib.suppress(psycopg.Error):
                    conn.autocommit = False

    def init_schema(self, keep_days: int = ledger.DEFAULT_KEEP_DAYS) -> None:
        """The tables and the ledger's days (ledger.init); a role without CREATE can run
        against an existing schema. A lock another transaction holds is waited for."""
        try:
            retrying.call("schema", ledger.init, self, keep_days, retry_if=heals)
        except psycopg.Error as exc:
            # Unreachable, read-only or a lock held: waited out by a starting daemon.
            raise StoreError(f"cannot create the schema: {describe(exc)}",
                             retryable=verdict(exc) == WAIT) from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """BEGIN ... COMMIT on one pooled connection; an exception rolls back. One attempt,
        psycopg's errors as they are: write() is the way in that retries and translates."""
        started = time.perf_counter()
        with self.bounded(claim=True) as conn:
            yield Transaction(conn, self, claim_savepoint=True)
        metrics.DB_COMMIT_SECONDS.observe(time.perf_counter() - started)

    def write(self, work: Callable[[Transaction], T]) -> T:
        """work(tx) in one transaction, attempted again under the commit policy while the
        database is unavailable; its result once committed.

        Raises RowRefused when the database refuses a row of it (not retried: the same rows
        would be refused again) and StoreError when it failed the transaction otherwise.
        Whatever else work raises (the DLQ hand-off's QueueError) rolls back and passes
        through unchanged.
        """
        def attempt() -> T:
            with self.transaction() as tx:
                return work(tx)

        try:
            return retrying.call("commit", attempt, retry_if=heals)
        except DB_ERRORS as exc:
            error = translated(exc)
            # Said as what it is: the sessions the pool dropped were read-only.
            if (isinstance(exc, PoolTimeout)
                    and time.monotonic() - self._read_only_at < READ_ONLY_SAID_SECONDS):
                error = StoreError("database unavailable: read-only (25006)")
            if not isinstance(error, RowRefused):
                metrics.IO_ERRORS.labels("commit").inc()
            raise error from exc

    def ping(self) -> bool:
        """Whether a write could commit now: a read-only database answers, and is still down."""
        try:
            with self.bounded(timeout=2) as conn:
                row = conn.execute("SELECT current_setting('transaction_read_only')").fetchone()
                if not row or row[0] != "off":
                    raise ReadOnlySession()
            return True
        except Exception:
            return False

    def maintain_ledger(self, keep_days: int, redrive_keep: int | None = None
                        ) -> ledger.Maintenance:
        """The ledger's hourly housekeeping (ledger.maintain)."""
        return ledger.maintain(self, keep_days, redrive_keep)

    def count_rows(self) -> int:
        """Exact up to a million rows; beyond that the planner's estimate (a display figure,
        so a status page refreshing every few seconds never scans a big table)."""
        with self.bounded() as conn:
            row = conn.execute(
                "SELECT CASE WHEN c.reltuples > 1000000 THEN c.reltuples::bigint"
                " ELSE (SELECT count(*) FROM user_logins) END"
                " FROM pg_class c WHERE c.oid = 'user_logins'::regclass"
            ).fetchone()
            return int(row[0]) if row else 0

    def latest_rows(self, limit: int = 10) -> list[tuple[Any, ...]]:
        """The most recently written rows: the table has no key, so physical order stands in.

        Only the last pages of the heap are read (a TID range scan), not the whole table.
        """
        with self.bounded() as conn:
            pages = conn.execute(
                "SELECT pg_relation_size('user_logins') / current_setting('block_size')::int"
            ).fetchone()
            start = f"({max(0, int(pages[0] if pages else 0) - _TAIL_PAGES)},0)"
            rows = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM user_logins WHERE ctid >= %s::tid"
                " ORDER BY ctid DESC LIMIT %s", (start, limit)).fetchall()
            # A sparse tail (rows deleted at the end of the heap): read in full ctid order.
            if len(rows) < limit:
                rows = conn.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM user_logins ORDER BY ctid DESC LIMIT %s",
                    (limit,),
                ).fetchall()
            return rows

    def clear(self) -> int:
        with self.bounded() as conn:
            rows = conn.execute("SELECT count(*) FROM user_logins").fetchone()
            conn.execute(f"TRUNCATE user_logins, {ledger.TABLE}, {ledger.PACKED}"
                         + (f", {ledger.REDRIVEN}" if self.redriven else ""))
            conn.execute(f"DROP TABLE IF EXISTS {ledger.LEGACY}")
            self.legacy = False
            return int(rows[0]) if rows else 0


class Transaction:
    """The statements of one settle: claim ids in the ledger, then COPY the new rows."""

    def __init__(self, conn: psycopg.Connection[Any], store: Store | None = None, *,
                 claim_savepoint: bool = False) -> None:
        self.conn = conn
        self.store = store
        # Whether the transaction began with the claim's savepoint, nothing done since.
        self._savepoint = claim_savepoint

    def claim(self, claims: Sequence[ledger.Claim]) -> set[str]:
        """File (message id, outcome, day[, redriven]) in the ledger; the ids not seen before
        (ledger.claim). The first claim uses the savepoint set with BEGIN; a later one (a
        rollback to it would undo the first) sets its own."""
        fresh, self._savepoint = self._savepoint, False
        return ledger.claim(self.conn, claims, self.store, savepoint_set=fresh)

    def unclaim(self, claims: Sequence[tuple[str, int]]) -> None:
        """Take (message id, day) claims back out of the ledger within this transaction."""
        self._savepoint = False
        ledger.unclaim(self.conn, claims, self.store)

    def insert(self, events: Sequence[LoginEvent]) -> None:
        """One COPY of the rows: their lines were encoded when they were parsed."""
        if events:
            self._savepoint = False
            with self.conn.cursor().copy(_COPY) as copy:
                copy.write("".join([e.line for e in events]))

