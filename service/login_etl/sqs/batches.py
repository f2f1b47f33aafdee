"""The entries of SQS's batch calls (DeleteMessageBatch, ChangeMessageVisibilityBatch,
SendMessageBatch): how Queue groups them within SQS's limits and reads what an answer says
was done. Queue sends the groups and retries what is left."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from login_etl.sqs.errors import code_refuses_content

# SQS allows at most 10 messages per receive and per batch call.
MAX_BATCH = 10
# How many DeleteMessageBatch calls of one settle are in flight at once (Queue.delete): a
# batch of 500 is 50 calls, 5 round trips instead of 50; the pool keeps a connection for each.
DELETES_IN_FLIGHT = 10
# SQS refuses a batch request over 1 MiB (bodies and attributes, see entry_bytes) as a whole;
# the margin keeps the usual group clear of that refusal and of a server that counts a little
# differently.
MAX_BATCH_BYTES = 900 * 1024

def entry_bytes(entry: dict[str, Any]) -> int:
    """What SQS counts of a batch entry towards its size limits: the body and, per message
    attribute, its name, data type and value, in UTF-8 bytes (a Binary value in raw bytes)."""
    size = _utf8_len(entry.get("MessageBody") or "")
    for name, attribute in (entry.get("MessageAttributes") or {}).items():
        size += _utf8_len(name) + _utf8_len(attribute.get("DataType") or "")
        value = attribute.get("StringValue")
        if value is None:
            value = attribute.get("BinaryValue") or b""
        size += len(value) if isinstance(value, bytes | bytearray) else _utf8_len(value)
    return size


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def groups(entries: Sequence[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Consecutive entries, at most MAX_BATCH and MAX_BATCH_BYTES per group (an entry larger
    than that goes alone: SQS decides whether it fits)."""
    group: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        n = entry_bytes(entry)
        if group and (len(group) == MAX_BATCH or size + n > MAX_BATCH_BYTES):
            yield group
            group, size = [], 0
        group.append(entry)
        size += n
    if group:
        yield group


def settled(pending: list[dict[str, Any]], answer: dict[str, Any], delivered: list[str],
             still_failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One batch answer read: an entry is done only when the answer lists it in Successful
    (and not in Failed too); ids go to `delivered`, entries failed for good (SenderFault) to
    `still_failed`; returns the entries to try again (failed, or left out of the answer)."""
    failures = answer.get("Failed") or ()
    succeeded = {s.get("Id") for s in answer.get("Successful") or ()}
    failed_ids = {f.get("Id") for f in failures}
    final_ids = {f.get("Id") for f in failures if is_final(f)}
    done = succeeded - failed_ids
    delivered.extend(e["Id"] for e in pending if e["Id"] in done)
    still_failed.extend(e for e in pending if e["Id"] in final_ids)
    return [e for e in pending if e["Id"] not in done and e["Id"] not in final_ids]


def is_final(failure: dict[str, Any]) -> bool:
    """SenderFault entries (e.g. an expired receipt handle) will not heal by retrying, nor will
    an entry refused for its content (some servers mark that one as not the sender's fault)."""
    return bool(failure.get("SenderFault")) or code_refuses_content(str(failure.get("Code")))
