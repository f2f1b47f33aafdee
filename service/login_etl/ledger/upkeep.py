"""Housekeeping of the ledger: days created ahead, days past the retention dropped, ended days
packed. Run hourly by every replica (roles.Housekeeping)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from login_etl.ledger.days import (
    AHEAD_DAYS,
    DEFAULT,
    LEGACY,
    PACK_IDS,
    PACKED,
    TABLE,
    cutoff,
    droppable,
    from_epoch_day,
    packable,
    packed_name,
    partition_name,
    today,
)
from login_etl.ledger.schema import (
    add_packed,
    add_partition,
    as_uuid,
    ddl_lock,
    detached,
    legacy_expired,
    partitions,
    relkind,
)

if TYPE_CHECKING:
    from login_etl.store import Store

# Advisory lock id: one replica packs at a time (the others skip).
_PACK_LOCK = 0x10_61_E7_3
# The packing of a big day may take minutes; its table lock is asked for at most this long.
_PACK_LOCK_TIMEOUT = "1s"
_PACK_STATEMENT_TIMEOUT = "1h"
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


@dataclass
class Maintenance:
    """What one maintain run did."""

    days_dropped: int = 0
    ids_deleted: int = 0
    days_packed: int = 0
    ids_packed: int = 0


def maintain(store: Store, keep_days: int) -> Maintenance:
    """Create the days ahead, drop the days no message can be redelivered from any more,
    pack the days that ended more than a day ago (packable).

    Each step is its own short transaction; a step that cannot get its lock within a
    second is left for the next run. A dropped day costs the same whatever number of ids
    it held.
    """
    now = today()
    with store.bounded() as conn:
        ddl_lock(conn)
        have = partitions(conn)
        for day in range(now, now + AHEAD_DAYS + 1):
            if day not in have:
                add_partition(conn, day)
        for day in have - partitions(conn, PACKED):
            add_packed(conn, day)
    done = Maintenance()
    with store.bounded() as conn:
        packed_days = partitions(conn, PACKED)
    dropping = droppable(have | packed_days, now, keep_days)
    for day in dropping:
        # Detached first (a catalog change under a brief lock on the parent), then dropped
        # on its own: freeing the files of a big day then holds no lock writers wait on.
        # The ids and the packed ids of a day go in two steps, each retried by the next
        # run if its lock is not had within a second (a packing holds the packed table).
        for parent, name, there in ((TABLE, partition_name(day), have),
                                    (PACKED, packed_name(day), packed_days)):
            if day in there:
                try:
                    with store.bounded() as conn:
                        ddl_lock(conn)
                        conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {name}")
                except psycopg.errors.LockNotAvailable:
                    continue
                done.days_dropped += parent == TABLE
    with store.bounded() as conn:
        names = detached(conn)
    for name in names:
        with store.bounded() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
    with store.bounded() as conn:
        done.ids_deleted = conn.execute(f"DELETE FROM {DEFAULT} WHERE day < %s",
                                        (cutoff(now, keep_days),)).rowcount
        store.legacy = relkind(conn, LEGACY) is not None
    if store.legacy:
        with store.bounded() as conn:
            ddl_lock(conn)
            if legacy_expired(conn, keep_days):
                conn.execute(f"DROP TABLE {LEGACY}")
                store.legacy = False
    for day in packable(have - set(dropping), time.time()):
        try:
            with store.bounded() as conn:
                packed = pack(conn, day)
        # A claim of that day holds its partition: packed by a later run.
        except psycopg.errors.LockNotAvailable:
            continue
        if packed is None:
            break
        done.ids_packed += packed
        done.days_packed += 1 if packed else 0
    return done


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
        merged = (f"WITH merged AS (SELECT '{_LOWEST}'::uuid AS lo, {as_uuid('d')} AS id"
                  f" FROM {name} d)")
    conn.execute(f"{merged} {_INSERT_CUT}", {"day": when})
    conn.execute(f"TRUNCATE {name}")
    return count


def _value(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None
