"""`dlq redrive`: DLQ messages back to the source queue, each stored at most once.

Each copy carries a sealed ledger id (REDRIVE_ATTRIBUTE), so however often an interrupted
redrive sends one, the worker files it under the same id and the ledger absorbs the repeats.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from login_etl.fifo import dedup_id
from login_etl.ledger.days import dated
from login_etl.messages import Received
from login_etl.queue import REDRIVE_ATTRIBUTE, Queue, QueueError
from login_etl.sqs.batches import MAX_BATCH


@dataclass(frozen=True)
class Redriven:
    moved: int
    # Left in the DLQ: the source queue refused their copy for good (a body near SQS's size
    # limit has no room for the redrive mark).
    refused: int = 0


def _redrive_id(m: Received) -> str:
    """The ledger id and day a redriven copy is filed under, sealed with it.

    A worker's hand-off: `redrive:<origin>` on the origin's day, so every DLQ copy of one
    reject agrees (a seal without a day: the DLQ copy's own). A message SQS moved itself: its
    own id and SentTimestamp day, which SQS keeps, so a stored one stays a duplicate.
    """
    if m.origin:
        return dated(f"redrive:{m.origin}", m.origin_day if m.origin_day is not None else m.day)
    return dated(m.message_id, m.day)


def redrive(dlq: Queue, source: Queue, limit: int | None = None,
            progress: Callable[[int], None] | None = None,
            stop: Callable[[], bool] | None = None) -> Redriven:
    """Move DLQ messages back to the source, 10 at a time: send first, then delete.

    Each copy carries a sealed ledger id: `redrive:<origin>` for a worker's hand-off (so two
    DLQ copies of one reject still make one row), the DLQ message id for one SQS moved there
    itself (its original id, so a message already stored stays a duplicate). Interrupting
    between send and delete can only send a copy twice, which the ledger absorbs. Without a
    limit it moves at most what the DLQ held at the start: a message that is still bad comes
    straight back and must not be moved round in circles. A message whose copy the source
    refuses stays in the DLQ, visible again when the redrive ends.
    """
    if dlq.sealer is None:
        raise ValueError("redrive needs the masking key to seal ledger ids")
    if limit is None:
        limit = dlq.depth().visible
    moved = empty = 0
    refused: list[Received] = []
    try:
        while moved + len(refused) < limit and empty < 2 and not (stop and stop()):
            batch = dlq.receive(wait_seconds=1, visibility_timeout=60,
                                max_messages=min(MAX_BATCH, limit - moved - len(refused)))
            if not batch:
                empty += 1
                continue
            empty = 0
            ids = [_redrive_id(m) for m in batch]
            # Into a FIFO source: each copy in its message's group, deduplicated by the id it
            # is filed under (a copy sent twice by an interrupted redrive is kept once).
            failed = set(source.send_messages(
                [m.body for m in batch],
                [{REDRIVE_ATTRIBUTE: {
                    "DataType": "String",
                    "StringValue": dlq.sealer.seal(ledger_id),
                }} for ledger_id in ids],
                groups=[m.group_id for m in batch],
                dedup_ids=[dedup_id("redrive", ledger_id) for ledger_id in ids]))
            refused += [m for i, m in enumerate(batch) if i in failed]
            copied = [m for i, m in enumerate(batch) if i not in failed]
            # Copied but still in the DLQ: say so, do not count them as moved.
            if left := dlq.delete(copied):
                raise QueueError(f"{len(left)} DLQ messages were copied to the source queue but "
                                 "could not be deleted; they will be redriven again (the ledger "
                                 "stores each once)")
            moved += len(copied)
            if progress:
                progress(moved)
    finally:
        if refused:
            with contextlib.suppress(QueueError):
                dlq.change_visibility(refused, 0)
    return Redriven(moved, len(refused))
