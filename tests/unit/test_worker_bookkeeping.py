"""The worker's own bookkeeping with a fake queue and a fake pipeline (no I/O): when
--until-empty may end, how held messages are keyed, what the heartbeat retries, what the
totals keep, and chunked deletes that keep going past one failed chunk."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from login_etl import retrying
from login_etl.inflight import Totals
from login_etl.masking import Masker
from login_etl.messages import Received
from login_etl.pipeline import Item, Outcome
from login_etl.queue import Depth, Queue, QueueError
from login_etl.settings import MaskingKey
from login_etl.worker import GIL_SWITCH_SECONDS
from tests.unit.fakes import SlowSource, held, hold, received, worker


def test_until_empty_waits_for_a_receive_still_in_progress() -> None:
    """The other pollers see an empty queue and SQS shows nothing visible while one receive
    is still on its way back: that is not empty. (Before: the run ended and released the
    three messages unstored.)"""
    source = SlowSource([received(i) for i in range(3)], slow_seconds=0.6)
    w, settled = worker(source, until_empty=True)
    totals = w.run(threading.Event())
    assert sorted(m.message_id for batch in settled for m, _ in batch) == ["id0", "id1", "id2"]
    assert totals.stored == 3 and source.released == []
    assert len(w.inflight) == 0


def test_totals_are_counts_not_growing_lists() -> None:
    """A daemon runs for months: the totals must keep numbers, not an entry per message."""
    totals = Totals()
    for _ in range(2):
        totals.add(Outcome(stored=4, duplicates=1, rejected=[("a", "r"), ("b", "r"), ("c", "s")],
                           not_deleted=["d"],
                           left_in_queue=[("e", "dlq_refused"), ("f", "dlq_refused")]))
    assert vars(totals) == {"stored": 8, "duplicates": 2, "rejected": 6, "not_deleted": 2,
                            "left_in_queue": 4}
    source = SlowSource([received(i) for i in range(3)], slow_seconds=0)
    w, _ = worker(source, until_empty=True)
    assert isinstance(w.run(threading.Event()), Totals)


def test_the_gil_switch_interval_is_the_workers_only_while_it_runs() -> None:
    """The short switch interval is process-wide: set while the worker runs, the one before
    given back when it stops (a test or an embedding program keeps its own)."""
    before = sys.getswitchinterval()
    seen: list[float] = []
    source = SlowSource([received(i) for i in range(3)], slow_seconds=0)
    w, _ = worker(source, until_empty=True)
    real_receive = source.receive

    def receive(wait: int, visibility: int) -> list[Received]:
        seen.append(sys.getswitchinterval())
        return real_receive(wait, visibility)

    source.receive = receive  # type: ignore[method-assign]
    w.run(threading.Event())
    assert seen and all(abs(s - GIL_SWITCH_SECONDS) < 1e-6 for s in seen)
    assert abs(before - GIL_SWITCH_SECONDS) > 1e-6
    assert sys.getswitchinterval() == before


def test_two_live_copies_of_one_message_are_held_apart() -> None:
    """After a visibility lapse the same id is received again under a new handle: settling
    the old copy must not drop the new one from the heartbeat and the shutdown release."""
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source)
    old, new = received(1, "rh-old"), received(1, "rh-new")
    hold(w, old, new)
    w.inflight.settled([old], Outcome())
    assert list(held(w)) == ["rh-new"]
    w.stop()
    assert source.released == ["rh-new"]


def test_heartbeat_retries_an_extension_that_failed_at_the_next_beat() -> None:
    """Visibility 6 s: beats every 1 s, a message is due 2 s after its last extension. A
    failed extension is due again at the next beat (1 s), not 2 s later as if it had worked."""
    source = SlowSource([], slow_seconds=0)
    source.fail_extend = 1
    w, _ = worker(source, visibility=6)
    hold(w, received(1), age=10)
    w.heartbeat.start()
    deadline = time.monotonic() + 6
    while len(source.extended) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    w.shutdown.begin(5.0)
    assert source.extended[:2] == [["rh1"], ["rh1"]]
    assert source.extended_at[1] - source.extended_at[0] < 1.6


class ScriptedClient:
    """delete_message_batch answers from a script: 'ok' or an exception per call."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.calls: list[list[str]] = []

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        return self.send_message_batch(QueueUrl, Entries)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([e["Id"] for e in Entries])
        if self.script.pop(0) == "down":
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


