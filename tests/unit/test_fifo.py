"""FIFO rules of the queue side: attempt ids on receives, groups and deduplication ids on
sends, group ids for `load`."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError

from login_etl.fifo import DEFAULT_GROUP, dedup_id, group_of_event, is_fifo, valid_id
from login_etl.invocation import dlq_url_for
from login_etl.messages import Received
from login_etl.queue import Queue

FIFO_URL = "http://127.0.0.1:4566/000000000000/logins.fifo"


class Recorder:
    """An SqsApi that records each call's parameters; the first receive's answer is lost."""

    def __init__(self, lose_first: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lose_first = lose_first

    def receive_message(self, **params: Any) -> dict[str, Any]:
        self.calls.append(("receive", params))
        if self.lose_first:
            self.lose_first = False
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1:4566")
        return {"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                              "Attributes": {"SentTimestamp": "1000", "MessageGroupId": "g7"}}]}

    def get_queue_attributes(self, **params: Any) -> dict[str, Any]:
        return {}

    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        # A copy: Queue trims the list it passed once the entries are done.
        self.calls.append(("send", {**params, "Entries": list(params["Entries"])}))
        return {"Successful": [{"Id": e["Id"]} for e in params["Entries"]]}


def test_a_retried_receive_carries_the_same_attempt_id() -> None:
    client = Recorder(lose_first=True)
    queue = Queue(client, FIFO_URL)  # type: ignore[arg-type]
    [message] = queue.receive(0, 30)
    queue.receive(0, 30)
    first, retried, next_receive = (p["ReceiveRequestAttemptId"] for _, p in client.calls)
    assert first == retried != next_receive
    assert message.group_id == "g7"
    assert "MessageGroupId" in client.calls[0][1]["MessageSystemAttributeNames"]


def test_a_standard_queue_sends_no_fifo_parameters() -> None:
    client = Recorder()
    queue = Queue(client, FIFO_URL[:-5])  # type: ignore[arg-type]
    [message] = queue.receive(0, 30)
    assert message.group_id is None
    assert "ReceiveRequestAttemptId" not in client.calls[0][1]
    queue.send_messages(["a"])
    assert set(client.calls[1][1]["Entries"][0]) == {"Id", "MessageBody"}


def test_the_dlq_hand_off_keeps_the_group_and_derives_the_deduplication_id() -> None:
    client = Recorder()
    dlq = Queue(client, FIFO_URL.replace("logins", "logins-dlq"), "dlq")  # type: ignore[arg-type]
    grouped = Received("m1", "r1", "{}", 1000, group_id="g7")
    ungrouped = Received("m2", "r2", "[]", 1000)
    assert dlq.send_rejections([(grouped, "not_object"), (ungrouped, "not_object")]) == []
    dlq.send_rejections([(grouped, "not_object")])
    first, second = (p["Entries"] for _, p in client.calls)
    assert [e["MessageGroupId"] for e in first] == ["g7", DEFAULT_GROUP]
    assert first[0]["MessageDeduplicationId"] == second[0]["MessageDeduplicationId"]
    assert first[0]["MessageDeduplicationId"] != first[1]["MessageDeduplicationId"]
    assert all(valid_id(e["MessageDeduplicationId"]) for e in first)


def test_a_fifo_send_without_deduplication_ids_is_a_bug() -> None:
    with pytest.raises(ValueError, match="deduplication"):
        Queue(Recorder(), FIFO_URL).send_messages(["a"])  # type: ignore[arg-type]


def test_fifo_names() -> None:
    assert is_fifo(FIFO_URL) and is_fifo(FIFO_URL + "/")
    assert not is_fifo("http://h/1/fifo") and not is_fifo("http://h/1/q.fifo-dlq")
    # The default DLQ of a FIFO queue is FIFO too (its name must end in .fifo).
    assert dlq_url_for(Recorder(), FIFO_URL, None).endswith("/logins-dlq.fifo")  # type: ignore[arg-type]
    assert dlq_url_for(Recorder(), FIFO_URL[:-5], None).endswith("/logins-dlq")  # type: ignore[arg-type]


def test_deduplication_ids_fit_any_ledger_id() -> None:
    long_id = "redrive:" * 40 + "\udc80"
    assert valid_id(dedup_id("dlq", long_id))
    assert dedup_id("dlq", "m1") != dedup_id("redrive", "m1")


@pytest.mark.parametrize(("body", "group"), [
    ('{"user_id": "u-1"}', "u-1"),
    ('{"user_id": 42}', "42"),
    ('{"user_id": null}', DEFAULT_GROUP),
    ('{"device_id": "x"}', DEFAULT_GROUP),
    ("[1]", DEFAULT_GROUP),
    ("not json", DEFAULT_GROUP),
])
def test_load_groups(body: str, group: str) -> None:
    assert group_of_event(body, "user_id") == group


@pytest.mark.parametrize("value", ["with space", "é", "x" * 129, ""])
def test_a_group_sqs_would_refuse_is_hashed_the_same_each_time(value: str) -> None:
    body = f'{{"user_id": "{value}"}}'
    group = group_of_event(body, "user_id")
    assert valid_id(group) and group == group_of_event(body, "user_id")
