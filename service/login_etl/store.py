"""The Postgres side: the pool, the schema, and the one-transaction write of rows + ledger.

The ledger (login_etl_ledger, see ledger.py) holds the SQS message id of every message
settled, written in the same transaction as its row. A redelivered message finds its id there
and becomes a no-op, which is what makes "commit, then delete" safe against crashes between
the two, an ambiguous commit (connection lost after COMMIT was sent), and several replicas at
once.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from login_etl import ledger, metrics, retrying
from login_etl.messages import COLUMNS, LoginEvent, copy_value
from login_etl.pgerrors import (
    DB_ERRORS,
    RefusedForGood,
    RowRefused,
    StoreError,
    refused_for_good,
    translated,
    why_not,
)

T = TypeVar("T")
# The table as it exists in production, its columns in the order of messages.COLUMNS.
SCHEMA = """
CREATE TABLE IF NOT EXISTS user_logins(
  user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
  masked_device_id varchar(256), locale varchar(32), app_version integer,
  create_date date);
"""

_CLAIM = (
    "INSERT INTO login_etl_ledger (id, text_id, day, rejected)"
    " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::date[], %s::boolean[])"
    " ON CONFLICT DO NOTHING RETURNING coalesce(id::text, text_id)"
)
_LEGACY_KNOWN = "SELECT message_id FROM login_etl_ledger_legacy WHERE message_id = ANY(%s)"
# The rows' lines (LoginEvent.line) hold the columns in this order.
_COPY = f"COPY user_logins ({', '.join(COLUMNS)}) FROM STDIN"
_COPY_LEDGER = "COPY login_etl_ledger (id, text_id, day, rejected) FROM STDIN"
# SQS message ids as SQS writes them: these go to the uuid column (16 bytes), and read back as
# the same text; anything else (a redriven copy's "redrive:..." id) to text_id.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Heap pages latest_rows reads first (about 500 rows of user_logins): the latest rows
# without a scan of the whole table.
_TAIL_PAGES = 8
# Advisory lock id, so that replicas starting together create the tables once.
_SCHEMA_LOCK = 0x10_61_E7_1


# Startup parameters PgBouncer passes on (it refuses `options`): the statement bounds are set
# per transaction instead (Bounds). Keepalives find dead peers.
CONNECTION_OPTIONS: dict[str, Any] = {
    "application_name": "login-etl",
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
        return (f"SELECT set_config('statement_timeout', '{self.statement_ms:d}', true),"
                f" set_config('lock_timeout', '{self.lock_ms:d}', true),"
                " set_config('idle_in_transaction_session_timeout',"
                f" '{self.idle_in_transaction_ms:d}', true)")


# psycopg_pool doubles the wait between reconnect attempts without bound (1, 2, 4, 8, 16 s),
# so after a 15 s outage the pool could sit out another 16 s with the server back. Each run of
# attempts is cut after this long and a new one started at once: one attempt about every
# second, for as long as the outage lasts.
RECONNECT_SECONDS = 1.0


def _reconnect_now(pool: ConnectionPool[Any]) -> None:
    """The pool gave up a run of reconnect attempts: check() starts the next one now."""
    if not pool.closed:
        pool.check()


class Store:
    def __init__(self, database_url: str, *, pool_size: int = 2,
                 bounds: Bounds | None = None) -> None:
        self.bounds = bounds or Bounds()
        self._bounds_sql = self.bounds.sql()
        # Whether claims also consult login_etl_ledger_legacy, the unpartitioned ledger an
        # earlier schema kept (ledger.py), until no id it holds can be redelivered.
        self.legacy = False
        self.pool = ConnectionPool(
            database_url, min_size=1, max_size=max(1, pool_size), open=False,
            kwargs=CONNECTION_KWARGS, name="login-etl", timeout=3,
            check=ConnectionPool.check_connection,
            reconnect_timeout=RECONNECT_SECONDS, reconnect_failed=_reconnect_now,
        )

    def open(self, wait_seconds: float = 10.0) -> None:
        """Connect once directly, then open the pool: a wrong host, database, role or
        password fails at start with what went wrong (a pool that times out only says
        PoolTimeout)."""
        try:
            retrying.call("connect", self._probe, wait_seconds)
        except RefusedForGood as refused:
            raise StoreError(f"cannot connect to the database: {why_not(refused.error)}",
                             retryable=False) from refused.error
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the database: {why_not(exc)}") from exc
        self.pool.open()
        try:
            retrying.call("connect", self.pool.wait, timeout=wait_seconds)
        except Exception as exc:
            raise StoreError(f"cannot connect to the database: {retrying.describe(exc)}") from exc

    def _probe(self, wait_seconds: float) -> None:
        timeout = max(1, int(wait_seconds / 3))
        try:
            psycopg.connect(self.pool.conninfo, connect_timeout=timeout,
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
    def bounded(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction that starts by setting its Bounds.

        Every statement of the store runs in one: a read alone would otherwise carry no
        statement_timeout at all behind PgBouncer.
        """
        with self.pool.connection(timeout=timeout) as conn, conn.transaction():
            conn.execute(self._bounds_sql)
            yield conn

    def init_schema(self, keep_days: int = ledger.DEFAULT_KEEP_DAYS) -> None:
        """Create what is missing (the ledger's days from `keep_days` back to a few ahead), and
        turn an unpartitioned ledger of before into the legacy table; a role without CREATE
        can run against an existing schema."""
        today = ledger.today()
        try:
            with self.bounded() as conn:
                ready = self._schema_ready(conn, today)
                if ready is True:
                    return
                if ready is None:
                    self._add_days(conn, today)
                    return
                # A transaction-level lock: released at COMMIT, so it holds under transaction
                # pooling too (a session lock could outlive us on a shared server connection).
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(SCHEMA)
                ledger.create_schema(conn, range(today - keep_days, today + ledger.AHEAD_DAYS + 1))
                self.legacy = ledger.relkind(conn, ledger.LEGACY) is not None
        except psycopg.Error as exc:
            raise StoreError(f"cannot create the schema: {retrying.describe(exc)}",
                             retryable=False) from exc

    def _schema_ready(self, conn: psycopg.Connection[Any], today: int) -> bool | None:
        """True: nothing to do; None: only days ahead are missing; False: tables missing."""
        row = conn.execute("SELECT to_regclass('user_logins') IS NOT NULL,"
                           " to_regclass('login_etl_ledger_legacy') IS NOT NULL,"
                           " to_regclass('login_etl_ledger_packed') IS NOT NULL").fetchone()
        if not row or not row[0] or not row[2] or ledger.relkind(conn, ledger.TABLE) != "p":
            return False
        self.legacy = bool(row[1])
        have = ledger.partitions(conn)
        return all(d in have for d in range(today, today + ledger.AHEAD_DAYS + 1)) or None

    def _add_days(self, conn: psycopg.Connection[Any], today: int) -> None:
        """The days ahead, where this role may create tables; otherwise their ids go to the
        default partition (still deduplicated, pruned by DELETE) until a role that may runs
        init-db."""
        try:
            with conn.transaction():
                ledger.ddl_lock(conn)
                have = ledger.partitions(conn)
                for day in range(today, today + ledger.AHEAD_DAYS + 1):
                    if day not in have:
                        ledger.add_partition(conn, day)
        except psycopg.errors.InsufficientPrivilege:
            pass

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """BEGIN ... COMMIT on one pooled connection; an exception rolls back. One attempt,
        psycopg's errors as they are: write() is the way in that retries and translates."""
        started = time.perf_counter()
        with self.bounded() as conn:
            yield Transaction(conn, self)
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
            return retrying.call("commit", attempt)
        except DB_ERRORS as exc:
            error = translated(exc)
            if not isinstance(error, RowRefused):
                metrics.IO_ERRORS.labels("commit").inc()
            raise error from exc

    def ping(self) -> bool:
        try:
            with self.bounded(timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except Exception:
            return False

    def maintain_ledger(self, keep_days: int) -> Maintenance:
        """Create the days ahead, drop the days no message can be redelivered from any more,
        pack the days that ended more than a day ago (ledger.packable).

        Each step is its own short transaction; a step that cannot get its lock within a
        second is left for the next run. A dropped day costs the same whatever number of ids
        it held.
        """
        today = ledger.today()
        with self.bounded() as conn:
            ledger.ddl_lock(conn)
            have = ledger.partitions(conn)
            for day in range(today, today + ledger.AHEAD_DAYS + 1):
                if day not in have:
                    ledger.add_partition(conn, day)
            for day in have - ledger.partitions(conn, ledger.PACKED):
                ledger.add_packed(conn, day)
        done = Maintenance()
        with self.bounded() as conn:
            packed_days = ledger.partitions(conn, ledger.PACKED)
        dropping = ledger.droppable(have | packed_days, today, keep_days)
        for day in dropping:
            # Detached first (a catalog change under a brief lock on the parent), then dropped
            # on its own: freeing the files of a big day then holds no lock writers wait on.
            # The ids and the packed ids of a day go in two steps, each retried by the next
            # run if its lock is not had within a second (a packing holds the packed table).
            for parent, name, there in ((ledger.TABLE, ledger.partition_name(day), have),
                                        (ledger.PACKED, ledger.packed_name(day), packed_days)):
                if day in there:
                    try:
                        with self.bounded() as conn:
                            ledger.ddl_lock(conn)
                            conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {name}")
                    except psycopg.errors.LockNotAvailable:
                        continue
                    done.days_dropped += parent == ledger.TABLE
        with self.bounded() as conn:
            detached = ledger.detached(conn)
        for name in detached:
            with self.bounded() as conn:
                conn.execute(f"DROP TABLE IF EXISTS {name}")
        with self.bounded() as conn:
            done.ids_deleted = conn.execute(f"DELETE FROM {ledger.DEFAULT} WHERE day < %s",
                                            (ledger.cutoff(today, keep_days),)).rowcount
            self.legacy = ledger.relkind(conn, ledger.LEGACY) is not None
        if self.legacy:
            with self.bounded() as conn:
                ledger.ddl_lock(conn)
                if ledger.legacy_expired(conn, keep_days):
                    conn.execute(f"DROP TABLE {ledger.LEGACY}")
                    self.legacy = False
        for day in ledger.packable(have - set(dropping), time.time()):
            try:
                with self.bounded() as conn:
                    packed = ledger.pack(conn, day)
            # A claim of that day holds its partition: packed by a later run.
            except psycopg.errors.LockNotAvailable:
                continue
            if packed is None:
                break
            done.ids_packed += packed
            done.days_packed += 1 if packed else 0
        return done

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
            conn.execute(f"TRUNCATE user_logins, {ledger.TABLE}, {ledger.PACKED}")
            conn.execute(f"DROP TABLE IF EXISTS {ledger.LEGACY}")
            self.legacy = False
            return int(rows[0]) if rows else 0


@dataclass
class Maintenance:
    """What one maintain_ledger run did."""

    days_dropped: int = 0
    ids_deleted: int = 0
    days_packed: int = 0
    ids_packed: int = 0


class Transaction:
    """The statements of one settle: claim ids in the ledger, then COPY the new rows."""

    def __init__(self, conn: psycopg.Connection[Any], store: Store | None = None) -> None:
        self.conn = conn
        self.store = store

    def claim(self, claims: Sequence[tuple[str, str] | tuple[str, str, int]]) -> set[str]:
        """File (message id, outcome, day) in the ledger; return the ids not seen before (the
        rest are repeats). The day (days since 1970-01-01, UTC) is the message's SentTimestamp
        day or the one its redrive seal carries; without one, today.

        A concurrent replica claiming the same id blocks here until it commits, then sees a
        conflict: exactly one of them stores the row.
        """
        if not claims:
            return set()
        today = ledger.today()
        rows = [(c[0], c[1] == "rejected", c[2] if len(c) > 2 else today)  # type: ignore[misc]
                for c in claims]
        if self.store is not None and self.store.legacy:
            found = self._known_before([r[0] for r in rows])
            rows = [r for r in rows if r[0] not in found]
            if not rows:
                return set()
        # Fast path: COPY the ids, in a savepoint. Redeliveries are rare, and COPY is cheaper
        # per id than INSERT .. ON CONFLICT; a known id makes it fail as a whole (unique
        # violation), which undoes only the savepoint, and the claim is made row by row below.
        try:
            days = _iso_days(rows)
            payload = "".join([
                f"{i}\t\\N\t{days[d]}\t{'t' if r else 'f'}\n" if _UUID.fullmatch(i)
                else f"\\N\t{copy_value(i)}\t{days[d]}\t{'t' if r else 'f'}\n"
                for i, r, d in rows])
            with self.conn.transaction(), self.conn.cursor().copy(_COPY_LEDGER) as copy:
                copy.write(payload)
            claimed = {i for i, _, _ in rows}
        except psycopg.errors.UniqueViolation:
            uuids, texts, days_of = _split(rows)
            cur = self.conn.execute(_CLAIM, (uuids, texts, days_of, [r for _, r, _ in rows]))
            claimed = {row[0] for row in cur.fetchall()}
        # Ids filed for a day before today may be in its packed rows: looked up only now, after
        # filing, so that a claim that waited for a packing of that day sees what it packed.
        late = [r for r in rows if r[2] < today and r[0] in claimed]
        return claimed - self._packed_before(late) if late else claimed

    def _packed_before(self, rows: list[tuple[str, bool, int]]) -> set[str]:
        """The ids of rows a packed day holds; their rows just filed are taken back out."""
        uuids, texts, days_of = _split(rows)
        known = {r[0] for r in self.conn.execute(ledger.PACKED_KNOWN,
                                                 (days_of, uuids, texts)).fetchall()}
        if known:
            self.unclaim([(i, d) for i, _, d in rows if i in known])
        return known

    def _known_before(self, ids: list[str]) -> set[str]:
        """The ids the legacy ledger holds, while it exists (another replica may drop it)."""
        try:
            with self.conn.transaction():
                return {r[0] for r in self.conn.execute(_LEGACY_KNOWN, (ids,)).fetchall()}
        except psycopg.errors.UndefinedTable:
            if self.store is not None:
                self.store.legacy = False
            return set()

    def unclaim(self, claims: Sequence[tuple[str, int]]) -> None:
        """Take (message id, day) claims back out of the ledger within this transaction
        (messages left unsettled); only their days' partitions are touched, so a packing of
        another day never holds this up."""
        if claims:
            rows = [(i, False, d) for i, d in claims]
            uuids, texts, days_of = _split(rows)
            self.conn.execute("DELETE FROM login_etl_ledger WHERE day = ANY(%s::date[])"
                              " AND (id = ANY(%s::uuid[]) OR text_id = ANY(%s::text[]))",
                              (sorted(set(days_of)), [u for u in uuids if u],
                               [t for t in texts if t]))

    def insert(self, events: Sequence[LoginEvent]) -> None:
        """One COPY of the rows: their lines were encoded when they were parsed."""
        if events:
            with self.conn.cursor().copy(_COPY) as copy:
                copy.write("".join([e.line for e in events]))


def _split(rows: Sequence[tuple[str, bool, int]]
           ) -> tuple[list[str | None], list[str | None], list[date]]:
    """A claim's ids as the columns they go to (uuid or text) and their days."""
    uuids = [i if _UUID.fullmatch(i) else None for i, _, _ in rows]
    texts = [None if u else i for u, (i, _, _) in zip(uuids, rows, strict=True)]
    return uuids, texts, [ledger.from_epoch_day(d) for _, _, d in rows]


def _iso_days(rows: Sequence[tuple[str, bool, int]]) -> dict[int, str]:
    return {d: ledger.from_epoch_day(d).isoformat() for d in {d for _, _, d in rows}}
