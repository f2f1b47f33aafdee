"""The ledger's days: names, and which days are kept, dropped or packed (pure functions)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

TABLE = "login_etl_ledger"
PACKED = "login_etl_ledger_packed"
DEFAULT = "login_etl_ledger_default"
LEGACY = "login_etl_ledger_legacy"
REDRIVEN = "login_etl_ledger_redriven"
# Days kept when the queue's retention is not known (SQS's longest retention is 14 days).
DEFAULT_KEEP_DAYS = 15
# Days created ahead of today, so the worker never writes into a day it still has to create.
AHEAD_DAYS = 2
# Ids in one packed row: 120 uuids keep the row (1,988 bytes) just under the size at which
# Postgres moves a value out of line (TOAST), four rows to a page.
PACK_IDS = 120
# A day is packed once it ended this long ago: a day and an hour. By then only a message more
# than a day in the queue makes a claim of it. Claims look ids up in the packed rows for every
# day before their own today, so the margin is also far beyond any clock skew between replicas.
PACK_AFTER_SECONDS = 86_400 + 3600
_PARTITION = re.compile(r"^_p(\d{8})$")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def epoch_day(day: date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


def from_epoch_day(day: int) -> date:
    return date.fromordinal(day + _EPOCH_ORDINAL)


def today() -> int:
    """This machine's UTC day: for tools and tests. The worker's ledger decisions take the
    database's day (schema.db_today, Store.today), so a replica's clock never enters them."""
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


def redrive_keep_days(source_seconds: int | None, dlq_seconds: int | None) -> int:
    """Days a redriven copy's id is kept after its origin's day: the DLQ keeps a message
    until its origin's retention there ends (SQS counts from the first enqueue), and a copy
    redriven at the last moment lives the source queue's retention more."""
    return keep_days(source_seconds) + keep_days(dlq_seconds)


def day_of(name: str, parent: str = TABLE) -> int | None:
    """The day of a partition of `parent` by its name; None for any other table."""
    match = _PARTITION.match(name.removeprefix(parent)) if name.startswith(parent) else None
    return epoch_day(datetime.strptime(match.group(1), "%Y%m%d").date()) if match else None


def packable(have: set[int], now_seconds: float) -> list[int]:
    """Days that ended PACK_AFTER_SECONDS ago or more."""
    return sorted(d for d in have if (d + 1) * 86_400 + PACK_AFTER_SECONDS <= now_seconds)


def droppable(have: set[int], now: int, keep: int) -> list[int]:
    """Days whose last possible redelivery is more than `keep` days ago."""
    return sorted(d for d in have if d < now - keep)


def cutoff(now: int, keep: int) -> date:
    return from_epoch_day(now - keep)


def dated(ledger_id: str, day: int) -> str:
    """A sealed ledger id with its ledger day: `<id>|<day>`."""
    return f"{ledger_id}|{day}"


def with_day(sealed: str | None) -> tuple[str | None, int | None]:
    """`<id>|<day>` -> (id, day); a seal from before days were carried -> (id, None)."""
    if sealed is None:
        return None, None
    ledger_id, sep, day = sealed.rpartition("|")
    if sep and ledger_id and day.isascii() and day.isdigit() and len(day) <= 7:
        return ledger_id, int(day)
    return sealed, None
