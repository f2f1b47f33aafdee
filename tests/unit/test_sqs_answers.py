"""SQS answers of the wrong shape, through Queue on both clients (lean and boto3) against a
local fake server: a retryable failure of that call, never an exception that halts the
worker, and nothing counted as done unless the answer says so in the right shape."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import tenacity
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from login_etl import retrying
from login_etl.messages import Received
from login_etl.queue import Queue, QueueError
from login_etl.sqs.client import SqsClient
from tests.unit.fakeserver import read_request, serve_forever

GOOD = {
    "SendMessageBatch": {"Successful": [{"Id": "0", "MessageId": "m", "MD5OfMessageBody": "x"}],
                         "Failed": []},
    "DeleteMessageBatch": {"Successful": [{"Id": "0"}], "Failed": []},
    "ChangeMessageVisibilityBatch": {"Successful": [{"Id": "0"}], "Failed": []},
    "ReceiveMessage": {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                                     "Attributes": {"SentTimestamp": "1",
                                                    "ApproximateReceiveCount": "1"}}]},
    "GetQueueAttributes": {"Attributes": {"ApproximateNumberOfMessages": "3",
                                          "ApproximateNumberOfMessagesNotVisible": "0",
                                          "ApproximateNumberOfMessagesDelayed": "0"}},
}
BATCH_BAD: list[Any] = [
    {"Successful": "0", "Failed": {"Id": 1}},
    {"Successful": [{"Id": ["0"]}]},
    {"Successful": [{"Id": 0}]},
    {"Successful": {"Id": "0"}},
    {"Successful": [{"Id": "0"}] * 11},
    {"Successful": [{"Id": "0" * 81}]},
    {"Successful": ["0"]},
    {"Successful": [], "Failed": [{"Id": "0", "SenderFault": "false", "Code": "X"}]},
    {"Successful": [], "Failed": [{"Id": "0", "SenderFault": False, "Code": 7}]},
    {"Successful": [], "Failed": [None]},
]
RECEIVE_BAD: list[Any] = [
    {"Messages": "m1"},
    {"Messages": {"MessageId": "m1"}},
    {"Messages": [None]},
    {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": 5}]},
    {"Messages": [{"MessageId": 1, "ReceiptHandle": "r1", "Body": "{}"}]},
    {"Messages": [{"MessageId": "m1", "Body": "{}"}]},
    {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                   "Attributes": {"SentTimestamp": "soon"}}]},
    {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                   "Attributes": {"ApproximateReceiveCount": "9" * 40}}]},
    {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                   "Attributes": ["SentTimestamp"]}]},
    {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}"}] * 11},
]
ATTRIBUTES_BAD: list[Any] = [
    {"Attributes": "3"},
    {"Attributes": {"ApproximateNumberOfMessages": "lots"}},
    {"Attributes": {"ApproximateNumberOfMessages": 3}},
    {"Attributes": {"ApproximateNumberOfMessages": "-1"}},
]


class Fake:
    """Answers each operation from a script (then GOOD), counting the requests."""

    def __init__(self) -> None:
        self.script: dict[str, list[Any]] = {}
        # answered to every call of the operation (the fuzz below)
        self.always: dict[str, bytes] = {}
        self.calls: dict[str, int] = {}
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        serve_forever(self.listener, self.serve)

    def serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn:
            while (request := read_request(reader)) is not None:
                target = request.split(b"AmazonSQS.", 1)[1].split(b"\r\n", 1)[0].decode()
                self.calls[target] = self.calls.get(target, 0) + 1
                queued = self.script.get(target) or []
                answer = (self.always.get(target) or queued.pop(0) if queued
                          else self.always.get(target, GOOD[target]))
                body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    server = Fake()
    yield server
    server.listener.close()


def queue_on(fake: Fake, kind: str) -> Queue:
    if kind == "lean":
        client: Any = SqsClient(fake.url, "us-east-1", Credentials("test", "test"))
    else:
        client = boto3.session.Session().client(
            "sqs", endpoint_url=fake.url, region_name="us-east-1", aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
    return Queue(client, f"{fake.url}/000000000000/q")


def received() -> Received:
    return Received(message_id="m1", receipt_handle="r1", body="{}", sent_timestamp_ms=1)


@pytest.mark.parametrize("kind", ["lean", "boto3"])
@pytest.mark.parametrize("bad", BATCH_BAD)
def test_a_malformed_batch_answer_is_retried_and_settles_nothing(fake: Fake, kind: str,
                                                                 bad: Any) -> None:
    queue = queue_on(fake, kind)
    fake.calls.clear()
    fake.script = {"SendMessageBatch": [bad, bad], "DeleteMessageBatch": [bad],
                   "ChangeMessageVisibilityBatch": [bad]}
    assert queue.send_messages(["x"]) == []
    assert fake.calls["SendMessageBatch"] == 3
    assert queue.delete([received()]) == []
    assert fake.calls["DeleteMessageBatch"] == 2
    assert queue.change_visibility([received()], 30) == []
    assert fake.calls["ChangeMessageVisibilityBatch"] == 2


@pytest.mark.parametrize("kind", ["lean", "boto3"])
def test_malformed_answers_until_the_retries_end_are_a_retryable_queue_error(fake: Fake,
                                                                           kind: str) -> None:
    queue = queue_on(fake, kind)
    bad = {"Successful": "0", "Failed": {"Id": 1}}
    fake.script = {"SendMessageBatch": [bad] * 6}
    with pytest.raises(QueueError) as caught:
        queue.send_messages(["x"])
    assert caught.value.retryable
    assert "MalformedAnswer" in str(caught.value)


@pytest.mark.parametrize("kind", ["lean", "boto3"])
@pytest.mark.parametrize("bad", RECEIVE_BAD)
def test_a_malformed_receive_answer_is_retried(fake: Fake, kind: str, bad: Any) -> None:
    queue = queue_on(fake, kind)
    fake.calls.clear()
    fake.script = {"ReceiveMessage": [bad]}
    messages = queue.receive(0, 30)
    assert [(m.message_id, m.body, m.sent_timestamp_ms) for m in messages] == [("m1", "{}", 1)]
    assert fake.calls["ReceiveMessage"] == 2


@pytest.mark.parametrize("kind", ["lean", "boto3"])
@pytest.mark.parametrize("bad", ATTRIBUTES_BAD)
def test_a_malformed_attributes_answer_is_retried(fake: Fake, kind: str, bad: Any) -> None:
    queue = queue_on(fake, kind)
    fake.script = {"GetQueueAttributes": [bad]}
    assert queue.depth().visible == 3


@pytest.mark.parametrize("kind", ["lean", "boto3"])
def test_an_id_the_batch_did_not_hold_settles_nothing(fake: Fake, kind: str) -> None:
    queue = queue_on(fake, kind)
    fake.calls.clear()
    fake.script = {"DeleteMessageBatch": [{"Successful": [{"Id": "1"}, {"Id": "00"}]}]}
    assert queue.delete([received()]) == []
    assert fake.calls["DeleteMessageBatch"] == 2


# -- the JSON layer, fuzzed -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["0", "1", "m1", "r1", "3", "-1", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["Id", "MessageId", "ReceiptHandle", "Body", "Attributes", "Code",
                         "SenderFault", "SentTimestamp", "ApproximateNumberOfMessages"])
        | st.text(max_size=4), inner, max_size=5),
    max_leaves=16,
)
huge = st.sampled_from([
    "x" * 200_000, [{"Id": "0"}] * 2_000, {f"k{i}": "1" for i in range(2_000)},
    [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}"}] * 500, 10 ** 400,
])
FIELDS = {"SendMessageBatch": ("Successful", "Failed"),
          "DeleteMessageBatch": ("Successful", "Failed"),
          "ChangeMessageVisibilityBatch": ("Successful", "Failed"),
          "ReceiveMessage": ("Messages",), "GetQueueAttributes": ("Attributes",)}


def raw(pairs: list[tuple[str, Any]]) -> bytes:
    """A JSON object in the order given, a key as often as it comes (json.dumps cannot)."""
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()


@st.composite
def fuzzed(draw: Any, operation: str) -> bytes:
    """The operation's good answer with fields changed, dropped, repeated or made huge."""
    pairs: list[tuple[str, Any]] = []
    for name in FIELDS[operation]:
        good = GOOD[operation][name]
        how = draw(st.sampled_from(["keep", "drop", "wrong", "twice", "huge", "inner"]))
        if how == "keep":
            pairs.append((name, good))
        elif how == "wrong":
            pairs.append((name, draw(json_values)))
        elif how == "twice":
            pairs += [(name, draw(st.sampled_from([good, []]))), (name, draw(json_values))]
        elif how == "huge":
            pairs.append((name, draw(huge)))
        elif how == "inner":
            # one field inside the first element (or object) of the good value changed
            inner = json.loads(json.dumps(good))
            target = inner[0] if isinstance(inner, list) and inner else inner
            if isinstance(target, dict) and target:
                key = draw(st.sampled_from(sorted(target)))
                if draw(st.booleans()):
                    del target[key]
                else:
                    target[key] = draw(json_values | huge)
            pairs.append((name, inner))
    return raw(pairs)


