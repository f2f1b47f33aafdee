"""Hand-offs to the DLQ that do not go through: a reject the DLQ refuses for good stays in the
source queue and is handed off when it returns; a hand-off that fails part way is retried for
what did not reach the DLQ only. Real Store and source queue; the DLQ is a stand-in that
misbehaves on its first hand-off."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from login_etl.messages import Received, Rejection
from login_etl.pipeline import Pipeline
from login_etl.queue import Queue, QueueError
from login_etl.store import Store
from tests.integration.stack import Stack


class FirstHandOffGoesWrongDlq:
    """`refuse`: the first hand-off is refused for good, entry by entry. `break_after`: the first
    hand-off fails (QueueError) after that many entries got through. Later ones succeed."""

    def __init__(self, *, refuse: bool = False, break_after: int | None = None) -> None:
        self.refuse = refuse
        self.break_after = break_after
        self.calls: list[list[str]] = []

    def send_rejections(self, rejected: Any) -> list[str]:
        ids = [m.message_id for m, _ in rejected]
        self.calls.append(ids)
        if len(self.calls) > 1:
            return []
        if self.break_after is not None:
            raise QueueError("send_message_batch on dlq queue failed: EndpointConnectionError",
                             delivered=ids[:self.break_after])
        return ids if self.refuse else []


@pytest.fixture
def store(stack: Stack) -> Iterator[Store]:
    store = Store(stack.database_url, pool_size=1)
    store.open()
    store.init_schema()
    try:
        yield store
    finally:
        store.close()


def test_refused_reject_is_not_deleted_and_is_handed_off_on_redelivery(
        stack: Stack, store: Store) -> None:
    stack.send(["not json"])
    source = Queue(stack.sqs, stack.queue_url)
    dlq = FirstHandOffGoesWrongDlq(refuse=True)
    pipeline = Pipeline(store, source, dlq)  # type: ignore[arg-type]

    def settle_once() -> tuple[Received, Any]:
        [message] = source.receive(wait_seconds=10, visibility_timeout=30)
        return message, pipeline.settle([(message, Rejection(message.message_id,
                                                             "invalid_json"))])

    message, first = settle_once()
    assert first.left_in_queue == [(message.message_id, "dlq_refused")] and not first.rejected
    assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 0
    source.change_visibility([message], 0)  # its redelivery, without waiting it out
    again, second = settle_once()
    assert again.message_id == message.message_id and again.receive_count == 2
    assert [r for _, r in second.rejected] == ["invalid_json"] and not second.not_deleted
    assert len(dlq.calls) == 2, "the refused reject must be handed off again"
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_hand_off_that_failed_part_way_is_not_repeated_for_what_got_through(
        stack: Stack, store: Store) -> None:
    stack.send(["not json 1", "not json 2"])
    source = Queue(stack.sqs, stack.queue_url)
    dlq = FirstHandOffGoesWrongDlq(break_after=1)
    pipeline = Pipeline(store, source, dlq)  # type: ignore[arg-type]
    messages: list[Received] = []
    deadline = time.monotonic() + 30
    while len(messages) < 2 and time.monotonic() < deadline:
        messages += source.receive(wait_seconds=2, visibility_timeout=30)
    items = [(m, Rejection(m.message_id, "invalid_json")) for m in messages]
    with pytest.raises(QueueError):
        pipeline.settle(items)
    assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 0  # rolled back
    outcome = pipeline.settle(items)  # the worker's retry of the same batch
    assert len(outcome.rejected) == 2
    assert dlq.calls == [[m.message_id for m in messages], [messages[1].message_id]]
    assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 2
