"""A busy settle's DeleteMessageBatch calls kept in flight together (Queue.delete on the lean
client, a batch of more than DELETES_IN_FLIGHT groups): every group's first attempt,
DELETES_IN_FLIGHT at a time, against a local fake server; what an attempt leaves undone is
retried group by group as before, and nothing is counted deleted unless its answer says so."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import tenacity
from botocore.credentials import Credentials

from login_etl import retrying
from login_etl.messages import Received
from login_etl.queue import Queue, QueueGone
from login_etl.sqs.batches import DELETES_IN_FLIGHT
from login_etl.sqs.client import SqsClient
from tests.unit.fakeserver import read_request, serve_forever

GONE = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\n"
        b"Content-Length: %d\r\n\r\n")
GONE_BODY = json.dumps({"__type": "com.amazonaws.sqs#QueueDoesNotExist",
                        "message": "The specified queue does not exist."}).encode()


class Deletes:
    """Answers each DeleteMessageBatch by the first entry's receipt handle: 'down' drops the
    connection unanswered, 'gone' answers QueueDoesNotExist, 'partial' leaves the last entry
    out of Successful, 'shape' answers a wrong shape; anything else deletes every entry.
    Each way is taken once (the retry then succeeds), except 'gone'."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[list[str]] = []
        self.most_at_once = 0
        self.open = 0
        self.taken: set[str] = set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = serve_forever(self.listener, self.serve)

    def serve(self, conn: socket.socket) -> None:
        # a client that drops its connections (the interrupted test) ends the serving quietly
        with contextlib.suppress(OSError):
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn:
            while (request := read_request(reader)) is not None:
                entries = json.loads(request.split(b"\r\n\r\n", 1)[1])["Entries"]
                handles = [e["ReceiptHandle"] for e in entries]
                way = handles[0].split("-")[0]
                with self.lock:
                    self.calls.append(handles)
                    first = way not in self.taken
                    self.taken.add(way)
                if way == "gone" or (first and way == "down"):
                    if way == "down":
                        return
                    conn.sendall(GONE % len(GONE_BODY) + GONE_BODY)
                    continue
                ids = [e["Id"] for e in entries]
                if first and way == "partial":
                    ids = ids[:-1]
                answer: Any = ({"Successful": "0"} if first and way == "shape"
                               else {"Successful": [{"Id": i} for i in ids], "Failed": []})
                body = json.dumps(answer).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.fixture
def server() -> Iterator[Deletes]:
    fake = Deletes()
    yield fake
    fake.listener.close()


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrying, "wait_random_exponential", lambda **_: tenacity.wait_none())


def messages(n: int, way: str = "ok", start: int = 0) -> list[Received]:
    return [Received(f"m{i}", f"{way}-{i}", "{}", 1) for i in range(start, start + n)]


def queue(server: Deletes) -> Queue:
    client = SqsClient(server.url, "us-east-1", Credentials("test", "test"),
                       pool=DELETES_IN_FLIGHT + 1)
    return Queue(client, f"{server.url}/000000000000/q")


def test_groups_go_out_together_and_all_are_deleted(server: Deletes) -> None:
    batch = messages(10 * DELETES_IN_FLIGHT + 35)
    assert queue(server).delete(batch) == []
    deleted = sorted(h for call in server.calls for h in call)
    assert deleted == sorted(m.receipt_handle for m in batch)
    # one call per group of ten, each on its own kept connection: no more connections
    # than calls in flight at once
    assert len(server.calls) == DELETES_IN_FLIGHT + 4
    assert server.accepted[0] == DELETES_IN_FLIGHT


@pytest.mark.parametrize("way", ["down", "partial", "shape"])
def test_a_group_left_undone_is_retried_alone(server: Deletes, way: str) -> None:
    batch = messages(60) + messages(10, way, start=60) + messages(45, start=70)
    assert queue(server).delete(batch) == []
    retried = [call for call in server.calls if call[0].startswith(way)]
    assert len(retried) == 2
    if way == "partial":
        # only the entry the answer left out is sent again
        assert retried[1] == [f"{way}-69"]
    else:
        assert retried[1] == retried[0]
    assert len(server.calls) == 12 + 1


def test_a_queue_gone_raises_naming_what_the_other_calls_deleted(server: Deletes) -> None:
    batch = messages(20) + messages(10, "gone", start=20) + messages(85, start=30)
    with pytest.raises(QueueGone) as raised:
        queue(server).delete(batch)
    # the first chunk of ten calls: every group but the gone one was deleted
    assert sorted(raised.value.delivered) == sorted(
        str(i) for i in [*range(20), *range(30, 100)])


def test_a_batch_of_at_most_ten_groups_deletes_call_by_call(server: Deletes) -> None:
    assert queue(server).delete(messages(10 * DELETES_IN_FLIGHT)) == []
    assert len(server.calls) == DELETES_IN_FLIGHT
    # one after another, on one kept connection
    assert server.accepted[0] == 1


def test_an_unreachable_queue_costs_one_connect_per_chunk_not_per_group(
        monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    connects: list[object] = []
    real = socket.create_connection

    def counted(*args: Any, **kwargs: Any) -> socket.socket:
        connects.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counted)
    client = SqsClient(f"http://127.0.0.1:{port}", "us-east-1", Credentials("test", "test"))
    batch = messages(150)
    failed = Queue(client, f"http://127.0.0.1:{port}/000000000000/q").delete(batch)
    assert sorted(failed) == sorted(m.message_id for m in batch)
    # 15 groups: the first chunk stops at its first refused connection and hands every group
    # to the retries, which give up after two groups (the outage rule)
    assert 1 < len(connects) < 15


def test_interrupted_reading_leaves_no_connection_open(server: Deletes,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    client = SqsClient(server.url, "us-east-1", Credentials("test", "test"),
                       pool=DELETES_IN_FLIGHT + 1)
    opened: list[Any] = []
    send, read = client._send, client._read

    def recorded(request: bytes) -> Any:
        opened.append(send(request))
        return opened[-1]

    def interrupted(conn: Any) -> Any:
        if conn is opened[1]:
            conn.close()
            raise KeyboardInterrupt
        return read(conn)

    monkeypatch.setattr(client, "_send", recorded)
    monkeypatch.setattr(client, "_read", interrupted)
    calls = [{"QueueUrl": "q", "Entries": [{"Id": "0", "ReceiptHandle": f"ok-{i}"}]}
             for i in range(4)]
    with pytest.raises(KeyboardInterrupt):
        client.delete_message_batches(calls)
    assert len(opened) == 4
    assert [c.sock.fileno() for c in opened[1:]] == [-1, -1, -1]


class UnreadableOnce:
    """A client whose first in-flight answer is one botocore's parser trips on."""

    def __init__(self) -> None:
        self.single: list[list[str]] = []
        self.chunks = 0

    def delete_message_batches(self, calls: list[dict[str, Any]]) -> list[tuple[Any, float]]:
        outcomes: list[tuple[Any, float]] = [
            ({"Successful": [{"Id": e["Id"]} for e in c["Entries"]]}, 0.0) for c in calls]
        if not self.chunks:
            outcomes[0] = (AttributeError("'str' object has no attribute 'get'"), 0.0)
        self.chunks += 1
        return outcomes

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.single.append([e["Id"] for e in Entries])
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def test_an_unreadable_answer_in_flight_is_retried_as_on_a_single_call() -> None:
    client = UnreadableOnce()
    assert Queue(client, "q").delete(messages(120)) == []  # type: ignore[arg-type]
    assert client.single == [[str(i) for i in range(10)]] and client.chunks == 2
