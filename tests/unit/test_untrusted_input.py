"""What a producer controls cannot break the SQS side: attributes named like our sealed ledger
ids are decoded without raising whatever their type or text, and batch sends are grouped by
bytes, split when refused for their size, and count an entry done only when SQS lists it as
Successful. The SQS stand-in enforces the limits LocalStack was measured to enforce."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from login_etl import metrics
from login_etl.masking import Masker
from login_etl.messages import Received
from login_etl.queue import ORIGIN_ATTRIBUTE, REDRIVE_ATTRIBUTE, Queue
from login_etl.settings import MaskingKey
from login_etl.sqs.batches import MAX_BATCH_BYTES, entry_bytes

KEY = MaskingKey("k1", b"s" * 32)
MIB = 1024 * 1024

attribute_values = st.one_of(
    st.text(), st.binary(), st.integers(), st.none(), st.floats(), st.lists(st.text()),
    st.dictionaries(st.text(), st.text()),
    st.builds(lambda a, b, c: f"{a}|{b}|{c}", st.text(), st.sampled_from(["k1", "k2", "é"]),
              st.text()),
)


@given(attribute_values)
def test_unseal_never_raises(value: Any) -> None:
    assert Masker([KEY]).unseal(value) is None


def test_non_ascii_tags_are_refused_not_raised() -> None:
    masker = Masker([KEY])
    assert masker.unseal("x|k1|é") is None
    assert masker.unseal("x|k1|\ud800") is None
    assert masker.unseal("\ud800|k1|AAAA") is None
    sealed = masker.seal("ledger-é")
    assert masker.unseal(sealed) == "ledger-é"


class ReceivingClient:
    def __init__(self, marks: list[Any]) -> None:
        self.marks = marks

    def receive_message(self, **_: Any) -> dict[str, Any]:
        # at most 10 a receive, as SQS answers
        messages = []
        start = self.start = getattr(self, "start", 0)
        self.start += 10
        for i, mark in enumerate(self.marks[start:start + 10], start):
            message: dict[str, Any] = {"MessageId": f"m{i}", "ReceiptHandle": f"r{i}",
                                       "Body": "{}", "Attributes": {"SentTimestamp": "1"}}
            if mark is not None:
                message["MessageAttributes"] = mark
            messages.append(message)
        return {"Messages": messages}


def unverified() -> float:
    return sum(metrics.UNVERIFIED_MARKS.labels(name)._value.get()
               for name in (ORIGIN_ATTRIBUTE, REDRIVE_ATTRIBUTE))


def test_forged_marks_of_every_type_are_ignored_and_counted() -> None:
    masker = Masker([KEY])
    forged_values: list[Any] = [
        {"DataType": "String", "StringValue": "x|k1|é"},
        {"DataType": "String", "StringValue": "same-id"},
        {"DataType": "String", "StringValue": "é" * 100_000},
        {"DataType": "String", "StringValue": ""},
        {"DataType": "Number", "StringValue": "12"},
        {"DataType": "Binary", "BinaryValue": b"\xff\x00|k1|"},
        {"DataType": "String.custom", "StringValue": masker.seal("other")},
        {"DataType": "Binary", "BinaryValue": masker.seal("other").encode()},
        {"StringValue": masker.seal("other")},
        "not a dict", None, 7,
    ]
    marks = [{REDRIVE_ATTRIBUTE: v, ORIGIN_ATTRIBUTE: v} for v in forged_values]
    marks += [{"other": {"DataType": "String", "StringValue": "é"}}, None, {}]
    genuine = {REDRIVE_ATTRIBUTE: {"DataType": "String", "StringValue": masker.seal("ledger-1")},
               ORIGIN_ATTRIBUTE: {"DataType": "String", "StringValue": masker.seal("origin-1")}}
    before = unverified()
    queue = Queue(ReceivingClient([*marks, genuine]), "q", sealer=masker)
    received = []
    while len(received) < len(marks) + 1:
        received += queue.receive(0, 30)
    assert [m.message_id for m in received[:-1]] == [f"m{i}" for i in range(len(marks))]
    assert all(m.origin is None for m in received[:-1])
    assert (received[-1].message_id, received[-1].origin) == ("ledger-1", "origin-1")
    assert unverified() - before == 2 * len(forged_values)


class SizeLimitedSqs:
    """SendMessageBatch as LocalStack answers it: a request over 1 MiB (entry_bytes summed) is
    refused whole with BatchRequestTooLong. `omit`: ids the first response leaves out of both
    Successful and Failed."""

    def __init__(self, omit: set[str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.sent: list[str] = []
        self.omit = set(omit or ())

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([e["Id"] for e in Entries])
        total = sum(entry_bytes(e) for e in Entries)
        if total > MIB:
            raise ClientError({"Error": {"Code": "AWS.SimpleQueueService.BatchRequestTooLong",
                                         "QueryErrorCode": "BatchRequestTooLong",
                                         "Message": f"You have sent {total} bytes."},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendMessageBatch")
        omitted, self.omit = self.omit, set()
        ok = [e for e in Entries if e["Id"] not in omitted]
        self.sent += [e["Id"] for e in ok]
        return {"Successful": [{"Id": e["Id"], "MessageId": "x"} for e in ok], "Failed": []}


def received(i: int, body: str) -> Received:
    return Received(f"id{i}", f"rh{i}", body, 1)


def test_entry_bytes_counts_what_sqs_counts() -> None:
    """LocalStack's figure for 10 entries of a 100 KiB body and one 5 KiB String attribute
    named "a": 1,075,270 bytes (measured)."""
    entry = {"Id": "0", "MessageBody": "x" * 102_400,
             "MessageAttributes": {"a": {"DataType": "String", "StringValue": "v" * 5120}}}
    assert 10 * entry_bytes(entry) == 1_075_270
    assert entry_bytes({"MessageBody": "é"}) == 2
    assert entry_bytes({"MessageBody": "", "MessageAttributes": {
        "b": {"DataType": "Binary", "BinaryValue": b"\0" * 7}}}) == 1 + 6 + 7


def test_large_rejects_are_grouped_by_bytes_and_all_reach_the_dlq() -> None:
    client = SizeLimitedSqs()
    dlq = Queue(client, "dlq", label="dlq", sealer=Masker([KEY]))
    rejects = [(received(i, "x" * 105_000), "invalid_json") for i in range(10)]
    assert dlq.send_rejections(rejects) == []
    assert sorted(client.sent, key=int) == [str(i) for i in range(10)]
    assert [len(call) for call in client.calls] == [MAX_BATCH_BYTES // 105_300, 2]


def test_a_refused_batch_is_split_and_only_the_entry_too_long_for_good_stays(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Grouping off (as if SQS counted more than we do): the whole call is refused, the
    halves go through, and the one entry over the limit with our attributes is refused."""
    monkeypatch.setattr("login_etl.sqs.batches.MAX_BATCH_BYTES", 100 * MIB)
    client = SizeLimitedSqs()
    dlq = Queue(client, "dlq", label="dlq", sealer=Masker([KEY]))
    bodies = ["x" * 105_000] * 4 + ["y" * (MIB - 16)] + ["small"] * 5
    rejects = [(received(i, body), "invalid_json") for i, body in enumerate(bodies)]
    assert dlq.send_rejections(rejects) == ["id4"]
    assert sorted(client.sent, key=int) == [str(i) for i in range(10) if i != 4]
    assert ["4"] in client.calls


def test_an_entry_missing_from_the_response_is_not_counted_done() -> None:
    client = SizeLimitedSqs(omit={"2"})
    queue = Queue(client, "q")
    assert queue.send_messages(["a", "b", "c"]) == []
    assert client.calls == [["0", "1", "2"], ["2"]]
