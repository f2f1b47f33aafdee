"""The SQS side: receive, delete, DLQ hand-off, visibility and depth, each under its retry policy.

Batch calls report failures per entry; every such entry is retried, and what still fails is
returned to the caller, never silently dropped (the peers only log them).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from login_etl import metrics, retrying
from login_etl.fifo import DEFAULT_GROUP, dedup_id, group_of_received, is_fifo
from login_etl.ledger.days import dated, with_day
from login_etl.masking import Masker
from login_etl.messages import Received
from login_etl.sqs import answers
from login_etl.sqs.batches import DELETES_IN_FLIGHT, MAX_BATCH, groups, settled
from login_etl.sqs.errors import (
    AccessDenied,
    ContentRefused,
    QueueError,
    QueueGone,
    translated,
)

__all__ = ["AccessDenied", "Depth", "Queue", "QueueError", "QueueGone", "SqsApi"]

# Sealed ledger ids (Masker.seal) carried as message attributes:
#   ORIGIN_ATTRIBUTE   on a DLQ hand-off: the ledger id the rejected message was settled under
#   REDRIVE_ATTRIBUTE  on a redriven copy: the ledger id the worker must store it under, the
#                      same however often an interrupted redrive sends it
# Unsealed or foreign values are ignored: any producer can set attributes.
ORIGIN_ATTRIBUTE = "login_etl_origin"
REDRIVE_ATTRIBUTE = "login_etl_redrive_of"
# The system attributes a receive asks for; a FIFO queue adds each message's group.
_RECEIVE_ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount"]
_FIFO_RECEIVE_ATTRIBUTES = [*_RECEIVE_ATTRIBUTES, "MessageGroupId"]


class SqsApi(Protocol):
    """The five SQS calls a Queue makes, with the parameters it passes: what a client must have.

    login_etl.sqs.SqsClient and a boto3 SQS client both fit. Answers are the SQS API's JSON
    objects (boto3's shapes); failures raise botocore's exceptions, which Queue translates
    into QueueError as each attempt fails (sqs/errors.py), so nothing of botocore passes it.
    A client that also has `delete_message_batches` (the lean one) gets a settle's deletes
    several at a time (Queue._deletes_in_flight).
    """

    def receive_message(self, *, QueueUrl: str, MaxNumberOfMessages: int, WaitTimeSeconds: int,
                        VisibilityTimeout: int, MessageSystemAttributeNames: list[str],
                        MessageAttributeNames: list[str],
                        ReceiveRequestAttemptId: str = ...) -> dict[str, Any]: ...

    def delete_message_batch(self, *, QueueUrl: str,
                             Entries: list[dict[str, Any]]) -> dict[str, Any]: ...

    def change_message_visibility_batch(self, *, QueueUrl: str,
                                        Entries: list[dict[str, Any]]) -> dict[str, Any]: ...

    def send_message_batch(self, *, QueueUrl: str,
                           Entries: list[dict[str, Any]]) -> dict[str, Any]: ...

    def get_queue_attributes(self, *, QueueUrl: str,
                             AttributeNames: list[str]) -> dict[str, Any]: ...


class _PartialFailure(retrying.RetryAgain):
    def __init__(self, failed: list[dict[str, Any]]) -> None:
        self.failed = failed


@dataclass(frozen=True)
class Depth:
    visible: int
    in_flight: int
    delayed: int


class Queue:
    """One queue URL on one client."""

    def __init__(self, client: SqsApi, url: str, label: str = "source",
                 sealer: Masker | None = None) -> None:
        self.client = client
        self.url = url
        self.label = label
        self.sealer = sealer
        self.fifo = is_fifo(url)

    def _unseal(self, marks: Any, name: str) -> str | None:
        """The ledger id sealed in one of our attributes, else None; never raises.

        Any producer can set an attribute of our name, of any type, length and text: whatever
        does not verify is ignored (the message is an ordinary one) and counted.
        """
        if self.sealer is None or not isinstance(marks, dict) or name not in marks:
            return None
        attribute = marks[name]
        value = (attribute.get("StringValue")
                 if isinstance(attribute, dict) and attribute.get("DataType") == "String"
                 else None)
        ledger_id = self.sealer.unseal(value)
        if ledger_id is None:
            metrics.UNVERIFIED_MARKS.labels(name).inc()
        return ledger_id

    def _timed(self, operation: str, fn: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
        """One call, timed; its answer checked (_checked) before anyone reads it."""
        started = time.perf_counter()
        try:
            answer: Any = fn(QueueUrl=self.url, **kwargs)
        except Exception as exc:
            answer = exc
        finally:
            metrics.SQS_SECONDS.labels(operation).observe(time.perf_counter() - started)
        return self._checked(operation, answer)

    def _checked(self, operation: str, answer: Any) -> dict[str, Any]:
        """A call's answer, checked for shape (answers.check), or the QueueError of its failure
        (`answer` is then the exception the call raised).

        An answer of the wrong shape fails the call with MalformedAnswer, retried like a lost
        connection: never a halt, and nothing counts as done on it. Whatever the call raised
        leaves as a QueueError (sqs/errors.py decides which, and whether a wait heals it).
        """
        try:
            try:
                if isinstance(answer, Exception):
                    raise answer
            # botocore's parser walking an answer of the wrong shape ("Successful": "0")
            except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
                raise answers.MalformedAnswer(f"{operation}: unreadable answer") from exc
            return answers.check(operation, answer)
        except Exception as exc:
            raise translated(exc, f"{operation} on {self.label} queue") from exc

    def _call(self, operation: str, policy: str, fn: Callable[..., Any],
              **kwargs: Any) -> dict[str, Any]:
        try:
            return retrying.call(policy, self._timed, operation, fn, **kwargs)
        except QueueError:
            metrics.IO_ERRORS.labels(policy).inc()
            raise

    def receive(self, wait_seconds: int, visibility_timeout: int,
                max_messages: int = MAX_BATCH) -> list[Received]:
        """One receive. On a FIFO queue it carries a ReceiveRequestAttemptId, the same on each
        retry of this receive: a retry after a lost answer gets the same messages back instead
        of leaving them (and so their groups) hidden for a visibility timeout."""
        fifo: dict[str, Any] = {}
        if self.fifo:
            fifo["ReceiveRequestAttemptId"] = uuid.uuid4().hex
        response = self._call(
            "receive_message", "receive", self.client.receive_message,
            MaxNumberOfMessages=min(max_messages, MAX_BATCH), WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=_FIFO_RECEIVE_ATTRIBUTES if self.fifo
            else _RECEIVE_ATTRIBUTES,
            MessageAttributeNames=[REDRIVE_ATTRIBUTE, ORIGIN_ATTRIBUTE], **fifo,
        )
        now_ms = int(time.time() * 1000)
        received = []
        for m in response.get("Messages") or ():
            attributes = m.get("Attributes") or {}
            marks = m.get("MessageAttributes")
            redrive_of, redrive_day = with_day(
                self._unseal(marks, REDRIVE_ATTRIBUTE) if marks else None)
            origin, origin_day = with_day(
                self._unseal(marks, ORIGIN_ATTRIBUTE) if marks else None)
            received.append(Received(
                message_id=redrive_of or m["MessageId"],
                receipt_handle=m["ReceiptHandle"], body=m["Body"],
                sent_timestamp_ms=int(attributes.get("SentTimestamp", now_ms)),
                receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
                origin=origin, redrive_day=redrive_day if redrive_of else None,
                origin_day=origin_day,
                group_id=group_of_received(attributes) if self.fifo else None,
            ))
        return received

    def _deletes_in_flight(self, groups: deque[list[dict[str, Any]]], delivered: list[str],
                           still_failed: list[dict[str, Any]]) -> deque[list[dict[str, Any]]]:
        """The first attempt of each group, DELETES_IN_FLIGHT calls at a time, where the client
        can (the lean client's delete_message_batches); returns the groups left to retry one
        by one, as _batch does with any group. A chunk whose calls all fail hands everything
        not yet tried to _batch, whose outage rule then applies. A fault no retry heals
        raises, naming what was delivered."""
        in_flight = getattr(self.client, "delete_message_batches", None)
        if in_flight is None:
            return groups
        left: deque[list[dict[str, Any]]] = deque()
        while groups:
            chunk = [groups.popleft() for _ in range(min(DELETES_IN_FLIGHT, len(groups)))]
            outcomes = in_flight([{"QueueUrl": self.url, "Entries": g} for g in chunk])
            fatal: QueueError | None = None
            answered = 0
            for pending, (outcome, seconds) in zip(chunk, outcomes, strict=True):
                metrics.SQS_SECONDS.labels("delete_message_batch").observe(seconds)
                try:
                    answer = self._checked("delete_message_batch", outcome)
                except QueueError as error:
                    if not error.retryable:
                        fatal = fatal or error
                    left.append(pending)
                    continue
                answered += 1
                rest = settled(pending, answer, delivered, still_failed)
                if rest:
                    left.append(rest)
            if fatal is not None:
                metrics.IO_ERRORS.labels("delete").inc()
                raise fatal.having_delivered(delivered) from fatal.__cause__
            if not answered:
                left.extend(groups)
                break
        return left

    def _batch(self, operation: str, policy: str, fn: Callable[..., Any],
               entries: list[dict[str, Any]], *, keep_going: bool = False,
               deadline: float | None = None) -> list[dict[str, Any]]:
        """Send entries in groups of at most 10 and MAX_BATCH_BYTES; retry the failed entries;
        return what still failed.

        An entry is done only when the response lists it in Successful: one it leaves out is
        retried like a failed one. A group refused as a whole for its size (or content) is
        split in halves and sent again; a single entry refused that way is refused for good.
        keep_going: a group whose call fails after its retries counts as failed and the next
        groups are still sent (deletes, visibility: one bad moment must not skip the rest);
        after a second such group the queue is down, and the rest count as failed unsent (an
        outage must not cost each group its retries). A fault no retry heals (queue gone,
        access denied) still raises at once.
        """
        still_failed: list[dict[str, Any]] = []
        delivered: list[str] = []
        broken = 0
        work = deque(groups(entries))
        # A busy queue's batch (more groups than go out at once) has its deletes in flight; a
        # small one sends them one after another: little CPU is at stake at such rates, and a
        # server answering one request at a time (LocalStack) would hold the next receive
        # behind the burst (p99 from send to commit at 500 msg/s: 118 ms against 111).
        if operation == "delete_message_batch" and len(work) > DELETES_IN_FLIGHT:
            work = self._deletes_in_flight(work, delivered, still_failed)
        while work:
            pending = work.popleft()
            if broken >= 2 or (deadline is not None and time.monotonic() > deadline):
                still_failed.extend(pending)
                continue

            def attempt(pending: list[dict[str, Any]] = pending) -> None:
                response = self._timed(operation, fn, Entries=pending)
                pending[:] = settled(pending, response, delivered, still_failed)
                if pending:
                    raise _PartialFailure(pending)

            try:
                retrying.call(policy, attempt)
            except _PartialFailure as partial:
                metrics.IO_ERRORS.labels(policy).inc()
                still_failed.extend(partial.failed)
            except QueueError as exc:
                if operation == "send_message_batch" and isinstance(exc, ContentRefused):
                    if len(pending) > 1:
                        half = len(pending) // 2
                        work.extendleft((pending[half:], pending[:half]))
                    else:
                        still_failed.extend(pending)
                    continue
                metrics.IO_ERRORS.labels(policy).inc()
                if not keep_going or not exc.retryable:
                    raise exc.having_delivered(delivered) from exc.__cause__
                broken += 1
                still_failed.extend(pending)
        return still_failed

    def delete(self, messages: Sequence[Received]) -> list[str]:
        """Delete; returns the message ids that could not be deleted (they will come back)."""
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle}
                   for i, m in enumerate(messages)]
        failed = self._batch("delete_message_batch", "delete",
                             self.client.delete_message_batch, entries, keep_going=True)
        return [messages[int(e["Id"])].message_id for e in failed]

    def change_visibility(self, messages: Sequence[Received], timeout: int,
                          deadline: float | None = None) -> list[str]:
        """The receipt handles that failed. deadline (time.monotonic()): chunks not started by
        then count as failed, unsent."""
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": timeout}
                   for i, m in enumerate(messages)]
        failed = self._batch("change_message_visibility_batch", "visibility",
                             self.client.change_message_visibility_batch, entries,
                             keep_going=True, deadline=deadline)
        return [messages[int(e["Id"])].receipt_handle for e in failed]

    def send_messages(self, bodies: Sequence[str],
                      attributes: Sequence[dict[str, Any]] | None = None,
                      policy: str = "send", *, groups: Sequence[str | None] | None = None,
                      dedup_ids: Sequence[str] | None = None) -> list[int]:
        """SendMessageBatch with per-entry retries; the positions SQS refused for good (e.g. a
        message over its size limit). A transient failure raises QueueError.

        On a FIFO queue every entry carries a MessageGroupId (`groups`, DEFAULT_GROUP where
        missing) and a MessageDeduplicationId (`dedup_ids`, required): a retried entry has the
        same one, so SQS absorbs a send whose answer was lost. A standard queue ignores both.
        """
        if self.fifo and (dedup_ids is None or len(dedup_ids) != len(bodies)):
            raise ValueError("a FIFO queue needs a deduplication id per message")
        entries = []
        for i, body in enumerate(bodies):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
            if attributes is not None and attributes[i]:
                entry["MessageAttributes"] = attributes[i]
            # (checked above: a FIFO queue has its dedup_ids)
            if self.fifo and dedup_ids is not None:
                entry["MessageGroupId"] = (groups[i] if groups else None) or DEFAULT_GROUP
                entry["MessageDeduplicationId"] = dedup_ids[i]
            entries.append(entry)
        failed = self._batch("send_message_batch", policy, self.client.send_message_batch, entries)
        return sorted(int(e["Id"]) for e in failed)

    def send_rejections(self, rejected: Sequence[tuple[Received, str]]) -> list[str]:
        """Hand bad messages to the DLQ: body unchanged, `reason` (and origin) as attributes.

        Returns the ids of messages the DLQ refused for good (e.g. a body at the size limit
        plus attributes): those stay in the source queue, and SQS's own RedrivePolicy moves
        them once they reach maxReceiveCount. A transient failure raises QueueError.
        """
        def marks(m: Received, reason: str) -> dict[str, Any]:
            attrs = {"reason": {"DataType": "String", "StringValue": reason},
                     "source_message_id": {"DataType": "String", "StringValue": m.message_id}}
            if self.sealer:
                attrs[ORIGIN_ATTRIBUTE] = {"DataType": "String",
                                           "StringValue": self.sealer.seal(dated(m.message_id,
                                                                                  m.day))}
            return attrs

        try:
            failed = self.send_messages(
                [m.body for m, _ in rejected], [marks(m, reason) for m, reason in rejected],
                "dlq_send", groups=[m.group_id for m, _ in rejected],
                dedup_ids=[dedup_id("dlq", m.message_id) for m, _ in rejected])
        except QueueError as exc:
            raise exc.having_delivered([rejected[int(i)][0].message_id for i in exc.delivered]
                                       ) from exc.__cause__
        return [rejected[i][0].message_id for i in failed]

    def _attributes(self, *names: str) -> dict[str, str]:
        # SQS leaves "Attributes" out when none of the names asked for is set.
        return self._call(
            "get_queue_attributes", "queue_attributes", self.client.get_queue_attributes,
            AttributeNames=list(names),
        ).get("Attributes") or {}

    def depth(self) -> Depth:
        attributes = self._attributes("ApproximateNumberOfMessages",
                                      "ApproximateNumberOfMessagesNotVisible",
                                      "ApproximateNumberOfMessagesDelayed")
        depth = Depth(
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        )
        for state, value in (("visible", depth.visible), ("in_flight", depth.in_flight),
                             ("delayed", depth.delayed)):
            metrics.QUEUE_DEPTH.labels(self.label, state).set(value)
        return depth

    def attribute(self, name: str) -> str | None:
        return self._attributes(name).get(name)

    def retention_seconds(self) -> int | None:
        """How long the queue keeps a message (it can be redelivered that long); None if the
        queue does not say."""
        value = self.attribute("MessageRetentionPeriod")
        return int(value) if value and value.isdigit() else None

