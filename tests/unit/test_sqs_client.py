"""The lean SQS client: botocore's signature byte for byte, a correct HTTP/1.x reader, and
failures raised as the botocore exceptions sqs/errors.py classifies (against local sockets)."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import io
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)

from login_etl.settings import ConfigError, Settings
from login_etl.sqs import errors
from login_etl.sqs.choose import lean_client, make_client
from login_etl.sqs.client import SqsClient
from login_etl.sqs.http11 import MAX_BODY_BYTES, MalformedResponse, read_response
from login_etl.sqs.sigv4 import Signer, host_header
from tests.unit.fakeserver import read_request, serve_forever

NOW = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.UTC)


def botocore_headers(monkeypatch: pytest.MonkeyPatch, creds: Credentials, url: str,
                     target: str, body: bytes) -> dict[str, str]:
    monkeypatch.setattr(botocore.auth, "get_current_datetime",
                        lambda *a, **k: NOW.replace(tzinfo=None))
    request = AWSRequest("POST", url, data=body, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.0",
        "x-amzn-query-mode": "true"})
    botocore.auth.SigV4Auth(creds, "sqs", "eu-west-1").add_auth(request)
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}


@pytest.mark.parametrize("url", ["http://127.0.0.1:4566", "https://sqs.eu-west-1.amazonaws.com",
                                 "https://sqs.eu-west-1.amazonaws.com:443", "http://[::1]:9324"])
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////token+/="])
def test_signature_is_botocores(monkeypatch: pytest.MonkeyPatch, url: str, token: str | None) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    body = json.dumps({"QueueUrl": f"{url}/123456789012/q", "Entries": [
        {"Id": "0", "ReceiptHandle": "AQEB+/=ü"}]}).encode()
    expected = botocore_headers(monkeypatch, creds, url + "/", "AmazonSQS.DeleteMessageBatch", body)
    ours = Signer(creds, "eu-west-1", host_header(url)).headers(
        "AmazonSQS.DeleteMessageBatch", body, NOW)
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
        assert ours.get(name) == expected.get(name), name
    # the cached signing key gives the same signature on the next call of the day
    again = Signer(creds, "eu-west-1", host_header(url))
    again.headers("AmazonSQS.DeleteMessageBatch", b"{}", NOW)
    assert again.headers("AmazonSQS.DeleteMessageBatch", body, NOW) == ours


def test_signing_key_follows_rotated_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    class Rotating:
        creds = Credentials("AKID1", "secret-one")

        def get_frozen_credentials(self) -> Any:
            return self.creds.get_frozen_credentials()

    rotating = Rotating()
    signer = Signer(rotating, "eu-west-1", "127.0.0.1:4566")
    signer.headers("AmazonSQS.ReceiveMessage", b"{}", NOW)
    rotating.creds = Credentials("AKID2", "secret-two", "tok")
    expected = botocore_headers(monkeypatch, rotating.creds, "http://127.0.0.1:4566/",
                                "AmazonSQS.ReceiveMessage", b"{}")
    assert signer.headers("AmazonSQS.ReceiveMessage", b"{}", NOW)["Authorization"] == \
        expected["Authorization"]


def read(raw: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    return read_response(io.BufferedReader(io.BytesIO(raw)))  # type: ignore[arg-type]


def test_reads_content_length_and_keeps_the_connection() -> None:
    status, headers, body, close = read(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amzn-RequestId: r1\r\n"
        b"Content-Length: 2\r\n\r\n{}EXTRA")
    assert (status, body, close) == (200, b"{}", False)
    assert headers["x-amzn-requestid"] == "r1" and headers["content-type"].startswith("application/")


def test_reads_chunked_with_extensions_and_trailers() -> None:
    status, _, body, close = read(
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert (status, body, close) == (400, b'{"a":1}', False)


def test_skips_interim_responses_and_honours_close() -> None:
    status, _, body, close = read(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\n"
        b"Content-Length: 1\r\n\r\nx")
    assert (status, body, close) == (200, b"x", True)
    assert read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")[3] is True
    assert read(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")[3] \
        is False
    assert read(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")[2:] == (b"until the end", True)


OK_HEAD = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


MALFORMED = [
    (b"", http.client.RemoteDisconnected),
    (b"SSH-2.0-OpenSSH\r\n", MalformedResponse),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
    (b"HTTP/1.1 200 OK\r\nContent-Len", http.client.IncompleteRead),
    (CHUNKED + b"zz\r\n", MalformedResponse),
    (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", MalformedResponse),
    # read(-1) would take the rest of the connection as the body
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n{}garbage", MalformedResponse),
    # a chunk not closed by CRLF, sizes int() takes but HTTP does not
    (CHUNKED + b"2\r\nabXY0\r\n\r\n", MalformedResponse),
    (CHUNKED + b"-5\r\n", MalformedResponse),
    (CHUNKED + b"1_0\r\n", MalformedResponse),
    (CHUNKED + b"+2\r\nab\r\n0\r\n\r\n", MalformedResponse),
    (CHUNKED + b" 2\r\nab\r\n0\r\n\r\n", MalformedResponse),
    # lengths int() takes but HTTP does not
    (OK_HEAD + b"Content-Length: 1_0\r\n\r\n0123456789", MalformedResponse),
    (OK_HEAD + b"Content-Length: +2\r\n\r\n{}", MalformedResponse),
    (OK_HEAD + b"Content-Length: \xb2\r\n\r\n{}", MalformedResponse),
    (OK_HEAD + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", MalformedResponse),
    # lengths that used to be MemoryError / OverflowError (not retryable: the worker exited)
    (OK_HEAD + b"Content-Length: 1000000000000\r\n\r\n{}", MalformedResponse),
    (OK_HEAD + b"Content-Length: " + b"9" * 20 + b"\r\n\r\n{}", MalformedResponse),
    (OK_HEAD + b"Content-Length: %d\r\n\r\n{}" % (MAX_BODY_BYTES + 1), MalformedResponse),
    (CHUNKED + b"1" + b"0" * 20 + b"\r\n", MalformedResponse),
    (CHUNKED + b"%x\r\n" % (MAX_BODY_BYTES + 1), MalformedResponse),
    (CHUNKED + (b"%x\r\n" % (MAX_BODY_BYTES // 2) + b"a" * (MAX_BODY_BYTES // 2) + b"\r\n") * 2
     + b"1\r\na\r\n0\r\n\r\n", MalformedResponse),
    # header lines: folding, space before the colon, a name that is no token
    (OK_HEAD + b"Content-Length: 2\r\n x-folded: yes\r\n\r\n{}", MalformedResponse),
    (OK_HEAD + b" Content-Length: 2\r\n\r\n{}", MalformedResponse),
    (OK_HEAD + b"Content-Length : 2\r\n\r\n{}", MalformedResponse),
    (OK_HEAD + b"Content Length: 2\r\n\r\n{}", MalformedResponse),
    # framing that cannot be trusted
    (OK_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", MalformedResponse),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
     MalformedResponse),
    (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", MalformedResponse),
    (b"HTTP/1.1 999 What\r\nContent-Length: 0\r\n\r\n", MalformedResponse),
    (b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", MalformedResponse),
    (b"HTTP/1.10 200 OK\r\nContent-Length: 0\r\n\r\n", MalformedResponse),
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 20, MalformedResponse),
    (OK_HEAD + b"X-A: b\r\n" * 200 + b"\r\n", MalformedResponse),
    (OK_HEAD + b"X-A: " + b"b" * 70_000 + b"\r\n\r\n", MalformedResponse),
    (CHUNKED + b"1\r\na\r\n0\r\nX-Trailer: cut", http.client.IncompleteRead),
]


@pytest.mark.parametrize(("raw", "error"), MALFORMED)
def test_malformed_responses_raise_http_client_errors(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        read(raw)
    # retried as it is, should one ever escape the client's mapping to ConnectionClosedError
    assert error is not MalformedResponse or errors.retryable(caught.value)


def test_a_body_delimited_by_the_end_is_bounded_too() -> None:
    with pytest.raises(MalformedResponse):
        read(OK_HEAD + b"\r\n" + b"x" * (MAX_BODY_BYTES + 1))
    assert read(OK_HEAD + b"\r\n" + b"x" * 1000)[2] == b"x" * 1000


# -- against a local socket server -----------------------------------------------------------

Handler = Callable[[bytes], bytes | None]  # request -> raw response (None: close the connection)


@pytest.fixture
def server() -> Iterator[Callable[[Handler], tuple[str, list[int]]]]:
    """A tiny HTTP server on 127.0.0.1; returns (url, accepted connection count)."""
    sockets: list[socket.socket] = []

    def start(handler: Handler, close_after: bool = False) -> tuple[str, list[int]]:
        listener = socket.create_server(("127.0.0.1", 0))
        sockets.append(listener)

        def serve(conn: socket.socket) -> None:
            reader = conn.makefile("rb")
            with conn:
                while (request := read_request(reader)) is not None:
                    answer = handler(request)
                    if answer is None:
                        return
                    conn.sendall(answer)
                    if close_after:
                        return

        accepted = serve_forever(listener, serve)
        return f"http://127.0.0.1:{listener.getsockname()[1]}", accepted

    yield start
    for s in sockets:
        s.close()


def ok(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
            b"x-amzn-RequestId: req-1\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def client(url: str, **kwargs: Any) -> SqsClient:
    return SqsClient(url, "us-east-1", Credentials("test", "test"), **kwargs)


def test_calls_reuse_one_connection_and_send_the_boto3_request(server: Any) -> None:
    seen: list[bytes] = []

    def handler(request: bytes) -> bytes:
        seen.append(request)
        return ok({"Messages": [{"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}",
                                 "Attributes": {"SentTimestamp": "1"},
                                 "MessageAttributes": {"b": {"DataType": "Binary",
                                                             "BinaryValue": "AAE="}}}]})

    url, accepted = server(handler)
    sqs = client(url)
    for _ in range(5):
        response = sqs.receive_message(QueueUrl=f"{url}/000000000000/q", MaxNumberOfMessages=10)
    assert accepted[0] == 1, "keep-alive: one connection for every call"
    assert response["Messages"][0]["MessageAttributes"]["b"]["BinaryValue"] == b"\x00\x01"
    assert response["ResponseMetadata"] == {"RequestId": "req-1", "HTTPStatusCode": 200}
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST / HTTP/1.1\r\n")
    assert b"X-Amz-Target: AmazonSQS.ReceiveMessage" in head
    assert b"Connection: keep-alive" in head and b"Authorization: AWS4-HMAC-SHA256 " in head
    assert json.loads(body) == {"QueueUrl": f"{url}/000000000000/q", "MaxNumberOfMessages": 10}


def test_blobs_are_sent_as_base64(server: Any) -> None:
    seen: list[bytes] = []
    url, _ = server(lambda r: seen.append(r) or ok({"Successful": [], "Failed": []}))
    client(url).send_message_batch(QueueUrl="q", Entries=[{"Id": "0", "MessageBody": "x",
        "MessageAttributes": {"b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}}])
    sent = json.loads(seen[0].partition(b"\r\n\r\n")[2])
    assert sent["Entries"][0]["MessageAttributes"]["b"]["BinaryValue"] == "AAE="


def test_a_connection_the_server_dropped_while_idle_is_not_reused(server: Any) -> None:
    url, accepted = server(lambda r: ok({}), close_after=True)  # as after a keep-alive timeout
    sqs = client(url)
    for _ in range(3):
        assert sqs.get_queue_attributes(QueueUrl="q")["ResponseMetadata"]["HTTPStatusCode"] == 200
        time.sleep(0.05)
    assert accepted[0] == 3


def test_server_closing_after_the_response_is_seen_before_the_next_call(server: Any) -> None:
    url, accepted = server(lambda r: ok({}).replace(b"HTTP/1.1 200 OK\r\n",
                                                   b"HTTP/1.1 200 OK\r\nConnection: close\r\n"))
    sqs = client(url)
    for _ in range(3):
        sqs.get_queue_attributes(QueueUrl="q")
    assert accepted[0] == 3 and not sqs._connections._idle


@pytest.mark.parametrize("extra", [
    ok({"Failed": []}),
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    b"X",
])
def test_bytes_left_after_an_answer_never_answer_the_next_call(server: Any, extra: bytes) -> None:
    """A second framed response (or a body longer than its Content-Length) in the buffer: the
    connection is closed, not kept, so the next call (a DLQ hand-off, say) cannot read it."""
    calls = [0]

    def handler(_request: bytes) -> bytes:
        calls[0] += 1
        return ok({"n": calls[0]}) + extra

    url, accepted = server(handler)
    sqs = client(url)
    for n in (1, 2, 3):
        assert sqs.get_queue_attributes(QueueUrl="q")["n"] == n
    assert accepted[0] == 3


def test_a_clean_connection_is_kept(server: Any) -> None:
    url, accepted = server(lambda r: ok({}))
    sqs = client(url)
    for _ in range(5):
        sqs.get_queue_attributes(QueueUrl="q")
    assert accepted[0] == 1 and len(sqs._connections._idle) == 1


def test_errors_are_the_client_errors_boto3_raises(server: Any) -> None:
    body = b'{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "gone"}'
    url, _ = server(lambda r: b"HTTP/1.1 400 Bad Request\r\nx-amzn-query-error: "
                    b"AWS.SimpleQueueService.NonExistentQueue;Sender\r\nx-amzn-RequestId: e1\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
    with pytest.raises(ClientError) as caught:
        client(url).receive_message(QueueUrl="q")
    error = caught.value.response["Error"]
    assert error == {"Code": "AWS.SimpleQueueService.NonExistentQueue", "Message": "gone",
                     "QueryErrorCode": "QueueDoesNotExist", "Type": "Sender"}
    assert caught.value.operation_name == "ReceiveMessage"
    assert not errors.retryable(caught.value)


def test_a_5xx_html_page_is_a_retryable_client_error(server: Any) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    url, _ = server(lambda r: b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n"
                    % len(page) + page)
    with pytest.raises(ClientError) as caught:
        client(url).delete_message_batch(QueueUrl="q", Entries=[])
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert errors.retryable(caught.value)


@pytest.mark.parametrize("body", [b"[]", b"null", b'"x"'])
def test_json_that_is_not_an_object_is_an_error_not_a_crash(server: Any, body: bytes) -> None:
    for status, error in ((b"200 OK", HTTPClientError), (b"400 Bad Request", ClientError),
                          (b"503 Slow Down", ClientError)):
        url, _ = server(lambda r, status=status: b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n"
                        % (status, len(body)) + body)
        with pytest.raises(error) as caught:
            client(url).receive_message(QueueUrl="q")
        assert errors.retryable(caught.value) == (not status.startswith(b"4"))


def test_null_messages_is_an_empty_receive(server: Any) -> None:
    url, _ = server(lambda r: ok({"Messages": None}))
    assert client(url).receive_message(QueueUrl="q")["Messages"] is None


def test_kms_throttling_in_query_mode_is_retried() -> None:
    """With x-amzn-query-mode SQS names KmsThrottled by its query code."""
    error = ClientError({"Error": {"Code": "KMS.ThrottlingException"},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}, "ReceiveMessage")
    assert errors.retryable(error)


@pytest.mark.parametrize("scheme", ["https", "HTTPS", "Https"])
def test_https_in_any_case_is_tls(scheme: str, tmp_path: Any) -> None:
    assert client(f"{scheme}://sqs.example.com")._connections.ssl_context is not None
    # botocore accepts a directory of CA certificates as well as a file
    assert client(f"{scheme}://sqs.example.com",
                  ca_bundle=str(tmp_path))._connections.ssl_context is not None


def test_a_connection_returned_after_close_is_closed_not_kept(server: Any) -> None:
    url, _ = server(lambda r: ok({}))
    c = client(url)
    conn = c._connections.get()
    c.close()
    c._connections.put(conn)
    assert c._connections._idle == [] and conn.sock.fileno() == -1


def test_transport_failures_are_botocore_exceptions_and_retryable(server: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as unused:
        port = unused.getsockname()[1]
    with pytest.raises(EndpointConnectionError) as refused:
        client(f"http://127.0.0.1:{port}").receive_message(QueueUrl="q")
    url, _ = server(lambda r: None)  # reads the request, closes without an answer
    with pytest.raises(ConnectionClosedError) as closed:
        client(url).receive_message(QueueUrl="q")
    url, _ = server(lambda r: time.sleep(1) or ok({}))
    with pytest.raises(ReadTimeoutError) as slow:
        client(url, read_timeout=0.2).receive_message(QueueUrl="q")
    for caught in (refused, closed, slow):
        assert errors.retryable(caught.value), caught.value


# -- which client make_client gets -------------------------------------------------------------


def settings_for(**changes: Any) -> Settings:
    return Settings(queue_url="http://127.0.0.1:4566/000000000000/q",
                    aws_endpoint_url="http://127.0.0.1:4566").with_overrides(**changes)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-too"))
    return monkeypatch


def test_environment_keys_need_no_botocore_session(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("AWS_SESSION_TOKEN", "tok")
    client = lean_client(settings_for(), 4)
    assert client is not None
    creds = client._signer.credentials.get_frozen_credentials()
    assert (creds.access_key, creds.secret_key, creds.token) == ("AKIDENV", "env-secret", "tok")


def test_a_config_file_or_profile_goes_through_botocore(aws_env: pytest.MonkeyPatch,
                                                        tmp_path: Any) -> None:
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-1\n")
    aws_env.setenv("AWS_CONFIG_FILE", str(config))
    client = lean_client(settings_for(), 4)
    assert client is not None
    assert type(client._signer.credentials).__module__.startswith("botocore.")
    assert client._signer.credentials.get_frozen_credentials().access_key == "AKIDENV"


@pytest.mark.parametrize("env", [{"AWS_USE_FIPS_ENDPOINT": "true"},
                                 {"AWS_USE_DUALSTACK_ENDPOINT": "TRUE"},
                                 {"HTTP_PROXY": "http://proxy.example:3128"}])
def test_what_only_boto3_does_stays_with_boto3(aws_env: pytest.MonkeyPatch,
                                              env: dict[str, str]) -> None:
    for name, value in env.items():
        aws_env.setenv(name, value)
    assert lean_client(settings_for(), 4) is None


def test_no_proxy_and_the_setting(aws_env: pytest.MonkeyPatch) -> None:
    aws_env.setenv("HTTP_PROXY", "http://proxy.example:3128")
    aws_env.setenv("NO_PROXY", "127.0.0.1")
    assert lean_client(settings_for(), 4) is not None
    assert lean_client(settings_for(sqs_client="boto3"), 4) is None
    aws_client = lean_client(Settings(queue_url="https://sqs.eu-west-1.amazonaws.com/1/q",
                                      aws_region="eu-west-1"), 4)
    assert aws_client is not None and aws_client.endpoint_url == "https://sqs.eu-west-1.amazonaws.com"


@pytest.mark.parametrize("raw", [raw for raw, _ in MALFORMED])
def test_every_malformed_answer_is_a_retryable_error_and_the_connection_is_dropped(
        server: Any, raw: bytes) -> None:
    url, _ = server(lambda _request: raw, close_after=True)
    sqs = client(url, read_timeout=5)
    with pytest.raises(Exception) as caught:
        sqs.get_queue_attributes(QueueUrl=url + "/q")
    assert sqs._connections._idle == []
    assert isinstance(caught.value, ConnectionClosedError | HTTPClientError), caught.value
    assert errors.retryable(caught.value)


@pytest.mark.parametrize("which", ["lean", "boto3"])
def test_a_ca_bundle_that_is_not_there_is_a_config_error(aws_env: pytest.MonkeyPatch,
                                                         tmp_path: Any, which: str) -> None:
    aws_env.setenv("AWS_CA_BUNDLE", str(tmp_path / "no-such-ca.pem"))
    settings = Settings(queue_url="https://sqs.eu-west-1.amazonaws.com/000000000000/q",
                        sqs_client=which)
    with pytest.raises(ConfigError, match=r"CA bundle not found.*no-such-ca\.pem"):
        make_client(settings)
    # unused over plain HTTP: no reason to refuse the start
    assert make_client(settings_for(sqs_client=which)) is not None


def test_a_ca_bundle_without_certificates_is_a_config_error(aws_env: pytest.MonkeyPatch,
                                                            tmp_path: Any) -> None:
    bundle = tmp_path / "empty.pem"
    bundle.write_text("not a certificate\n")
    aws_env.setenv("AWS_CA_BUNDLE", str(bundle))
    settings = Settings(queue_url="https://sqs.eu-west-1.amazonaws.com/000000000000/q")
    with pytest.raises(ConfigError, match="CA bundle"):
        make_client(settings)


def _self_signed(tmp_path: Any) -> tuple[str, str]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


# The response exactly 16 KiB, sent as two TLS records of 8 KiB + (8 KiB and the extra): the
# reader's buffer takes the first record, its direct read of the body's last 8 KiB leaves the
# extra decrypted in OpenSSL's buffer, where neither the reader's peek nor poll() sees it.
_EXACT = 10_000 + 16_384 - len(ok({"n": 1, "pad": "x" * 10_000}))


@pytest.mark.parametrize("pad", [0, 12_000, _EXACT])
@pytest.mark.parametrize("extra", [b"", ok({"stale": True})])
def test_over_tls_clean_connections_are_kept_and_dirty_ones_dropped(tmp_path: Any, pad: int,
                                                                    extra: bytes) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    calls = [0]

    def serve(raw: socket.socket) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(raw, server_side=True) as conn:
            reader = conn.makefile("rb")
            while read_request(reader) is not None:
                calls[0] += 1
                answer = ok({"n": calls[0], "pad": "x" * pad}) + extra
                conn.sendall(answer[:8192])
                conn.sendall(answer[8192:])

    accepted = serve_forever(listener, serve)
    try:
        sqs = client(f"https://127.0.0.1:{listener.getsockname()[1]}", ca_bundle=cert)
        for n in (1, 2, 3):
            assert sqs.get_queue_attributes(QueueUrl="q")["n"] == n
        assert accepted[0] == (3 if extra else 1)
    finally:
        listener.close()
