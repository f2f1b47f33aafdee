"""Housekeeping of the ledger: the kept window's days created, days past the retention dropped,
ended days packed. Run hourly by every replica (roles.Housekeeping).

Every step is its own short transaction and independent of the others: one that fails (a lock
not had, a timeout) is counted and left for the next run while the rest go on. "Now" is the
database's, never a replica's clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from login_etl.ledger.days import (
    AHEAD_DAYS,
    DEFAULT,
    DEFAULT_KEEP_DAYS,
    LEGACY,
    PACK_IDS,
    PACKED,
    REDRIVEN,
    TABLE,
    cutoff,
    droppable,
    from_epoch_day,
    packable,
    packed_name,
    partition_name,
)
from login_etl.ledger.replicas import PROTOCOL, heartbeat, seen
from login_etl.ledger.schema import (
    add_packed,
    add_partition,
    as_uuid,
    db_seconds,
    db_today,
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
# One packing step moves at most this many ids of a day into its packed rows, and re-cuts at
# most this many packed rows: each step is a short transaction whatever the day's size.
STEP_IDS = 2000
STEP_ROWS = 32
# Rows deleted per transaction when pruning a table by DELETE.
_PRUNE_ROWS = 10_000
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
# One step: the `moved` ids out of the day's partition, each into the packed row whose range
# holds it (the lowest row for a day not packed yet); the rows that take ids are re-cut with
# them, so no row grows past PACK_IDS however many ids come late.
_MERGE = (
    "late AS (SELECT m.id, coalesce(r.lo, '" + _LOWEST + "'::uuid) AS lo FROM moved m"
    f" LEFT JOIN LATERAL (SELECT p.lo FROM {PACKED} p WHERE p.day = %(day)s"
    " AND p.lo <= m.id ORDER BY p.lo DESC LIMIT 1) r ON true),")
# The same when no packed row starts inside the step's range (a first packing): every id's row
# is the one holding the range's start, found once.
_MERGE_ONE = "late AS (SELECT id, %(floor)s::uuid AS lo FROM moved),"
_CUT = (
    f" taken AS (DELETE FROM {PACKED} p WHERE p.day = %(day)s"
    " AND p.lo IN (SELECT lo FROM late) RETURNING p.lo, p.ids),"
    " merged AS (SELECT t.lo, u.id FROM taken t, unnest(t.ids) AS u(id)"
    " UNION ALL SELECT lo, id FROM late),"
    " cut AS (" + _INSERT_CUT + ") SELECT count(*) FROM moved")


@dataclass
class Maintenance:
    """What one maintain run did."""

    days_dropped: int = 0
    ids_deleted: int = 0
    days_packed: int = 0
    ids_packed: int = 0
    days_created: int = 0
    # Steps that failed this run (left for the next one), by name.
    failed: list[str] = field(default_factory=list)
    # Packing waited: a replica of an older protocol was seen.
    packing_waits: bool = False
    # The longest packing step (a transaction holding a day's moved ids), in seconds.
    longest_step: float = 0.0
    # The days packed this run (their space reclaimed next).
    packed: list[int] = field(default_factory=list)


def maintain(store: Store, keep_days: int, redrive_keep: int | None = None) -> Maintenance:
    """Create the kept window's missing days and the days ahead, drop the days no message can
    be redelivered from any more, prune what is kept by DELETE, pack the days that ended more
    than a day ago (packable). Redriven copies' ids are kept `redrive_keep` days after their
    origin's day (redrive_keep_days; by default the retention plus SQS's longest)."""
    done = Maintenance()
    with store.bounded() as conn:
        now, seconds = db_today(conn), db_seconds(conn)
        if store.registry:
            heartbeat(conn)
            oldest, newest = seen(conn)
            if newest > PROTOCOL:
                # A newer release runs beside this one: its housekeeping knows the schema.
                return done
            done.packing_waits = oldest < PROTOCOL
    keep_redriven = redrive_keep if redrive_keep is not None else keep_days + DEFAULT_KEEP_DAYS
    steps: list[tuple[str, Callable[[], None]]] = [
        ("create", lambda: _create_days(store, now, keep_days, done)),
        ("drop", lambda: _drop_days(store, now, keep_days, done)),
        ("prune_default", lambda: _prune(store, DEFAULT, cutoff(now, keep_days), done)),
        ("prune_redriven", lambda: _prune(store, REDRIVEN, cutoff(now, keep_redriven), done)),
        ("legacy", lambda: _drop_legacy(store, keep_days)),
        ("pack", lambda: _pack_days(store, seconds, now, keep_days, done)),
        ("reclaim", lambda: _reclaim(store, done.packed)),
    ]
    for name, step in steps:
        if name == "prune_redriven" and not store.redriven:
            continue
        if name in ("pack", "reclaim") and done.packing_waits:
            continue
        try:
            step()
        except psycopg.Error:
            done.failed.append(name)
    return done


def _create_days(store: Store, now: int, keep: int, done: Maintenance) -> None:
    """The kept window's days and the days ahead: a day missed (no housekeeping with CREATE
    for days) is created too, its ids moved out of the default partition."""
    with store.bounded() as conn:
        have = partitions(conn)
        packed = partitions(conn, PACKED)
    for day in range(now - keep, now + AHEAD_DAYS + 1):
        if day not in have:
            with store.bounded() as conn:
                ddl_lock(conn)
                if day not in partitions(conn):
                    add_partition(conn, day)
                    done.days_created += 1
    for day in have - packed:
        with store.bounded() as conn:
            ddl_lock(conn)
            add_packed(conn, day)


def _drop_days(store: Store, now: int, keep: int, done: Maintenance) -> None:
    """Days past the retention: detached first (a catalog change under a brief lock on the
    parent), then dropped on its own, so freeing the files of a big day holds no lock writers
    wait on. The ids and the packed ids of a day go in two steps, each retried by the next run
    if its lock is not had within a second."""
    with store.bounded() as conn:
        have, packed = partitions(conn), partitions(conn, PACKED)
    for day in droppable(have | packed, now, keep):
        for parent, name, there in ((TABLE, partition_name(day), have),
                                    (PACKED, packed_name(day), packed)):
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


def _prune(store: Store, table: str, before: Any, done: Maintenance) -> None:
    """Rows of days before `before`, a bounded number per transaction."""
    while True:
        with store.bounded() as conn:
            deleted = conn.execute(
                f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table}"
                f" WHERE day < %s LIMIT {_PRUNE_ROWS}))", (before,)).rowcount
        if table == DEFAULT:
            done.ids_deleted += deleted
        if deleted < _PRUNE_ROWS:
            return


def _drop_legacy(store: Store, keep: int) -> None:
    with store.bounded() as conn:
        store.legacy = relkind(conn, LEGACY) is not None
    if store.legacy:
        with store.bounded() as conn:
            ddl_lock(conn)
            if legacy_expired(conn, keep):
                conn.execute(f"DROP TABLE {LEGACY}")
                store.legacy = False


def _pack_days(store: Store, seconds: float, now: int, keep: int, done: Maintenance) -> None:
    with store.bounded() as conn:
        have = partitions(conn)
    for day in packable({d for d in have if d >= now - keep}, seconds):
        packed = pack(store, day, done)
        if packed is None:
            return
        done.ids_packed += packed
        done.days_packed += 1 if packed else 0
        if packed:
            done.packed.append(day)


def _reclaim(store: Store, days: list[int]) -> None:
    """The space of the rows a packing deleted, back at once: the partition vacuumed (its
    emptied pages cut off) and its indexes rebuilt, both without a lock that claims wait on.
    Each a statement of its own, outside a transaction, as PostgreSQL requires."""
    with store.connection() as conn:
        conn.autocommit = True
        try:
            for day in days:
                conn.execute(f"VACUUM {partition_name(day)}")
                conn.execute(f"REINDEX TABLE CONCURRENTLY {partition_name(day)}")
        finally:
            conn.autocommit = False


def pack(store: Store, day: int, done: Maintenance | None = None) -> int | None:
    """Move a day's ids into its packed rows, a bounded step per transaction; the ids moved,
    or None when another replica is packing.

    No table lock: each step deletes the rows it moves, so a claim of a new id of that day
    never waits, and one of an id being moved waits for that step alone, then files it in
    the partition and finds the packed copy when it looks. Ids claimed meanwhile behind the
    steps are packed by a later run. The partition's space goes back with its vacuum.
    """
    name, moved = partition_name(day), 0
    # Text ids (a redriven copy's, rare) first, as the uuids of their md5.
    texts = (f"d.ctid = ANY(ARRAY(SELECT ctid FROM {name}"
             f" WHERE text_id IS NOT NULL LIMIT {STEP_ROWS}))")
    while True:
        count = _step(store, day, texts, {}, done)
        if count is None:
            return moved or None
        moved += count
        if count < STEP_ROWS:
            break
    after: str | None = _LOWEST
    while after is not None:
        bounds: dict[str, Any] = {"after": after}

        def ranged(conn: psycopg.Connection[Any], b: dict[str, Any] = bounds) -> str | None:
            """The next step's range [after, hi): from the next id to move, to the bound of
            STEP_IDS ids or of STEP_ROWS packed rows, whichever comes first."""
            row = conn.execute(
                f"WITH a AS (SELECT id FROM {name} WHERE id >= %(after)s ORDER BY id LIMIT 1),"
                f" b AS (SELECT a.id, least((SELECT id FROM {name} WHERE id >= a.id ORDER BY id"
                f" OFFSET {STEP_IDS} LIMIT 1), (SELECT lo FROM {PACKED} WHERE day = %(day)s"
                f" AND lo > a.id ORDER BY lo OFFSET {STEP_ROWS - 1} LIMIT 1)) AS hi FROM a)"
                f" SELECT b.id, b.hi, (SELECT lo FROM {PACKED} WHERE day = %(day)s"
                " AND lo <= b.id ORDER BY lo DESC LIMIT 1),"
                f" EXISTS (SELECT 1 FROM {PACKED} WHERE day = %(day)s AND lo > b.id"
                " AND (b.hi IS NULL OR lo < b.hi)) FROM b",
                {"after": b["after"], "day": from_epoch_day(day)}).fetchone()
            if row is None:
                b["after"] = None
                return None
            b["after"], b["hi"] = row[0], row[1]
            b["floor"] = None if row[3] else (row[2] or _LOWEST)
            return "d.id >= %(after)s" + (" AND d.id < %(hi)s" if b["hi"] else "")

        count = _step(store, day, ranged, bounds, done)
        if count is None:
            return moved or None
        moved += count
        after = bounds.get("hi") if bounds["after"] is not None else None
    return moved


def _step(store: Store, day: int, where: str | Callable[..., str | None],
          params: dict[str, Any], done: Maintenance | None) -> int | None:
    """One step in its own transaction: the ids `where` selects out of the day's partition
    and into its packed rows; None when another replica holds the packing lock."""
    started = time.perf_counter()
    with store.bounded() as conn:
        if not _value(conn, "SELECT pg_try_advisory_xact_lock(%s)", (_PACK_LOCK,)):
            return None
        condition = where if isinstance(where, str) else where(conn)
        if condition is None:
            return 0
        merge = _MERGE if params.get("floor") is None else _MERGE_ONE
        moved = _value(conn, f"WITH moved AS (DELETE FROM {partition_name(day)} d"
                             f" WHERE {condition} RETURNING {as_uuid('d')} AS id), {merge}{_CUT}",
                       {**params, "day": from_epoch_day(day)})
    if done is not None:
        done.longest_step = max(done.longest_step, time.perf_counter() - started)
    return int(moved)


def _value(conn: psycopg.Connection[Any], sql: str, params: Any = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return row[0] if row else None
