"""What an SQS answer must look like before anything reads it, for either client.

A 200 answer is as untrusted as its framing: a proxy, a gateway or a server of another make
can send any JSON object. Each operation's answer is checked against the fields Queue reads
(lists of objects with string ids, counts and sizes bounded); one that does not fit raises
MalformedAnswer, which sqs.errors.retryable retries like a lost connection. The call fails
and is retried; the worker never halts on it, and no message counts as settled unless the
answer says so in the right shape.
"""

from __future__ import annotations

from typing import Any

from login_etl.sqs.http11 import MalformedResponse

# SQS allows at most 10 entries per batch call and 10 messages per receive.
MAX_ENTRIES = 10
# A batch entry id is at most 80 characters; SQS message ids are 36, receipt handles a few
# hundred. Longer is no SQS answer.
MAX_ENTRY_ID = 80
MAX_MESSAGE_ID = 256
MAX_RECEIPT_HANDLE = 4096
MAX_CODE = 256
# The numbers Queue reads (timestamps, counts, depths): plain ASCII digits, at most 19
# (what a 64-bit integer holds).
MAX_DIGITS = 19
NUMERIC_ATTRIBUTES = frozenset({
    "SentTimestamp", "ApproximateReceiveCount", "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed",
})
BATCH_OPERATIONS = frozenset({"send_message_batch", "delete_message_batch",
                              "change_message_visibility_batch"})


class MalformedAnswer(MalformedResponse):
    """A well-framed answer whose JSON is not the operation's shape; its text names the
    operation and the field, never a value from the answer."""


def check(operation: str, answer: Any) -> dict[str, Any]:
    """The answer, unchanged, if it has the shape `operation`'s caller reads; else raises."""
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"{operation}: not an object")
    if operation == "receive_message":
        _messages(answer.get("Messages"))
    elif operation in BATCH_OPERATIONS:
        _entries(operation, answer.get("Successful"), "Successful")
        for failure in _entries(operation, answer.get("Failed"), "Failed"):
            if not isinstance(failure.get("SenderFault", False), bool):
                raise MalformedAnswer(f"{operation}: Failed SenderFault not a boolean")
            _text(failure.get("Code", ""), MAX_CODE, f"{operation}: Failed Code")
    elif operation == "get_queue_attributes":
        _attributes(answer.get("Attributes"), f"{operation}: Attributes")
    return answer


def _entries(operation: str, value: Any, name: str) -> list[dict[str, Any]]:
    """Successful or Failed: absent, or a list of at most MAX_ENTRIES objects with string ids."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise MalformedAnswer(f"{operation}: {name} not a list of at most {MAX_ENTRIES}")
    for entry in value:
        if not isinstance(entry, dict):
            raise MalformedAnswer(f"{operation}: {name} entry not an object")
        _text(entry.get("Id"), MAX_ENTRY_ID, f"{operation}: {name} Id", empty=False)
    return value


def _messages(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise MalformedAnswer(f"receive_message: Messages not a list of at most {MAX_ENTRIES}")
    for message in value:
        if not isinstance(message, dict):
            raise MalformedAnswer("receive_message: message not an object")
        _text(message.get("MessageId"), MAX_MESSAGE_ID, "receive_message: MessageId",
              empty=False)
        _text(message.get("ReceiptHandle"), MAX_RECEIPT_HANDLE, "receive_message: ReceiptHandle",
              empty=False)
        if not isinstance(message.get("Body"), str):
            raise MalformedAnswer("receive_message: Body not a string")
        _attributes(message.get("Attributes"), "receive_message: Attributes")
        marks = message.get("MessageAttributes")
        if marks is not None and not isinstance(marks, dict):
            raise MalformedAnswer("receive_message: MessageAttributes not an object")


def _attributes(value: Any, where: str) -> None:
    """An object of string values; the numbers Queue reads are plain digits."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise MalformedAnswer(f"{where} not an object")
    for name, text in value.items():
        if not isinstance(text, str):
            raise MalformedAnswer(f"{where}: a value not a string")
        if name in NUMERIC_ATTRIBUTES and not (
                0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()):
            raise MalformedAnswer(f"{where}: {name} not a number")


def _text(value: Any, limit: int, where: str, *, empty: bool = True) -> None:
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise MalformedAnswer(f"{where} not a string of at most {limit}")
