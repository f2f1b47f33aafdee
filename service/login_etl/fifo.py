"""What a FIFO queue asks of its senders: a message group and a deduplication id per message.

SQS delivers the messages of one group in order and none of a group while one of its messages
is in flight; login-etl keeps that order to the commit (pipeline.py). Hand-offs and redriven
copies stay in their message's group and carry a deduplication id derived from the ledger id
they are filed under, so a send repeated after a lost answer is kept once by SQS.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

# The group of a hand-off or redriven copy whose message came without one (a standard source
# with a FIFO DLQ configured by hand), and of a loaded event without the grouping field.
DEFAULT_GROUP: Final = "login-etl"
# SQS: 1-128 characters of a-z A-Z 0-9 and ASCII punctuation, for group and deduplication ids.
_ID_MAX: Final = 128


def is_fifo(url: str) -> bool:
    """A FIFO queue: SQS requires its name to end in .fifo (and no other queue's may)."""
    return urlsplit(url).path.rstrip("/").endswith(".fifo")


def dedup_id(kind: str, ledger_id: str) -> str:
    """A MessageDeduplicationId derived from a ledger id: every send of one hand-off (or one
    redriven copy) has the same. Hashed: a ledger id can be longer than SQS allows."""
    return hashlib.sha256(f"{kind}:{ledger_id}".encode("utf-8", "surrogatepass")).hexdigest()


def valid_id(value: str) -> bool:
    """What SQS takes as a group or deduplication id."""
    return 0 < len(value) <= _ID_MAX and value.isascii() and all(
        "!" <= c <= "~" for c in value)


def group_of_event(body: str, field: str) -> str:
    """The group `load` sends an event in: the text of its `field` where SQS takes it as it is,
    else a hash of the value (same value, same group); DEFAULT_GROUP where the body has no such
    field (a malformed event still goes out, for the worker to reject)."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return DEFAULT_GROUP
    value: Any = event.get(field) if isinstance(event, dict) else None
    if value is None:
        return DEFAULT_GROUP
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if valid_id(text):
        return text
    return "h-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def group_of_received(attributes: Any) -> str | None:
    """The MessageGroupId of a received message (its system attributes), if it has one."""
    group = attributes.get("MessageGroupId") if isinstance(attributes, dict) else None
    return group if isinstance(group, str) and group else None
