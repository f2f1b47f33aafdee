"""A reject the DLQ refuses for good stays in the source queue, and is handed off when it returns."""

from __future__ import annotations

import time
from typing import Any

from login_etl.messages import Received, Rejection
from login_etl.pipeline import Pipeline
from login_etl.queue import Queue, QueueError
from login_etl.store import Store
from tests.integration.stack import Stack


class RefusingOnceDlq:
    """A DLQ stand-in: refuses every entry of the first hand-off, accepts them afterwards."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def send_rejections(self, rejected: Any) -> list[str]:
        ids = [m.message_id for m, _ in rejected]
        self.calls.append(ids)
        return ids if len(self.calls) == 1 else []


def test_refused_reject_is_not_deleted_and_is_handed_off_on_redelivery(stack: Stack) -> None:
    stack.send(["not json"])
    source = Queue(stack.sqs, stack.queue_url)
    store = Store(stack.database_url, pool_size=1)
    store.open()
    try:
        store.init_schema()
        dlq = RefusingOnceDlq()
        pipeline = Pipeline(store, source, dlq)  # type: ignore[arg-type]

        def settle_once() -> tuple[Received, Any]:
            [message] = source.receive(wait_seconds=10, visibility_timeout=30)
            return message, pipeline.settle([(message, Rejection(message.message_id,
                                                                 "invalid_json"))])

        message, first = settle_once()
        assert first.left_in_queue == [message.message_id] and not first.rejected
        assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 0
        source.change_visibility([message], 0)  # its redelivery, without waiting it out
        again, second = settle_once()
        assert again.message_id == message.message_id and again.receive_count == 2
        assert [r for _, r in second.rejected] == ["invalid_json"] and not second.not_deleted
        assert len(dlq.calls) == 2, "the refused reject must be handed off again"
        assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    finally:
        store.close()


class FailingPartWayDlq:
    """A DLQ stand-in whose first hand-off fails after the first reject got through."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def send_rejections(self, rejected: Any) -> list[str]:
        ids = [m.message_id for m, _ in rejected]
        self.calls.append(ids)
        if len(self.calls) == 1:
            error = QueueError("send_message_batch on dlq queue failed: EndpointConnectionError")
            error.delivered = ids[:1]
            raise error
        return []


def test_a_hand_off_that_failed_part_way_is_not_repeated_for_what_got_through(
        stack: Stack) -> None:
    stack.send(["not json 1", "not json 2"])
    source = Queue(stack.sqs, stack.queue_url)
    store = Store(stack.database_url, pool_size=1)
    store.open()
    try:
        store.init_schema()
        dlq = FailingPartWayDlq()
        pipeline = Pipeline(store, source, dlq)  # type: ignore[arg-type]
        messages: list[Received] = []
        deadline = time.monotonic() + 30
        while len(messages) < 2 and time.monotonic() < deadline:
            messages += source.receive(wait_seconds=2, visibility_timeout=30)
        items = [(m, Rejection(m.message_id, "invalid_json")) for m in messages]
        try:
            pipeline.settle(items)
            raise AssertionError("the first hand-off must fail the batch")
        except QueueError:
            pass
        assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 0  # rolled back
        outcome = pipeline.settle(items)  # the worker's retry of the same batch
        assert len(outcome.rejected) == 2
        assert dlq.calls == [[m.message_id for m in messages], [messages[1].message_id]]
        assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 2
    finally:
        store.close()
