"""The SqsClient: the five SQS operations Queue calls, over http11's pooled connections."""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from botocore.exceptions import (
    ConnectionClosedError,
    HTTPClientError,
    ReadTimeoutError,
)

from login_etl import __version__, jsonread
from login_etl.sqs.http11 import Connection, Connections, read_response
from login_etl.sqs.sigv4 import Signer, host_header

_USER_AGENT = f"login-etl/{__version__}"


def _encode_blob(value: Any) -> str:
    """JSON protocol blobs (BinaryValue) travel as base64, as the boto3 serializer sends them."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class SqsClient:
    """The five SQS operations Queue calls, with boto3's keyword arguments and response dicts.

    A call (connect, send, read) ends by connect_timeout + read_timeout whatever the server
    does; each read waits at most read_timeout. The endpoint's path, if any, is where the
    requests go (choose.lean_client leaves paths this client does not sign to boto3).
    """

    def __init__(self, endpoint_url: str, region: str, credentials: Any, *, pool: int = 10,
                 connect_timeout: float = 3, read_timeout: float = 30, tcp_keepalive: bool = True,
                 ca_bundle: str | None = None) -> None:
        # botocore's rule: the endpoint's path as given, "/" when it has none
        self.path = urlsplit(endpoint_url).path or "/"
        self.call_timeout = connect_timeout + read_timeout
        self.endpoint_url = endpoint_url.rstrip("/")
        context = None
        # urlsplit lowercases the scheme: "HTTPS://" is TLS too.
        if urlsplit(self.endpoint_url).scheme == "https":
            # botocore takes a directory as a CA path as well as a file.
            if ca_bundle and os.path.isdir(ca_bundle):
                context = ssl.create_default_context(capath=ca_bundle)
            else:
                context = ssl.create_default_context(cafile=ca_bundle)
        self._connections = Connections(self.endpoint_url + "/", pool, connect_timeout,
                                         read_timeout, tcp_keepalive, context)
        self._host = host_header(self.endpoint_url)
        self._signer = Signer(credentials, region, self._host, path=self.path)
        self._error_parser: Any = None

    def receive_message(self, **params: Any) -> dict[str, Any]:
        response = self._call("ReceiveMessage", params)
        try:
            messages = response.get("Messages") or []
            if not isinstance(messages, list):
                raise TypeError("Messages is not a list")
            for message in messages:
                for attribute in (message.get("MessageAttributes") or {}).values():
                    _decode_binary(attribute)
        except (AttributeError, TypeError, ValueError) as exc:
            # a shape no SQS sends: a broken answer, retried like one
            raise HTTPClientError(error=exc) from exc
        return response

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("DeleteMessageBatch", params)

    def change_message_visibility_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("ChangeMessageVisibilityBatch", params)

    def send_message_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("SendMessageBatch", params)

    def get_queue_attributes(self, **params: Any) -> dict[str, Any]:
        return self._call("GetQueueAttributes", params)

    def close(self) -> None:
        self._connections.close()

    def delete_message_batches(self, calls: Sequence[dict[str, Any]]) -> list[tuple[Any, float]]:
        """Several DeleteMessageBatch calls in flight at once, one connection each: every
        request is sent, then every answer read in order. One thread waking once for several
        answers costs less CPU than one wake-up (and one slice of the GIL) per call.

        Each item: what delete_message_batch would return, or the exception it would raise,
        and the seconds from the first send to that answer. A request that cannot be sent
        (no connection) ends the sending: the rest carry the same failure, unsent, rather
        than each waiting out its own connect timeout.
        """
        started = time.perf_counter()
        sent: list[Connection | Exception] = []
        outcomes: list[tuple[Any, float]] = []
        try:
            for params in calls:
                try:
                    sent.append(self._send(self._request("DeleteMessageBatch", params)))
                except Exception as exc:
                    sent.extend([exc] * (len(calls) - len(sent)))
                    break
            for conn in sent:
                try:
                    if isinstance(conn, Exception):
                        raise conn
                    answer: Any = self._answer("DeleteMessageBatch", *self._read(conn))
                except Exception as exc:
                    answer = exc
                outcomes.append((answer, time.perf_counter() - started))
        finally:
            # Interrupted (a BaseException): no connection is left open with its answer unread.
            for conn in sent[len(outcomes):]:
                if isinstance(conn, Connection):
                    conn.close()
        return outcomes

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._answer(operation, *self._read(self._send(self._request(operation, params))))

    def _request(self, operation: str, params: dict[str, Any]) -> bytes:
        """The whole request, head and body, for one write."""
        body = _dumps(params)
        headers = self._signer.headers(f"AmazonSQS.{operation}", body)
        headers["Accept-Encoding"] = "identity"
        headers["Connection"] = "keep-alive"
        headers["User-Agent"] = _USER_AGENT
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return (f"POST {self.path} HTTP/1.1\r\nHost: {self._host}\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n").encode("latin-1") + body

    def _send(self, request: bytes) -> Connection:
        """The request written on a kept connection, whose answer is due within call_timeout."""
        deadline = time.monotonic() + self.call_timeout
        conn = self._connections.get(deadline)
        try:
            conn.start(deadline)
            conn.sock.sendall(request)
        except (http.client.HTTPException, OSError, ValueError) as exc:
            conn.close()
            raise self._lost(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _read(self, conn: Connection) -> tuple[int, dict[str, str], bytes]:
        """The answer to the request sent on conn; the connection kept for the next call
        unless the answer or a failure closed it."""
        try:
            status, response_headers, data, close = read_response(conn.reader)
        except (http.client.HTTPException, OSError, ValueError) as exc:
            conn.close()
            raise self._lost(exc) from exc
        except BaseException:
            conn.close()
            raise
        if close:
            conn.close()
        else:
            self._connections.put(conn)
        return status, response_headers, data

    def _lost(self, exc: Exception) -> Exception:
        """botocore's exception for a call that failed on its connection (as boto3 raises)."""
        if isinstance(exc, TimeoutError):
            return ReadTimeoutError(endpoint_url=self._connections.url, error=exc)
        return ConnectionClosedError(endpoint_url=self._connections.url, error=exc)

    def _answer(self, operation: str, status: int, response_headers: dict[str, str],
                data: bytes) -> dict[str, Any]:
        if 200 <= status < 300:
            try:
                # Each operation answers a JSON object, "{}" at the least: an empty body is
                # one cut short where only the end of the connection framed it.
                parsed: dict[str, Any] = jsonread.loads(data)
                if not isinstance(parsed, dict):
                    raise ValueError("the response body is not a JSON object")
            except (ValueError, RecursionError) as exc:
                # RecursionError: JSON nested deeper than the parser's stack
                raise HTTPClientError(error=exc) from exc
            parsed["ResponseMetadata"] = {
                "RequestId": response_headers.get("x-amzn-requestid", ""),
                "HTTPStatusCode": status,
            }
            return parsed
        raise self._client_error(operation, status, response_headers, data)

    def _client_error(self, operation: str, status: int, headers: dict[str, str],
                      data: bytes) -> Exception:
        """The ClientError boto3 would raise: botocore's own JSON error parser reads the body."""
        from botocore.exceptions import ClientError
        from botocore.parsers import create_parser

        if self._error_parser is None:
            self._error_parser = create_parser("json")
        try:
            parsed = self._error_parser.parse(
                {"status_code": status, "headers": headers, "body": data}, None)
        # JSON but not an object: answer what botocore gives for a body that is not JSON.
        except Exception:
            parsed = {"Error": {"Code": str(status), "Message": "unreadable error response"},
                      "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(parsed, operation)


def _dumps(params: dict[str, Any]) -> bytes:
    """The request body: orjson's compact UTF-8, 3-20x json's speed (a delete of ten receipt
    handles: 0.7 µs against 16); what orjson refuses (a lone surrogate, a key not a string)
    is written by json, which escapes it as before."""
    try:
        return orjson.dumps(params, default=_encode_blob)
    except TypeError:
        return json.dumps(params, separators=(",", ":"), default=_encode_blob).encode()


def _decode_binary(attribute: dict[str, Any]) -> None:
    if "BinaryValue" in attribute:
        attribute["BinaryValue"] = base64.b64decode(attribute["BinaryValue"])
    if "BinaryListValues" in attribute:
        attribute["BinaryListValues"] = [base64.b64decode(v)
                                         for v in attribute["BinaryListValues"]]