def says(answer: bytes, entry: str, kind: str) -> bool:
    """Whether the answer, read as a JSON parser reads it, settles batch entry `entry`: both
    lists absent or lists of at most 10 objects with string ids (Failed's SenderFault a
    boolean, its Code a string), `entry` among the Successful and not among the Failed."""
    parsed = json.loads(answer)
    lists = [parsed.get("Successful"), parsed.get("Failed")]
    if kind == "boto3":
        # botocore's parser iterates what it expects to be a list: {} and "" come out empty
        lists = [None if v in ({}, "") else v for v in lists]
    if not all(v is None or (isinstance(v, list) and len(v) <= 10
                             and all(isinstance(e, dict) and isinstance(e.get("Id"), str)
                                     and 0 < len(e["Id"]) <= 80 for e in v))
               for v in lists):
        return False
    ok, failed = (v or [] for v in lists)
    if not all(isinstance(e.get("SenderFault", False), bool)
               and isinstance(e.get("Code", ""), str) and len(e.get("Code", "")) <= 256
               for e in failed):
        return False
    return any(e["Id"] == entry for e in ok) and not any(e["Id"] == entry for e in failed)


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrying, "wait_random_exponential", lambda **_: tenacity.wait_none())


@pytest.mark.parametrize(("kind", "examples"), [("lean", 300), ("boto3", 100)])
def test_fuzzed_answers_of_every_operation_fail_retryably_or_say_what_is_done(
        fake: Fake, no_waits: None, kind: str, examples: int) -> None:
    queue = queue_on(fake, kind)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(st.sampled_from(sorted(FIELDS)).flatmap(lambda op: st.tuples(st.just(op),
                                                                          fuzzed(op))))
    def check(case: tuple[str, bytes]) -> None:
        operation, answer = case
        fake.always = {operation: answer}
        try:
            if operation == "SendMessageBatch":
                assert queue.send_messages(["x"]) == ([] if says(answer, "0", kind) else [0])
            elif operation == "DeleteMessageBatch":
                assert queue.delete([received()]) == ([] if says(answer, "0", kind) else ["m1"])
            elif operation == "ChangeMessageVisibilityBatch":
                assert queue.change_visibility([received()], 30) == (
                    [] if says(answer, "0", kind) else ["r1"])
            elif operation == "ReceiveMessage":
                for m in queue.receive(0, 30):
                    assert isinstance(m.body, str) and isinstance(m.message_id, str)
                    assert isinstance(m.sent_timestamp_ms, int)
            else:
                depth = queue.depth()
                assert all(isinstance(n, int) and n >= 0 for n in vars(depth).values())
        except QueueError as exc:
            assert exc.retryable, exc
        finally:
            fake.always = {}

    check()
