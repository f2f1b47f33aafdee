"""Claims: filing settled message ids in the ledger within the settle's transaction, and
taking them back out.

A concurrent replica claiming the same id blocks on the unique index until the first commits,
then sees a conflict: exactly one of them stores the row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Any, Protocol

import psycopg

from login_etl.ledger.days import LEGACY, PACKED, REDRIVEN, TABLE, from_epoch_day
from login_etl.ledger.schema import as_uuid, db_today
from login_etl.messages import copy_value


class Consults(Protocol):
    """The store's view shared by its transactions: whether claims also consult the legacy
    table (cleared when another replica dropped it), the database's UTC day as of the
    transaction's start (read with its bounds, so no statement of its own), and whether the
    redriven copies' table exists."""

    legacy: bool
    today: int
    redriven: bool


_CLAIM = (
    f"INSERT INTO {TABLE} (id, text_id, day, rejected)"
    " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::date[], %s::boolean[])"
    " ON CONFLICT DO NOTHING RETURNING coalesce(id::text, text_id)"
)
# Set by the store with BEGIN for a settle's claim (one round trip less than a savepoint of
# its own, and none to release it: COMMIT does).
CLAIM_SAVEPOINT = "login_etl_claim"
_ROLLBACK_CLAIM = f"ROLLBACK TO SAVEPOINT {CLAIM_SAVEPOINT}"
_LEGACY_KNOWN = f"SELECT message_id FROM {LEGACY} WHERE message_id = ANY(%s)"
_COPY_LEDGER = f"COPY {TABLE} (id, text_id, day, rejected) FROM STDIN"
# SQS message ids as SQS writes them: these go to the uuid column (16 bytes), and read back as
# the same text; anything else (a redriven copy's "redrive:..." id) to text_id.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A claim's ids, each followed by a newline, all canonical UUIDs (the usual batch): checked in
# one match instead of one an id; with the length (37 an id) no id holds a newline.
_UUIDS = re.compile(r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n)+")
# Which of a claim's (day, id, text_id) a packed row of that day holds.
PACKED_KNOWN = (
    "SELECT coalesce(b.id::text, b.text_id)"
    " FROM unnest(%s::date[], %s::uuid[], %s::text[]) AS b(day, id, text_id)"
    f" CROSS JOIN LATERAL (SELECT p.ids FROM {PACKED} p WHERE p.day = b.day"
    f" AND p.lo <= {as_uuid('b')} ORDER BY p.lo DESC LIMIT 1) p"
    f" WHERE {as_uuid('b')} = ANY(p.ids)")

# Redriven copies' ids filed day-less; the ones returned are new there.
_REDRIVEN_CLAIM = (
    f"INSERT INTO {REDRIVEN} (id, day) SELECT * FROM unnest(%s::text[], %s::date[])"
    " ON CONFLICT DO NOTHING RETURNING id")

Row = tuple[str, bool, int]
# (message id, outcome), optionally with its day and whether it is a redriven copy.
Claim = tuple[str, str] | tuple[str, str, int] | tuple[str, str, int, bool]


def claim(conn: psycopg.Connection[Any], claims: Sequence[Claim],
          store: Consults | None = None, *, savepoint_set: bool = False) -> set[str]:
    """File (message id, outcome, day[, redriven]) in the ledger; return the ids not seen
    before (the rest are repeats). The day (days since 1970-01-01, UTC) is the message's
    SentTimestamp day or the one its redrive seal carries; without one, the database's today.
    A redriven copy is also filed day-less (REDRIVEN), where it outlives its day.
    savepoint_set: CLAIM_SAVEPOINT was set just before, nothing done since."""
    if not claims:
        return set()
    now = store.today if store is not None else db_today(conn)
    # In one order (by id) for every claimer: two batches sharing ids then wait for each
    # other at the first shared id instead of deadlocking.
    rows = sorted([(c[0], c[1] == "rejected", c[2] if len(c) > 2 else now)
                   for c in claims])
    redriven = [(c[0], c[2]) for c in claims if len(c) > 3 and c[3]]
    if store is not None and store.legacy:
        found = _known_before(conn, [r[0] for r in rows], store)
        rows = [r for r in rows if r[0] not in found]
        if not rows:
            return set()
    # Fast path: COPY the ids, in a savepoint. Redeliveries are rare, and COPY is cheaper
    # per id than INSERT .. ON CONFLICT; a known id makes it fail as a whole (unique
    # violation), which undoes only the savepoint, and the claim is made row by row below.
    try:
        days = _iso_days(rows)
        ids = "\n".join([r[0] for r in rows]) + "\n"
        if len(ids) == 37 * len(rows) and _UUIDS.fullmatch(ids):
            payload = "".join([f"{i}\t\\N\t{days[d]}\t{'t' if r else 'f'}\n"
                               for i, r, d in rows])
        else:
            payload = "".join([
                f"{i}\t\\N\t{days[d]}\t{'t' if r else 'f'}\n" if _UUID.fullmatch(i)
                else f"\\N\t{copy_value(i)}\t{days[d]}\t{'t' if r else 'f'}\n"
                for i, r, d in rows])
        if savepoint_set:
            with conn.cursor().copy(_COPY_LEDGER) as copy:
                copy.write(payload)
        else:
            with conn.transaction(), conn.cursor().copy(_COPY_LEDGER) as copy:
                copy.write(payload)
        claimed = {i for i, _, _ in rows}
    except psycopg.errors.UniqueViolation:
        if savepoint_set:
            conn.execute(_ROLLBACK_CLAIM)
        uuids, texts, days_of = _split(rows)
        cur = conn.execute(_CLAIM, (uuids, texts, days_of, [r for _, r, _ in rows]))
        claimed = {row[0] for row in cur.fetchall()}
    # Ids filed for a day before today may be in its packed rows: looked up only now, after
    # filing, so that a claim that waited for a packing of that day sees what it packed.
    late = [r for r in rows if r[2] < now and r[0] in claimed]
    if late:
        claimed -= _packed_before(conn, late)
    if redriven and (store is None or store.redriven):
        claimed -= _redriven_before(conn, redriven, claimed)
    return claimed