@pytest.fixture
def no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """One attempt per call: the policies' waits are not what is tested here."""
    monkeypatch.setattr(retrying, "call", lambda _policy, fn, *a, **k: fn(*a, **k))


def test_a_failed_delete_chunk_does_not_skip_the_next(no_retry_waits: None) -> None:
    client = ScriptedClient(["ok", "down", "ok"])
    queue = Queue(client, "q")
    messages = [received(i) for i in range(25)]
    failed = queue.delete(messages)
    assert failed == [f"id{i}" for i in range(10, 20)]
    assert len(client.calls) == 3


def test_after_two_failed_chunks_the_rest_fail_without_a_call(no_retry_waits: None) -> None:
    client = ScriptedClient(["down", "down", "ok", "ok"])
    queue = Queue(client, "q")
    failed = queue.delete([received(i) for i in range(40)])
    assert len(failed) == 40 and len(client.calls) == 2


def test_a_hand_off_that_fails_part_way_says_what_reached_the_dlq(no_retry_waits: None) -> None:
    """15 rejects: the first 10 are in the DLQ when the second call fails. The error names
    them, so the retry of the batch hands off only the other 5."""
    client = ScriptedClient(["ok", "down"])
    dlq = Queue(client, "dlq", label="dlq")
    rejects = [(received(i), "invalid_json") for i in range(15)]
    with pytest.raises(QueueError) as caught:
        dlq.send_rejections(rejects)
    assert caught.value.delivered == [f"id{i}" for i in range(10)]


def test_shutdown_gives_back_what_waits_in_the_inbox() -> None:
    """Parsed but not yet batched: still held by this worker, so released at shutdown."""
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source)
    waiting = [received(1), received(2)]
    hold(w, *waiting)
    w.inbox.put([(m, None) for m in waiting])
    w.stop()
    assert sorted(source.released) == ["rh1", "rh2"]


def test_a_bug_in_settling_releases_the_batch_and_frees_its_slot() -> None:
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source)

    def broken(batch: list[Item]) -> Outcome:
        raise KeyError("a bug")

    w.pipeline.settle = broken  # type: ignore[method-assign]
    message = received(1)
    hold(w, message)
    w.handoff.submit([(message, None)], lambda: None)  # type: ignore[list-item]
    w.settlers[0].start()
    deadline = time.monotonic() + 5
    while (w.handoff.busy or not source.released) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert source.released == ["rh1"] and len(w.inflight) == 0 and w.handoff.busy == 0
    slots = w.settings.pollers
    assert all(w.handoff._slots.acquire(blocking=False) for _ in range(slots)), \
        "the batch slot must be given back"
    assert w.settlers[0].alive(), "the settler carries on"


def test_pollers_find_the_database_back_when_no_settler_is_busy() -> None:
    """A settler cleared db_up and then gave up its batch: nobody would set it again."""
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source)
    w.database.up.clear()
    w.health.db_ok = False
    w.pollers[0].start()
    assert w.database.up.wait(5), "a poller must probe the database itself"
    w.shutdown.begin(5.0)
    w.pollers[0].join(time.monotonic() + 5)
    assert w.health.db_ok


class AttributesClient:
    def __init__(self, attributes: dict[str, str] | None) -> None:
        self.attributes = attributes

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {} if self.attributes is None else {"Attributes": self.attributes}


@pytest.mark.parametrize(("attributes", "configured", "expected"), [
    (None, "http://h:1/1/mine", "http://h:1/1/mine"),  # configured wins
    ({"RedrivePolicy": '{"deadLetterTargetArn": "arn:aws:sqs:eu-west-1:123:the-dlq"}'}, None,
     "http://h:1/123/the-dlq"),  # the policy's target, on the source queue's host
    (None, None, "http://h:1/000/q-dlq"),  # no policy: SQS omits "Attributes" altogether
    ({"RedrivePolicy": '{"deadLetterTargetArn": "not-an-arn"}'}, None, "http://h:1/000/q-dlq"),
])
def test_dlq_url_for(attributes: dict[str, str] | None, configured: str | None,
                     expected: str) -> None:
    from login_etl.invocation import dlq_url_for

    assert dlq_url_for(AttributesClient(attributes), "http://h:1/000/q", configured) == expected


