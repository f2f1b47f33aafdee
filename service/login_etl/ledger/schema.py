"""The ledger's tables: the day partitions, the packed ids, the legacy table, and creating them
at start (init-db, or a replica finding days ahead missing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg

from login_etl.ledger import replicas
from login_etl.ledger.days import (
    AHEAD_DAYS,
    DEFAULT,
    LEGACY,
    PACKED,
    REDRIVEN,
    TABLE,
    day_of,
    from_epoch_day,
    packed_name,
    partition_name,
)

if TYPE_CHECKING:
    from login_etl.store import Store

# Advisory lock id serialising partition DDL between replicas.
_DDL_LOCK = 0x10_61_E7_2
# Advisory lock id, so that replicas starting together create the tables once.
_SCHEMA_LOCK = 0x10_61_E7_1
# DDL waits this long at most for the parent table: a waiting ACCESS EXCLUSIVE request queues
# every writer behind it.
_DDL_LOCK_TIMEOUT = "1s"

# The table as it exists in production, its columns in the order of messages.COLUMNS.
ROWS_DDL = """
CREATE TABLE IF NOT EXISTS user_logins(
  user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
  masked_device_id varchar(256), locale varchar(32), app_version integer,
  create_date date);
"""

PARENT_DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE}(
  id uuid,
  day date NOT NULL,
  rejected boolean NOT NULL DEFAULT false,
  text_id text,
  CHECK ((id IS NULL) <> (text_id IS NULL))
) PARTITION BY RANGE (day);
CREATE TABLE IF NOT EXISTS {DEFAULT} PARTITION OF {TABLE} DEFAULT;
CREATE UNIQUE INDEX IF NOT EXISTS {DEFAULT}_id ON {DEFAULT} (id) WHERE id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS {DEFAULT}_text_id ON {DEFAULT} (text_id)
  WHERE text_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS {PACKED}(
  day date NOT NULL,
  lo uuid NOT NULL,
  ids uuid[] NOT NULL,
  PRIMARY KEY (day, lo)
) PARTITION BY RANGE (day);
"""
# Redriven copies' ids, day-less: kept by their origin's day for as long as a copy can still
# come back (the DLQ's retention and then the source's), past the dropping of that day.
REDRIVEN_DDL = f"""
CREATE TABLE IF NOT EXISTS {REDRIVEN}(
  id text PRIMARY KEY,
  day date NOT NULL
);
"""


def as_uuid(alias: str) -> str:
    """A row's id as a uuid: a text id (a redriven copy's) as the uuid of its md5, computed by
    the server on both sides (packing and lookup), so the database's encoding cannot split
    them."""
    return f"coalesce({alias}.id, md5({alias}.text_id)::uuid)"


def relkind(conn: psycopg.Connection[Any], name: str) -> str | None:
    row = conn.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)",
                       (name,)).fetchone()
    return str(row[0]) if row else None


def partitions(conn: psycopg.Connection[Any], parent: str = TABLE) -> set[int]:
    """The days that have their own partition (of the ledger, or of its packed ids)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(%s)", (parent,)).fetchall()
    return {d for (name,) in rows if (d := day_of(name, parent)) is not None}


def detached(conn: psycopg.Connection[Any]) -> list[str]:
    """Day tables no longer (or not yet) attached: detached for dropping, or left by a run
    that stopped between detach and drop. A table being built is attached in the transaction
    that creates it, so it is never seen here."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND c.relname ~ '^login_etl_ledger_(packed_)?p[0-9]{8}$'"
        " AND n.nspname = current_schema() AND NOT c.relispartition").fetchall()
    return sorted(str(r[0]) for r in rows)


def db_today(conn: psycopg.Connection[Any]) -> int:
    """The database's UTC day (days since 1970-01-01): every replica agrees on it, whatever
    its own clock says."""
    return int(_value(conn, "SELECT (now() AT TIME ZONE 'UTC')::date - DATE '1970-01-01'"))


def db_seconds(conn: psycopg.Connection[Any]) -> float:
    """The database's time, in seconds since 1970 (UTC)."""
    return float(_value(conn, "SELECT extract(epoch FROM now())"))


