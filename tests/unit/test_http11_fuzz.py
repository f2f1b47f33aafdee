"""The lean client's HTTP/1.1 reader against a fake SQS that answers with mutated framing.

A real socket server on 127.0.0.1 answers each request from a script hypothesis draws:
Content-Length, chunked or close-delimited bodies, lengths off by some bytes or not digits at
all, chunk sizes int() would take but HTTP does not, a second response or garbage after the
first, the connection closed part way, bytes sent slowly, interim 1xx answers, header lines
folded or with a space before the colon, both framings at once, garbage for a response.

Every call must either return exactly the body the server meant, or raise an error
sqs.errors.retryable retries; answers HTTP allows must succeed. The server notes each
connection it left bytes on that the answer did not include; a request arriving on such a
connection is a reused dirty connection, which fails the test.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from login_etl.sqs import errors
from login_etl.sqs.client import SqsClient
from tests.unit.fakeserver import read_request, serve_forever

MAX_EXAMPLES = 400
# Mutations after which HTTP allows the call to succeed, and must: the body is framed right.
BENIGN = ("none", "extra_response", "extra_garbage")
BAD_LENGTHS = (b"+{n}", b"{n}_0", b"-{n}", b"0x{n}", b"{n}.0", b"1" + b"0" * 25, b"99999999999",
               b"{n}, {n}", b"\xb2", b"")
BAD_CHUNK_SIZES = (b"+{x}", b"-{x}", b"{x}_0", b"0x{x}", b" {x}", b"g", b"1" + b"0" * 30,
                   b"ffffffffff", b"")


@dataclass
class Answer:
    """What the server does for one request."""

    pieces: list[tuple[bytes, float]]
    close: bool
    # bytes beyond what the client should read were sent and the connection left open
    dirty: bool


@dataclass
class FakeServer:
    port: int = 0
    script: list[Answer] = field(default_factory=list)
    served: list[threading.Event] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def load(self, script: list[Answer]) -> None:
        with self.lock:
            self.script = script
            self.served = [threading.Event() for _ in script]
            self.violations = []
            self.requests = 0

    def serve(self, conn: socket.socket) -> None:
        # the client closing or resetting a connection it refused is its right
        with contextlib.suppress(OSError), conn:
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        dirty = False
        while read_request(reader) is not None:
            with self.lock:
                index = self.requests
                self.requests += 1
                if dirty:
                    self.violations.append(f"request {index} on a connection left dirty")
                if index >= len(self.script):
                    self.violations.append(f"request {index}: more requests than calls")
                    return
                answer, served = self.script[index], self.served[index]
            try:
                for data, pause in answer.pieces:
                    conn.sendall(data)
                    if pause:
                        time.sleep(pause)
                if answer.close:
                    # before the next call starts: a server closing just as a request goes
                    # out is a race no client can win (and retrying covers it)
                    conn.shutdown(socket.SHUT_RDWR)
                    return
            finally:
                served.set()
            dirty = answer.dirty


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    listener = socket.create_server(("127.0.0.1", 0))
    server.port = listener.getsockname()[1]
    serve_forever(listener, server.serve)
    yield server
    listener.close()


# -- drawing answers ---------------------------------------------------------------------------


def chunked(body: bytes, sizes: list[int], upper: bool, ext: bool, trailer: bool) -> bytes:
    out = b""
    at = 0
    for size in sizes:
        if at >= len(body):
            break
        piece = body[at:at + size]
        at += len(piece)
        out += (b"%X" if upper else b"%x") % len(piece) + (b";ext=1" if ext else b"") + b"\r\n"
        out += piece + b"\r\n"
    if at < len(body):
        out += b"%x\r\n" % (len(body) - at) + body[at:] + b"\r\n"
    return out + b"0\r\n" + (b"X-Trailer: t\r\n" if trailer else b"") + b"\r\n"


@st.composite
def answers(draw: Any, index: int) -> tuple[Answer, dict[str, Any], str]:
    """One answer: the script, the payload a successful call must return, its mutation."""
    pad = draw(st.text(max_size=60)) * draw(st.sampled_from([1, 1, 10, 300, 3000]))
    payload = {"n": index, "pad": pad}
    body = json.dumps(payload).encode()
    framing = draw(st.sampled_from(["length", "chunked", "eof"]))
    mutations = ["none", "fold", "space_colon", "both_framings", "status_101", "bad_status",
                 "many_interim", "truncate", "garbage"]
    if framing == "length":
        mutations += ["extra_response", "extra_garbage", "length_short", "length_long",
                      "bad_length"]
    elif framing == "chunked":
        mutations += ["extra_response", "extra_garbage", "bad_chunk_size"]
    # (with "eof" the end of the connection ends the body: nothing can follow it)
    mutation = draw(st.sampled_from(mutations))
    status = b"HTTP/1.1 200 OK\r\n"
    headers = [b"Content-Type: application/x-amz-json-1.0", b"x-amzn-RequestId: r"]
    keep_open = draw(st.booleans())
    if framing == "length":
        length = str(len(body)).encode()
        if mutation == "length_short":
            # at least a byte short, never empty: the JSON is cut, the rest left unread
            length = str(len(body) - draw(st.integers(1, len(body) - 1))).encode()
        elif mutation == "length_long":
            length = str(len(body) + draw(st.integers(1, 10_000))).encode()
        elif mutation == "bad_length":
            length = draw(st.sampled_from(BAD_LENGTHS)).replace(b"{n}", length)
        headers.append(b"Content-Length: " + length)
        framed = body
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 20_000), max_size=8))
        framed = chunked(body, sizes, draw(st.booleans()), draw(st.booleans()),
                         draw(st.booleans()))
        if mutation == "bad_chunk_size":
            first = framed.split(b"\r\n", 1)[0].split(b";")[0]
            bad = draw(st.sampled_from(BAD_CHUNK_SIZES)).replace(b"{x}", first)
            framed = bad + framed[len(first):]
    else:
        headers.append(b"Connection: close")
        framed = body
    if mutation == "fold":
        headers.insert(1, b" x-folded: " + draw(st.sampled_from([b"a", b"b: c"])))
    elif mutation == "space_colon":
        name, _, value = headers[-1].partition(b": ")
        headers[-1] = name + b" : " + value
    elif mutation == "both_framings":
        headers.append(b"Transfer-Encoding: chunked" if framing != "chunked"
                       else b"Content-Length: %d" % len(framed))
    elif mutation == "status_101":
        status = b"HTTP/1.1 101 Switching Protocols\r\n"
    elif mutation == "bad_status":
        status = draw(st.sampled_from([b"HTTP/1.1 2000 OK\r\n", b"HTTP/2 200\r\n",
                                       b"HTTP/1.1 +20 OK\r\n", b"ICY 200 OK\r\n",
                                       b"HTTP/1.1 600 Odd\r\n", b"HTTP/1.1 20x OK\r\n"]))
    interim = draw(st.integers(0, 3)) if mutation != "many_interim" else draw(st.integers(11, 30))
    raw = (b"HTTP/1.1 100 Continue\r\n\r\n" * interim + status + b"\r\n".join(headers)
           + b"\r\n\r\n" + framed)
    dirty = False
    if mutation == "extra_response":
        stale = json.dumps({"stale": True}).encode()
        raw += b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(stale) + stale
        dirty = True
    elif mutation == "extra_garbage":
        raw += draw(st.binary(min_size=1, max_size=200))
        dirty = True
    elif mutation == "truncate":
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    elif mutation == "garbage":
        raw = draw(st.binary(max_size=500))
    if mutation not in ("none", "extra_response", "extra_garbage", "length_long", "truncate",
                        "garbage"):
        # the rest of a refused answer stays unread on the connection
        dirty = True
    # the connection ends where the framing or the mutation leaves the client waiting
    close = (framing == "eof" or mutation in ("length_long", "truncate", "garbage")
             or not keep_open)
    pieces = [(raw, 0.0)]
    if draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=4)))
        bounds = [0, *cuts, len(raw)]
        pieces = [(raw[a:b], draw(st.sampled_from([0.0, 0.0005, 0.002])))
                  for a, b in itertools.pairwise(bounds) if b > a]
    return Answer(pieces, close, dirty and not close), payload, mutation


@st.composite
def scripts(draw: Any) -> list[tuple[Answer, dict[str, Any], str]]:
    calls = draw(st.integers(1, 4))
    return [draw(answers(i)) for i in range(calls)]


def test_every_answer_is_the_right_body_or_a_retryable_error(
        fake: FakeServer, record_property: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ran = {"examples": 0, "calls": 0, "ok": 0, "refused": 0}
    seen: dict[str, int] = {}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(scripts())
    def run(script: list[tuple[Answer, dict[str, Any], str]]) -> None:
        ran["examples"] += 1
        fake.load([answer for answer, _, _ in script])
        client = SqsClient(f"http://127.0.0.1:{fake.port}", "us-east-1",
                           Credentials("test", "test"), pool=2, read_timeout=3)
        try:
            for index, (_, payload, mutation) in enumerate(script):
                seen[mutation] = seen.get(mutation, 0) + 1
                ran["calls"] += 1
                try:
                    response = client.get_queue_attributes(QueueUrl="q")
                except Exception as exc:
                    assert errors.retryable(exc), f"{mutation}: not retryable: {exc!r}"
                    assert mutation not in BENIGN, f"{mutation}: a valid answer refused: {exc!r}"
                    ran["refused"] += 1
                else:
                    response.pop("ResponseMetadata")
                    assert response == payload, f"{mutation}: the wrong body"
                    ran["ok"] += 1
                # every byte of this answer is on its way before the next call starts
                assert fake.served[index].wait(5), "the server did not answer"
            assert fake.violations == []
        finally:
            client.close()

    run()
    summary = (f"http11 fuzz: {ran['examples']} examples, {ran['calls']} calls "
               f"({ran['ok']} answered, {ran['refused']} refused as retryable); mutations "
               + ", ".join(f"{name} {count}" for name, count in sorted(seen.items())))
    record_property("fuzz_examples", ran["examples"])
    with capsys.disabled():
        print(f"\n  {summary}")
    assert ran["examples"] >= MAX_EXAMPLES // 2