def test_a_release_past_the_shutdown_bound_stops_sending(no_retry_waits: None) -> None:
    """Thousands held under throttling must not hold the process past its bound: chunks not
    started by the deadline count as failed (they return after their visibility timeout)."""
    client = ScriptedClient(["ok"] * 10)

    def visibility(QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if len(client.calls) == 1:
            time.sleep(0.2)  # the second chunk starts after the deadline
        return client.send_message_batch(QueueUrl, Entries)

    client.change_message_visibility_batch = visibility  # type: ignore[attr-defined]
    queue = Queue(client, "q")
    failed = queue.change_visibility([received(i) for i in range(30)], 0,
                                     deadline=time.monotonic() + 0.1)
    assert len(client.calls) == 2 and len(failed) == 10


def test_a_receive_that_comes_and_goes_during_the_depth_call_is_not_empty() -> None:
    """UntilEmpty.drained asks SQS for the depth after checking what it holds; a poller that receives
    (and even settles) meanwhile hid messages SQS no longer counts as visible."""
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source, until_empty=True)

    def pollers_come_back_empty() -> None:
        for _ in range(w.settings.pollers):
            assert w.inflight.receive(0, 3) == []

    pollers_come_back_empty()
    source.messages = [received(1)]
    depth = source.depth

    def depth_while_a_poller_receives() -> Depth:
        got = w.inflight.receive(0, 3)
        # already settled by the time depth() answers
        w.inflight.settled(got, Outcome())
        return depth()

    source.depth = depth_while_a_poller_receives  # type: ignore[method-assign]
    assert w.until_empty is not None
    assert w.until_empty.drained() is False
    source.depth = depth  # type: ignore[method-assign]
    pollers_come_back_empty()
    assert w.until_empty.drained() is True


def test_heartbeat_tells_two_copies_of_one_id_apart() -> None:
    """Failures are matched by receipt handle: the old copy's stale handle failing must not
    leave the live copy looking unextended (and the other way round)."""
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source, visibility=6)
    old, new = received(1, "rh-old"), received(1, "rh-new")
    hold(w, old, new, age=10)
    extend = source.change_visibility

    def stale_old_handle(messages: Sequence[Received], timeout: int,
                         deadline: float | None = None) -> list[str]:
        extend(messages, timeout)
        return ["rh-old"]

    source.change_visibility = stale_old_handle  # type: ignore[method-assign]
    w.heartbeat.start()
    deadline = time.monotonic() + 5
    while not source.extended and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    w.shutdown.begin(5.0)
    assert time.monotonic() - held(w)["rh-new"].extended_at < 5
    assert time.monotonic() - held(w)["rh-old"].extended_at > 9


class RedriveDlq:
    """Two messages; their delete after the copy fails for one."""

    def __init__(self) -> None:
        self.sealer = Masker([MaskingKey("k", b"k" * 32)])
        self.messages = [received(0), received(1)]

    def depth(self) -> Depth:
        return Depth(len(self.messages), 0, 0)

    def receive(self, wait_seconds: int, visibility_timeout: int,
                max_messages: int = 10) -> list[Received]:
        taken, self.messages = self.messages, []
        return taken

    def delete(self, messages: Sequence[Received]) -> list[str]:
        return [messages[0].message_id]


class RedriveSource:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_messages(self, bodies: Sequence[str], attributes: Any = None,
                      **fifo: Any) -> list[int]:
        self.sent += bodies
        return []


def test_redrive_fails_loudly_when_the_dlq_keeps_what_was_copied() -> None:
    """Copies went to the source, but one original is still in the DLQ: "moved 2" would be
    wrong (it will be redriven again; the ledger stores it once), so the command fails."""
    from login_etl.redrive import redrive

    source = RedriveSource()
    with pytest.raises(QueueError, match="could not be deleted"):
        redrive(RedriveDlq(), source)  # type: ignore[arg-type]
    assert len(source.sent) == 2
