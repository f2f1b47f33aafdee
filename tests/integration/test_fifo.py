"""FIFO queues on real LocalStack (and moto): the hand-off to a FIFO DLQ keeps the message's
group, `dlq redrive` and `load` send with groups and deduplication ids, and per group a later
event never commits before an earlier one."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import both_clients
from tests.integration.stack import (
    ENDPOINT,
    Stack,
    _local,
    fresh_stack,
)

GROUPS = 20
PER_GROUP = 25
# The malformed event: group 3, place 5 (missing user_id).
HOLE = (3, 5)
# Records an event whose predecessor in its group (app_version one lower; the malformed event
# skipped) was not committed when the event's row was written: each row sees the rows committed
# before its statement and its own transaction's, so an event committed together with or after
# its predecessor never lands here.
ORDER_CHECK = f"""
CREATE TABLE order_breaks (user_id text, app_version integer);
CREATE FUNCTION check_order() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  previous integer := NEW.app_version - 1;
BEGIN
  IF NEW.user_id = 'g{HOLE[0]}' AND previous = 1000000 + {HOLE[1]} THEN
    previous := previous - 1;
  END IF;
  IF previous >= 1000000 AND NOT EXISTS (SELECT 1 FROM user_logins
      WHERE user_id = NEW.user_id AND app_version = previous) THEN
    INSERT INTO order_breaks VALUES (NEW.user_id, NEW.app_version);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER check_order AFTER INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION check_order();
"""


def create_fifo_queues(sqs: Any, endpoint: str) -> tuple[str, str]:
    """A FIFO source whose RedrivePolicy names a FIFO DLQ (AWS allows no other)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    fifo = {"FifoQueue": "true"}
    dlq = sqs.create_queue(QueueName=f"{name}-dlq.fifo", Attributes=fifo)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = sqs.create_queue(QueueName=f"{name}.fifo", Attributes={
        **fifo, "VisibilityTimeout": "30",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "10"}),
    })["QueueUrl"]
    return _local(source, endpoint), _local(dlq, endpoint)


@pytest.fixture
def fifo_stack(sqs: Any, postgres: str, sqs_client_kind: str | None) -> Iterator[Stack]:
    yield from fresh_stack(sqs, create_fifo_queues(sqs, ENDPOINT), sqs_client_kind)


@pytest.fixture
def moto_fifo_stack(moto_sqs: Any, postgres: str, sqs_client_kind: str | None) -> Iterator[Stack]:
    yield from fresh_stack(
        moto_sqs, create_fifo_queues(moto_sqs, moto_sqs.meta.endpoint_url), sqs_client_kind)


def grouped_events() -> list[tuple[str, str]]:
    """(group, body): PER_GROUP events per group, interleaved, app_version 1.0.<place>."""
    out = []
    for place in range(PER_GROUP):
        for group in range(GROUPS):
            event: dict[str, Any] = {
                "user_id": f"g{group}", "device_type": "ios", "ip": f"10.0.{group}.{place}",
                "device_id": f"d-{group}-{place}", "locale": "DE",
                "app_version": f"1.0.{place}"}
            if (group, place) == HOLE:
                del event["user_id"]
            out.append((f"g{group}", json.dumps(event)))
    return out


def send_in_order(stack: Stack, events: list[tuple[str, str]]) -> None:
    for start in range(0, len(events), 10):
        entries = [{"Id": str(i), "MessageBody": body, "MessageGroupId": group,
                    "MessageDeduplicationId": uuid.uuid4().hex}
                   for i, (group, body) in enumerate(events[start:start + 10])]
        response = stack.sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=entries)
        assert not response.get("Failed"), response.get("Failed")


def fifo_run(stack: Stack, pollers: int = 4) -> dict[str, Any]:
    """500 events in 20 groups, one malformed, through four pollers and small batches."""
    stack.cli("init-db")
    with stack.connect() as conn:
        conn.execute(ORDER_CHECK)
    send_in_order(stack, grouped_events())
    env = stack.env(LOGIN_ETL_POLLERS=str(pollers), LOGIN_ETL_BATCH_SIZE="15")
    result = stack.cli("run", "--until-empty", env=env, timeout=180)
    assert "rejects_left_in_source" not in result.stderr

    assert stack.count_rows() == GROUPS * PER_GROUP - 1
    assert stack.duplicate_rows() == 0
    # Per group, no event committed before the one sent ahead of it.
    assert stack.query("SELECT * FROM order_breaks") == []
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    dead = stack.receive_all(dlq=True)
    assert len(dead) == 1
    message = dead[0]
    assert message["MessageAttributes"]["reason"]["StringValue"] == "missing_field:user_id"
    assert message["Attributes"]["MessageGroupId"] == f"g{HOLE[0]}"
    assert "user_id" not in json.loads(message["Body"])
    return message


@both_clients
def test_fifo_source_with_fifo_dlq(fifo_stack: Stack) -> None:
    """Acceptance: 499 stored once, in order per group; the malformed one in the FIFO DLQ with
    its reason and group; nothing left in the source; `dlq redrive` moves it back."""
    dead = fifo_run(fifo_stack)
    # receive_all hid the DLQ's message for 60 s: visible again, for the redrive.
    fifo_stack.sqs.change_message_visibility(QueueUrl=fifo_stack.dlq_url,
                                             ReceiptHandle=dead["ReceiptHandle"],
                                             VisibilityTimeout=0)
    result = fifo_stack.cli("dlq", "redrive")
    assert "moved 1 messages" in result.stdout
    [moved] = fifo_stack.receive_all(dlq=False)
    assert moved["Body"] == dead["Body"]
    assert moved["Attributes"]["MessageGroupId"] == f"g{HOLE[0]}"
    assert "login_etl_redrive_of" in moved["MessageAttributes"]
    assert fifo_stack.depth(dlq=True) == {"visible": 0, "in_flight": 0, "delayed": 0}


@both_clients
def test_fifo_on_moto(moto_fifo_stack: Stack) -> None:
    """One poller: moto's server checks a group's messages in flight on a copy taken before it
    marks any received, outside a lock, so two receives at once can get one group's messages
    out of order (real SQS and LocalStack do not; four pollers pass on LocalStack above)."""
    fifo_run(moto_fifo_stack, pollers=1)


@both_clients
def test_load_sample_into_fifo(fifo_stack: Stack) -> None:
    """`load --sample` sends 100 into a FIFO queue, each in its user's group; sent twice, they
    are 200 messages (deduplication ids are per event and run, not per content)."""
    result = fifo_stack.cli("load", "--sample")
    assert "sent 100 messages" in result.stdout
    fifo_stack.cli("load", "--sample")
    got = fifo_stack.receive_all(dlq=False, wait=3)
    assert len(got) == 200
    users = {json.loads(m["Body"]).get("user_id") for m in got}
    groups = {m["Attributes"]["MessageGroupId"] for m in got}
    assert groups == {u for u in users if u} | {"login-etl"}


def test_load_group_options(fifo_stack: Stack, stack: Stack) -> None:
    result = fifo_stack.cli("load", "--sample", "--group-id", "all")
    assert "sent 100 messages" in result.stdout
    got = fifo_stack.receive_all(dlq=False, wait=3)
    assert {m["Attributes"]["MessageGroupId"] for m in got} == {"all"}
    refused = stack.cli("load", "--sample", "--group-id", "all", check=False)
    assert refused.returncode == 2 and "standard queue" in refused.stderr
