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

A day is packed once it ended a day and an hour ago (by the database's clock, as every ledger
decision: no replica's clock enters them): its ids move into login_etl_ledger_packed as sorted
arrays of up to 120 (a text id as the uuid of its md5), each row keyed by the lowest id it may
hold, in steps of a bounded size, each its own transaction, without a table lock. About 18
bytes an id instead of about 92. A claim for a day before today also looks its ids up there,
after filing them: a claim that waited for a step sees what it packed. Ids claimed for a day
after it was packed are merged into its arrays by the next packing.

A redriven copy is also filed day-less (login_etl_ledger_redriven) and kept there for as long
as a copy can come back (the DLQ's retention and then the source's after its origin's day).
Replicas register the protocol they speak (replicas.py): what an older one would not
understand waits while one is seen.

An unpartitioned ledger from before is renamed login_etl_ledger_legacy and consulted by
every claim until its newest id is past the retention; then it is dropped.

The protocol reads in five modules: days (names, which days are kept or packed), schema (the
tables and creating them), claims (filing and taking back ids), upkeep (housekeeping),
replicas (the protocol versions sharing the database).
"""

from login_etl.ledger import replicas
from login_etl.ledger.claims import CLAIM_SAVEPOINT, PACKED_KNOWN, Claim, claim, unclaim
from login_etl.ledger.days import (
    AHEAD_DAYS,
    DEFAULT,
    DEFAULT_KEEP_DAYS,
    LEGACY,
    PACK_AFTER_SECONDS,
    PACK_IDS,
    PACKED,
    REDRIVEN,
    TABLE,
    cutoff,
    day_of,
    droppable,
    epoch_day,
    from_epoch_day,
    keep_days,
    packable,
    packed_name,
    partition_name,
    redrive_keep_days,
    today,
)
from login_etl.ledger.schema import (
    PARENT_DDL,
    ROWS_DDL,
    add_packed,
    add_partition,
    as_uuid,
    create_schema,
    db_today,
    ddl_lock,
    detached,
    init,
    legacy_expired,
    partitions,
    relkind,
)
from login_etl.ledger.upkeep import Maintenance, maintain, pack

__all__ = [
    "AHEAD_DAYS",
    "CLAIM_SAVEPOINT",
    "DEFAULT",
    "DEFAULT_KEEP_DAYS",
    "LEGACY",
    "PACKED",
    "PACKED_KNOWN",
    "PACK_AFTER_SECONDS",
    "PACK_IDS",
    "PARENT_DDL",
    "REDRIVEN",
    "ROWS_DDL",
    "TABLE",
    "Claim",
    "Maintenance",
    "add_packed",
    "add_partition",
    "as_uuid",
    "claim",
    "create_schema",
    "cutoff",
    "day_of",
    "db_today",
    "ddl_lock",
    "detached",
    "droppable",
    "epoch_day",
    "from_epoch_day",
    "init",
    "keep_days",
    "legacy_expired",
    "maintain",
    "pack",
    "packable",
    "packed_name",
    "partition_name",
    "partitions",
    "redrive_keep_days",
    "relkind",
    "replicas",
    "today",
    "unclaim",
]