def _value(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def init(store: Store, keep_days: int) -> None:
    """Create what is missing (the ledger's days from `keep_days` back to a few ahead), and
    turn an unpartitioned ledger of before into the legacy table; a role without CREATE
    can run against an existing schema."""
    with store.bounded() as conn:
        now = db_today(conn)
        ready = _ready(store, conn, now)
        if ready is True:
            return
        if ready is None:
            _add_days(conn, now)
            return
        # A transaction-level lock: released at COMMIT, so it holds under transaction
        # pooling too (a session lock could outlive us on a shared server connection).
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        # Partition DDL is serialised with housekeeping's (a replica of another version may be
        # running it meanwhile).
        ddl_lock(conn)
        conn.execute(ROWS_DDL)
        create_schema(conn, range(now - keep_days, now + AHEAD_DAYS + 1))
        store.legacy = relkind(conn, LEGACY) is not None
        store.redriven = store.registry = True
        replicas.heartbeat(conn)


def _ready(store: Store, conn: psycopg.Connection[Any], now: int) -> bool | None:
    """True: nothing to do; None: only days ahead are missing; False: tables missing."""
    row = conn.execute("SELECT to_regclass('user_logins') IS NOT NULL,"
                       " to_regclass('login_etl_ledger_legacy') IS NOT NULL,"
                       " to_regclass('login_etl_ledger_packed') IS NOT NULL,"
                       f" {_REDRIVEN_RIGHTS}, {_REGISTRY_RIGHTS}").fetchone()
    if not row or not row[0] or not row[2] or relkind(conn, TABLE) != "p":
        return False
    store.legacy = bool(row[1])
    store.redriven = bool(row[3]) or _try_create(conn, REDRIVEN_DDL, _REDRIVEN_RIGHTS)
    store.registry = bool(row[4]) or _try_create(conn, replicas.DDL, _REGISTRY_RIGHTS)
    if store.registry:
        replicas.heartbeat(conn)
    have = partitions(conn)
    return all(d in have for d in range(now, now + AHEAD_DAYS + 1)) or None


def _add_days(conn: psycopg.Connection[Any], now: int) -> None:
    """The days ahead, where this role may create tables; otherwise their ids go to the
    default partition (still deduplicated, pruned by DELETE) until a role that may runs
    init-db."""
    try:
        with conn.transaction():
            ddl_lock(conn)
            have = partitions(conn)
            for day in range(now, now + AHEAD_DAYS + 1):
                if day not in have:
                    add_partition(conn, day)
    except psycopg.errors.InsufficientPrivilege:
        pass


def _may(table: str, *privileges: str) -> str:
    """SQL: whether `table` exists and this role holds every one of `privileges` on it."""
    checks = " AND ".join(f"has_table_privilege('{table}', '{p}')" for p in privileges)
    return f"(to_regclass('{table}') IS NOT NULL AND {checks})"


def _try_create(conn: psycopg.Connection[Any], ddl: str, rights: str) -> bool:
    """Whether a table added by a later schema is usable now: a role without CREATE (or
    without rights on a table init-db made) runs on without it, claims then skip it."""
    try:
        with conn.transaction():
            conn.execute(ddl)
    except psycopg.errors.InsufficientPrivilege:
        return False
    return bool(_value(conn, f"SELECT {rights}"))


_REDRIVEN_RIGHTS = _may(REDRIVEN, "SELECT", "INSERT", "DELETE")
_REGISTRY_RIGHTS = (f"{_may(replicas.REPLICAS, 'SELECT', 'INSERT', 'UPDATE', 'DELETE')}"
                    f" AND {_may(replicas.VERSION, 'SELECT', 'INSERT')}")


def create_schema(conn: psycopg.Connection[Any], days: range) -> None:
    """The partitioned ledger and the given days, from nothing or from the unpartitioned
    table of before (renamed, kept for lookups: a rename is instant at any size)."""
    if relkind(conn, TABLE) == "r":
        conn.execute(f"ALTER TABLE {TABLE} RENAME TO {LEGACY}")
        conn.execute(f"ALTER INDEX IF EXISTS {TABLE}_processed_at"
                     f" RENAME TO {LEGACY}_processed_at")
        conn.execute(f"ALTER INDEX IF EXISTS {TABLE}_pkey RENAME TO {LEGACY}_pkey")
    conn.execute(PARENT_DDL)
    conn.execute(REDRIVEN_DDL)
    conn.execute(replicas.DDL)
    have = partitions(conn)
    for day in days:
        if day not in have:
            add_partition(conn, day)
    for day in have - partitions(conn, PACKED):
        add_packed(conn, day)


def add_partition(conn: psycopg.Connection[Any], day: int) -> None:
    """One day: built with its unique indexes, filled with what the default partition held of
    that day, then attached (a partition never exists without its unique indexes)."""
    name = partition_name(day)
    start, end = from_epoch_day(day), from_epoch_day(day + 1)
    conn.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
    conn.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.execute(f"CREATE UNIQUE INDEX {name}_id ON {name} (id) WHERE id IS NOT NULL")
    conn.execute(f"CREATE UNIQUE INDEX {name}_text_id ON {name} (text_id)"
                 " WHERE text_id IS NOT NULL")
    conn.execute(f"WITH moved AS (DELETE FROM {DEFAULT} WHERE day = %s"
                 " RETURNING id, day, rejected, text_id)"
                 f" INSERT INTO {name} (id, day, rejected, text_id) SELECT * FROM moved", (start,))
    conn.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name}"
                 f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
    add_packed(conn, day)


def add_packed(conn: psycopg.Connection[Any], day: int) -> None:
    """The day's partition of the packed ids (empty until the day is packed)."""
    start, end = from_epoch_day(day), from_epoch_day(day + 1)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {packed_name(day)} PARTITION OF {PACKED}"
                 f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")


def ddl_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SET LOCAL lock_timeout = '{_DDL_LOCK_TIMEOUT}'")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))


def legacy_expired(conn: psycopg.Connection[Any], keep: int) -> bool:
    """Whether the legacy table's newest id is past the retention (an index-only look)."""
    return bool(_value(conn, f"SELECT coalesce(max(processed_at) < now() - %s * interval '1 day',"
                              f" true) FROM {LEGACY}", (keep,)))
