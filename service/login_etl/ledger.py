"""The ledger of settled message ids: partitioned by day, retention by dropping whole days.

Each message is filed under a UTC day that every copy of it agrees on: the day SQS received it
(SentTimestamp, which a redelivery keeps), or for a redriven copy the day carried in its
sealed origin. A redelivery therefore meets its id in the same day partition, and a day that
SQS can no longer redeliver from is dropped in one statement, however many ids it holds.

Row: `id uuid` where the message id is a canonical UUID (SQS's ids), else `text_id text`; `day
date`, `rejected boolean` (kept while the day is rows; packed days keep only the ids). Each
day partition has a unique index on each id column (the other column is NULL, kept out by the
index predicate); no time index: the partition is the time. Days outside the partitions (older
than the retention: a redriven copy of an old message) go to the default partition, which is
pruned by DELETE and stays small.

A day is packed once it ended a day and an hour ago: its ids move into
login_etl_ledger_packed as sorted arrays of up to 120 (a text id as the uuid of its md5), each
row keyed by the lowest id it may hold, and the day's partition is emptied (TRUNCATE: its
space goes back at once). About 18 bytes an id instead of about 92. A claim for a day before
today also looks its ids up there, after filing them: a claim blocked by the packing sees the
packed ids once it goes on. Ids claimed for a day after it was packed are merged into its
arrays by the next packing.

An unpartitioned ledger from before is renamed login_etl_ledger_legacy and consulted by
every claim until its newest id is past the retention; then it is dropped.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

TABLE = "login_etl_ledger"
PACKED = "login_etl_ledger_packed"
DEFAULT = "login_etl_ledger_default"
LEGACY = "login_etl_ledger_legacy"
# Days kept when the queue's retention is not known (SQS's longest retention is 14 days).
DEFAULT_KEEP_DAYS = 15
# Days created ahead of today, so the worker never writes into a day it still has to create.
AHEAD_DAYS = 2
# Advisory lock id serialising partition DDL between replicas.
_DDL_LOCK = 0x10_61_E7_2
# DDL waits this long at most for the parent table: a waiting ACCESS EXCLUSIVE request queues
# every writer behind it.
_DDL_LOCK_TIMEOUT = "1s"
# Ids in one packed row: 120 uuids keep the row (1,988 bytes) just under the size at which
# Postgres moves a value out of line (TOAST), four rows to a page.
PACK_IDS = 120
# A day is packed once it ended this long ago: a day and an hour. Packing holds the day's
# partition, so a claim of that day waits for it; by then only a message more than a day in
# the queue makes one. Claims look ids up in the packed rows for every day before their own
# today, so the margin is also far beyond any clock skew between replicas.
PACK_AFTER_SECONDS = 86_400 + 3600
# Advisory lock id: one replica packs at a time (the others skip).
_PACK_LOCK = 0x10_61_E7_3
# The packing of a big day may take minutes; its table lock is asked for at most this long.
_PACK_LOCK_TIMEOUT = "1s"
_PACK_STATEMENT_TIMEOUT = "1h"
_PARTITION = re.compile(r"^_p(\d{8})$")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

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


def as_uuid(alias: str) -> str:
    """A row's id as a uuid: a text id (a redriven copy's) as the uuid of its md5, computed by
    the server on both sides (packing and lookup), so the database's encoding cannot split
    them."""
    return f"coalesce({alias}.id, md5({alias}.text_id)::uuid)"


# The first packed row of a day starts at the lowest uuid, so every id has a row to look in.
_LOWEST = "00000000-0000-0000-0000-000000000000"
# Packed rows from `merged` (lo, id): each lo's ids sorted and cut at PACK_IDS, the first piece
# keeping lo, each other keyed by its own first id.
_INSERT_CUT = (
    f"INSERT INTO {PACKED} (day, lo, ids)"
    " SELECT %(day)s, CASE WHEN chunk = 0 THEN lo ELSE ids[1] END, ids"
    " FROM (SELECT lo, chunk, array_agg(id ORDER BY id) AS ids FROM (SELECT lo, id,"
    f" (row_number() OVER (PARTITION BY lo ORDER BY id) - 1) / {PACK_IDS} AS chunk"
    " FROM merged) n GROUP BY lo, chunk) c")
# Which of a claim's (day, id, text_id) a packed row of that day holds.
PACKED_KNOWN = (
    "SELECT coalesce(b.id::text, b.text_id)"
    " FROM unnest(%s::date[], %s::uuid[], %s::text[]) AS b(day, id, text_id)"
    f" CROSS JOIN LATERAL (SELECT p.ids FROM {PACKED} p WHERE p.day = b.day"
    f" AND p.lo <= {as_uuid('b')} ORDER BY p.lo DESC LIMIT 1) p"
    f" WHERE {as_uuid('b')} = ANY(p.ids)")


def epoch_day(day: date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


def from_epoch_day(day: int) -> date:
    return date.fromordinal(day + _EPOCH_ORDINAL)


def today() -> int:
    return epoch_day(datetime.now(UTC).date())


def partition_name(day: int) -> str:
    return f"{TABLE}_p{from_epoch_day(day):%Y%m%d}"


def packed_name(day: int) -> str:
    return f"{PACKED}_p{from_epoch_day(day):%Y%m%d}"


def keep_days(retention_seconds: int | None) -> int:
    """Days a partition is kept after its own: the queue's retention rounded up, plus one."""
    if retention_seconds is None:
        return DEFAULT_KEEP_DAYS
    return -(-retention_seconds // 86_400) + 1


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


def day_of(name: str, parent: str = TABLE) -> int | None:
    """The day of a partition of `parent` by its name; None for any other table."""
    match = _PARTITION.match(name.removeprefix(parent)) if name.startswith(parent) else None
    return epoch_day(datetime.strptime(match.group(1), "%Y%m%d").date()) if match else None


def detached(conn: psycopg.Connection[Any]) -> list[str]:
    """Day tables no longer (or not yet) attached: detached for dropping, or left by a run
    that stopped between detach and drop. A table being built is attached in the transaction
    that creates it, so it is never seen here."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND c.relname ~ '^login_etl_ledger_(packed_)?p[0-9]{8}$'"
        " AND n.nspname = current_schema() AND NOT c.relispartition").fetchall()
    return sorted(str(r[0]) for r in rows)


def create_schema(conn: psycopg.Connection[Any], days: range) -> None:
    """The partitioned ledger and the given days, from nothing or from the unpartitioned
    table of before (renamed, kept for lookups: a rename is instant at any size)."""
    if relkind(conn, TABLE) == "r":
        conn.execute(f"ALTER TABLE {TABLE} RENAME TO {LEGACY}")
        conn.execute(f"ALTER INDEX IF EXISTS {TABLE}_processed_at"
                     f" RENAME TO {LEGACY}_processed_at")
        conn.execute(f"ALTER INDEX IF EXISTS {TABLE}_pkey RENAME TO {LEGACY}_pkey")
    conn.execute(PARENT_DDL)
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


def packable(have: set[int], now_seconds: float) -> list[int]:
    """Days that ended PACK_AFTER_SECONDS ago or more."""
    return sorted(d for d in have if (d + 1) * 86_400 + PACK_AFTER_SECONDS <= now_seconds)


def pack(conn: psycopg.Connection[Any], day: int) -> int | None:
    """Move a day's ids into packed rows and empty its partition; the ids moved, or None
    when another replica is packing. Runs in the caller's transaction.

    The partition is locked for the packing: a claim for that day waits (a message more than
    a day in the queue), then files its id in the emptied partition and finds the packed copy
    when it looks.
    """
    name, when = partition_name(day), from_epoch_day(day)
    if not _value(conn, f"SELECT EXISTS (SELECT 1 FROM {name})"):
        return 0
    if not _value(conn, "SELECT pg_try_advisory_xact_lock(%s)", (_PACK_LOCK,)):
        return None
    conn.execute(f"SET LOCAL lock_timeout = '{_PACK_LOCK_TIMEOUT}'")
    conn.execute(f"SET LOCAL statement_timeout = '{_PACK_STATEMENT_TIMEOUT}'")
    conn.execute(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
    count = int(_value(conn, f"SELECT count(*) FROM {name}"))
    if _value(conn, f"SELECT EXISTS (SELECT 1 FROM {PACKED} WHERE day = %s)", (when,)):
        # Late ids: the packed rows whose ranges hold them are taken out and cut again with
        # them, so no row grows past PACK_IDS however many ids come late.
        merged = (
            f"WITH late AS (SELECT l.id, r.lo FROM (SELECT {as_uuid('d')} AS id FROM {name} d) l"
            f" CROSS JOIN LATERAL (SELECT p.lo FROM {PACKED} p WHERE p.day = %(day)s"
            " AND p.lo <= l.id ORDER BY p.lo DESC LIMIT 1) r),"
            f" taken AS (DELETE FROM {PACKED} p WHERE p.day = %(day)s"
            " AND p.lo IN (SELECT lo FROM late) RETURNING p.lo, p.ids),"
            " merged AS (SELECT t.lo, u.id FROM taken t, unnest(t.ids) AS u(id)"
            " UNION ALL SELECT lo, id FROM late)")
    else:
        merged = f"WITH merged AS (SELECT '{_LOWEST}'::uuid AS lo, {as_uuid('d')} AS id FROM {name} d)"
    conn.execute(f"{merged} {_INSERT_CUT}", {"day": when})
    conn.execute(f"TRUNCATE {name}")
    return count


def _value(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def ddl_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SET LOCAL lock_timeout = '{_DDL_LOCK_TIMEOUT}'")
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))


def droppable(have: set[int], now: int, keep: int) -> list[int]:
    """Days whose last possible redelivery is more than `keep` days ago."""
    return sorted(d for d in have if d < now - keep)


def cutoff(now: int, keep: int) -> date:
    return from_epoch_day(now - keep)


def legacy_expired(conn: psycopg.Connection[Any], keep: int) -> bool:
    """Whether the legacy table's newest id is past the retention (an index-only look)."""
    row = conn.execute(f"SELECT max(processed_at) FROM {LEGACY}").fetchone()
    newest = row[0] if row else None
    return newest is None or newest < datetime.now(UTC) - timedelta(days=keep)