def _redriven_before(conn: psycopg.Connection[Any], redriven: list[tuple[str, int]],
                     claimed: set[str]) -> set[str]:
    """The redriven copies filed day-less before (their day may have been dropped since);
    those just filed under their day are taken back out. Every copy is filed there, a repeat
    too, so an id filed only under its day before outlives it from now on."""
    redriven.sort(key=lambda r: (r[1], r[0]))
    fresh = {r[0] for r in conn.execute(
        _REDRIVEN_CLAIM, ([i for i, _ in redriven],
                          [from_epoch_day(d) for _, d in redriven])).fetchall()}
    known = {i for i, _ in redriven if i not in fresh}
    if known & claimed:
        _unfile(conn, [(i, d) for i, d in redriven if i in known and i in claimed])
    return known


def _packed_before(conn: psycopg.Connection[Any], rows: list[Row]) -> set[str]:
    """The ids of rows a packed day holds; their rows just filed are taken back out."""
    uuids, texts, days_of = _split(rows)
    known = {r[0] for r in conn.execute(PACKED_KNOWN, (days_of, uuids, texts)).fetchall()}
    if known:
        _unfile(conn, [(i, d) for i, _, d in rows if i in known])
    return known


def _known_before(conn: psycopg.Connection[Any], ids: list[str], store: Consults) -> set[str]:
    """The ids the legacy ledger holds, while it exists (another replica may drop it)."""
    try:
        with conn.transaction():
            return {r[0] for r in conn.execute(_LEGACY_KNOWN, (ids,)).fetchall()}
    except psycopg.errors.UndefinedTable:
        store.legacy = False
        return set()


def unclaim(conn: psycopg.Connection[Any], claims: Sequence[tuple[str, int]],
            store: Consults | None = None) -> None:
    """Take (message id, day) claims back out of the ledger within this transaction
    (messages left unsettled): those pairs only, not an id filed under another day, and a
    redriven copy's day-less entry."""
    if claims:
        _unfile(conn, claims)
        if store is None or store.redriven:
            conn.execute(f"DELETE FROM {REDRIVEN} WHERE id = ANY(%s::text[])",
                         (sorted({i for i, _ in claims}),))


def _unfile(conn: psycopg.Connection[Any], claims: Sequence[tuple[str, int]]) -> None:
    """The (id, day) pairs out of the day ledger. The days are also given as a list, so the
    plan touches their partitions alone and a packing of another day never holds this up."""
    rows = sorted([(i, False, d) for i, d in claims])
    uuids, texts, days_of = _split(rows)
    conn.execute(f"DELETE FROM {TABLE} l USING unnest(%s::uuid[], %s::text[], %s::date[])"
                 " AS b(id, text_id, day) WHERE l.day = ANY(%s::date[]) AND l.day = b.day"
                 " AND (l.id = b.id OR l.text_id = b.text_id)",
                 (uuids, texts, days_of, sorted(set(days_of))))


def _split(rows: Sequence[Row]) -> tuple[list[str | None], list[str | None], list[date]]:
    """A claim's ids as the columns they go to (uuid or text) and their days."""
    uuids = [i if _UUID.fullmatch(i) else None for i, _, _ in rows]
    texts = [None if u else i for u, (i, _, _) in zip(uuids, rows, strict=True)]
    return uuids, texts, [from_epoch_day(d) for _, _, d in rows]


def _iso_days(rows: Sequence[Row]) -> dict[int, str]:
    return {d: from_epoch_day(d).isoformat() for d in {d for _, _, d in rows}}
