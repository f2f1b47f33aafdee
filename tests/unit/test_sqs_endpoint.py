"""The lean client's endpoint and time bounds: a path in the endpoint is where it posts (and
what it signs, as botocore does), and one call ends by its deadline however slowly the
server answers (against local sockets)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ReadTimeoutError

from login_etl.settings import Settings
from login_etl.sqs import errors
from login_etl.sqs.choose import lean_client
from login_etl.sqs.client import SqsClient
from login_etl.sqs.sigv4 import Signer, host_header
from tests.unit.fakeserver import read_request, serve_forever
from tests.unit.test_sqs_client import NOW, botocore_headers

ANSWER = json.dumps({"Messages": []}).encode()
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
        b"Content-Length: %d\r\n\r\n" % len(ANSWER))


class Recorder:
    """Answers every request at once (or a byte every `trickle` seconds), keeping them."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.trickle = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        serve_forever(self.listener, self.serve)

    def serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn:
            while (request := read_request(reader)) is not None:
                self.requests.append(request)
                if not self.trickle:
                    conn.sendall(HEAD + ANSWER)
                    continue
                try:
                    for byte in HEAD + ANSWER:
                        conn.sendall(bytes([byte]))
                        time.sleep(self.trickle)
                except OSError:
                    return


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.listener.close()


@pytest.mark.parametrize("path", ["/prefix", "/sqs/v1/", "/a-b_c~d.e"])
def test_the_endpoint_path_is_where_both_clients_post(recorder: Recorder, path: str) -> None:
    url = f"http://127.0.0.1:{recorder.port}{path}"
    SqsClient(url, "us-east-1", Credentials("k", "s")).receive_message(QueueUrl="q")
    boto3.session.Session().client(
        "sqs", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
        aws_secret_access_key="s",
        config=Config(retries={"total_max_attempts": 1})).receive_message(QueueUrl="q")
    lean, boto = (r.split(b"\r\n", 1)[0] for r in recorder.requests)
    assert lean == boto == f"POST {path} HTTP/1.1".encode()


@pytest.mark.parametrize("path", ["/prefix", "/sqs/v1/"])
def test_a_path_is_signed_as_botocore_signs_it(monkeypatch: pytest.MonkeyPatch,
                                               path: str) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    url = "https://gateway.example.com" + path
    body = b'{"QueueUrl":"q"}'
    expected = botocore_headers(monkeypatch, creds, url, "AmazonSQS.ReceiveMessage", body)
    ours = Signer(creds, "eu-west-1", host_header(url), path=path).headers(
        "AmazonSQS.ReceiveMessage", body, NOW)
    assert ours["Authorization"] == expected["Authorization"]


@pytest.mark.parametrize(("endpoint", "lean"), [
    ("http://127.0.0.1:4566/prefix", True), ("http://127.0.0.1:4566/", True),
    ("http://127.0.0.1:4566/a%20b", False), ("http://127.0.0.1:4566/a/../b", False),
    ("http://127.0.0.1:4566//b", False), ("http://127.0.0.1:4566/p?x=1", False),
])
def test_paths_the_lean_client_does_not_sign_go_to_boto3(monkeypatch: pytest.MonkeyPatch,
                                                        endpoint: str, lean: bool) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    settings = Settings(queue_url="http://127.0.0.1:4566/000000000000/q",
                        aws_endpoint_url=endpoint)
    assert (lean_client(settings, 4) is not None) == lean


def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(recorder: Recorder) -> None:
    recorder.trickle = 0.2
    client: Any = SqsClient(f"http://127.0.0.1:{recorder.port}", "us-east-1",
                            Credentials("k", "s"), connect_timeout=0.5, read_timeout=1)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError) as caught:
        client.receive_message(QueueUrl="q")
    took = time.monotonic() - started
    # the deadline is 1.5 s; the trickle would take 20 s
    assert took < 3.0, took
    assert errors.retryable(caught.value)
    # the next call gets a fresh connection and its own deadline
    recorder.trickle = 0
    assert client.receive_message(QueueUrl="q")["Messages"] == []
