"""SQS over its JSON protocol on keep-alive connections: the worker's hot path, lean.

Why not boto3 for these calls: a boto3 SQS call costs about 3 ms of CPU on the benchmark
machine (event hooks, endpoint rules, shape walking, a SigV4 signer built on email-style
headers), and against LocalStack every call also opens a new TCP connection: it answers
`Connection: close` unless the client asks for keep-alive (localstack#6557). Per message,
that was most of the worker's CPU. This client sends the same request (the JSON body and
headers the boto3 serializer sends, signed with SigV4, the signing key cached for the day)
on pooled keep-alive connections, and reports failures as the same botocore exceptions
(ClientError with the parsed error; EndpointConnectionError, ConnectTimeoutError,
ReadTimeoutError, ConnectionClosedError), so retrying.py's policies apply unchanged.

Credentials come from botocore's own provider chain (environment, profile, SSO, web
identity, container, IMDS) and are refreshed by it. Only the operations Queue uses exist
here; queue.make_client falls back to boto3 where this client does not go (proxies, FIPS or
dual-stack endpoint selection).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import SSLError as BotoSSLError

from login_etl import __version__
from login_etl.settings import Settings

_CONTENT_TYPE = "application/x-amz-json-1.0"
_SIGNED = "content-type;host;x-amz-date;x-amz-target;x-amzn-query-mode"
_SIGNED_WITH_TOKEN = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target;x-amzn-query-mode"
_USER_AGENT = f"login-etl/{__version__}"
_HEX = frozenset(b"0123456789abcdefABCDEF")


class Signer:
    """AWS Signature Version 4 for `POST /` with a JSON body, the one request shape SQS JSON uses.

    Byte for byte what botocore's SigV4Auth produces for the same request (a unit test
    checks it), without its per-call header objects, and with the derived signing key
    computed once per day instead of four HMACs per request.
    """

    def __init__(self, credentials: Any, region: str, host: str, service: str = "sqs") -> None:
        self.credentials = credentials  # botocore Credentials (refreshable) or None
        self.region = region
        self.host = host
        self.service = service
        self._key: tuple[str, str, bytes] | None = None  # (secret, date, signing key)

    def headers(self, target: str, body: bytes, now: dt.datetime | None = None) -> dict[str, str]:
        if self.credentials is None:
            raise NoCredentialsError()
        creds = self.credentials.get_frozen_credentials()
        stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        date = stamp[:8]
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        token_line = f"x-amz-security-token:{creds.token}\n" if creds.token else ""
        canonical = (
            f"POST\n/\n\ncontent-type:{_CONTENT_TYPE}\nhost:{self.host}\nx-amz-date:{stamp}\n"
            f"{token_line}x-amz-target:{target}\nx-amzn-query-mode:true\n\n"
            f"{_SIGNED_WITH_TOKEN if creds.token else _SIGNED}\n"
            f"{hashlib.sha256(body).hexdigest()}"
        )
        to_sign = (f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
                   f"{hashlib.sha256(canonical.encode()).hexdigest()}")
        signature = hmac.new(self._signing_key(creds.secret_key, date), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": _CONTENT_TYPE,
            "X-Amz-Target": target,
            "x-amzn-query-mode": "true",
            "X-Amz-Date": stamp,
            "Authorization": (
                f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                f"SignedHeaders={_SIGNED_WITH_TOKEN if creds.token else _SIGNED}, "
                f"Signature={signature}"
            ),
        }
        if creds.token:
            headers["X-Amz-Security-Token"] = creds.token
        return headers

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached = self._key
        if cached is not None and cached[0] == secret and cached[1] == date:
            return cached[2]
        key = f"AWS4{secret}".encode()
        for part in (date, self.region, self.service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._key = (secret, date, key)
        return key


def host_header(url: str) -> str:
    """The Host value SigV4 signs: lowercase host, [ipv6], port only when not the default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return f"{host}:{parts.port}" if parts.port is not None and parts.port != default else host


class Connection:
    """One keep-alive connection: the socket and the buffered reader that stays with it."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


_MAX_LINE = 65_536
_MAX_HEADERS = 100


def read_response(reader: Any) -> tuple[int, dict[str, str], bytes, bool]:
    """Read one HTTP/1.x response: (status, lowercase headers, body, connection must close).

    The small subset of http.client a JSON API needs (status line, headers, a Content-Length
    or chunked body, interim 1xx skipped), at a fraction of its cost: http.client parses
    headers with the email package, which was half of a call's CPU. Malformed input raises
    http.client's own exceptions, which the caller maps to ConnectionClosedError.
    """
    while True:
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(line) > _MAX_LINE or not code.isdigit():
            raise http.client.BadStatusLine(repr(line[:80]))
        status = int(code)
        headers: dict[str, str] = {}
        while True:
            line = reader.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                break
            if len(line) > _MAX_LINE or len(headers) >= _MAX_HEADERS:
                raise http.client.LineTooLong("header line")
            if not line.endswith(b"\n"):  # the connection ended inside the head
                raise http.client.IncompleteRead(line)
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise http.client.BadStatusLine(f"malformed header line {line[:40]!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if status >= 200 or status == 101:
            break  # 1xx (e.g. 100 Continue) is interim: the real response follows
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    close = "close" in tokens or (version == b"HTTP/1.0" and "keep-alive" not in tokens)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(reader)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
            if length < 0:  # read(-1) would read to the end of the connection
                raise ValueError(length)
        except ValueError:
            raise http.client.BadStatusLine("bad Content-Length") from None
        body = reader.read(length)
        if len(body) < length:
            raise http.client.IncompleteRead(body, length - len(body))
    elif status in (204, 304):
        body = b""
    else:  # delimited by the end of the connection
        body, close = reader.read(), True
    return status, headers, body, close


def _read_chunked(reader: Any) -> bytes:
    parts = []
    while True:
        line = reader.readline(_MAX_LINE + 1)
        digits = line.split(b";", 1)[0].strip()
        if not digits or not all(c in _HEX for c in digits):  # int() would take "-5", "1_0"
            raise http.client.IncompleteRead(b"".join(parts))
        size = int(digits, 16)
        if size == 0:
            while line := reader.readline(_MAX_LINE + 1):  # trailers, up to the blank line
                if line in (b"\r\n", b"\n"):
                    break
            return b"".join(parts)
        chunk = reader.read(size + 2)
        if len(chunk) < size + 2 or chunk[size:] != b"\r\n":
            raise http.client.IncompleteRead(b"".join(parts), max(0, size + 2 - len(chunk)))
        parts.append(chunk[:size])


def _readable(sock: socket.socket) -> bool:
    """Data or EOF waiting on a connection nothing was asked on: the server closed it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Connections:
    """A LIFO pool of keep-alive connections to one endpoint, at most `size` kept idle."""

    def __init__(self, url: str, size: int, connect_timeout: float, read_timeout: float,
                 tcp_keepalive: bool, ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.size = size
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tcp_keepalive = tcp_keepalive
        self.ssl_context = ssl_context
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> Connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            # A kept connection the server has closed (or written to) in the meantime reads
            # as ready: drop it rather than send a request into it.
            if not _readable(conn.sock):
                return conn
            conn.close()

    def put(self, conn: Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for conn in idle:
            conn.close()

    def _connect(self) -> Connection:
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self.url, error=exc) from exc
        except OSError as exc:
            raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tcp_keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(endpoint_url=self.url, error=exc) from exc
        except ssl.SSLError as exc:
            sock.close()
            raise BotoSSLError(endpoint_url=self.url, error=exc) from exc
        except OSError as exc:
            sock.close()
            raise EndpointConnectionError(endpoint_url=self.url, error=exc) from exc
        sock.settimeout(self.read_timeout)
        return Connection(sock)


def _encode_blob(value: Any) -> str:
    """JSON protocol blobs (BinaryValue) travel as base64, as the boto3 serializer sends them."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class SqsClient:
    """The five SQS operations Queue calls, with boto3's keyword arguments and response dicts."""

    def __init__(self, endpoint_url: str, region: str, credentials: Any, *, pool: int = 10,
                 connect_timeout: float = 3, read_timeout: float = 30, tcp_keepalive: bool = True,
                 ca_bundle: str | None = None) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        context = None
        if urlsplit(self.endpoint_url).scheme == "https":  # lowercased: "HTTPS://" is TLS too
            # botocore takes a directory as a CA path as well as a file
            where = {"capath" if ca_bundle and os.path.isdir(ca_bundle) else "cafile": ca_bundle}
            context = ssl.create_default_context(**where)
        self._connections = _Connections(self.endpoint_url + "/", pool, connect_timeout,
                                         read_timeout, tcp_keepalive, context)
        self._host = host_header(self.endpoint_url)
        self._signer = Signer(credentials, region, self._host)
        self._error_parser: Any = None

    def receive_message(self, **params: Any) -> dict[str, Any]:
        response = self._call("ReceiveMessage", params)
        for message in response.get("Messages") or ():
            for attribute in (message.get("MessageAttributes") or {}).values():
                _decode_binary(attribute)
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

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":"), default=_encode_blob).encode()
        headers = self._signer.headers(f"AmazonSQS.{operation}", body)
        headers["Accept-Encoding"] = "identity"
        headers["Connection"] = "keep-alive"
        headers["User-Agent"] = _USER_AGENT
        status, response_headers, data = self._send(body, headers)
        if 200 <= status < 300:
            try:
                parsed: dict[str, Any] = json.loads(data) if data else {}
                if not isinstance(parsed, dict):
                    raise ValueError("the response body is not a JSON object")
            except ValueError as exc:
                raise HTTPClientError(error=exc) from exc
            parsed["ResponseMetadata"] = {
                "RequestId": response_headers.get("x-amzn-requestid", ""),
                "HTTPStatusCode": status,
            }
            return parsed
        raise self._client_error(operation, status, response_headers, data)

    def _send(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """One request on a kept connection, head and body in one write."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (f"POST / HTTP/1.1\r\nHost: {self._host}\r\nContent-Length: {len(body)}\r\n"
                   f"{head}\r\n").encode("latin-1") + body
        conn = self._connections.get()
        try:
            conn.sock.sendall(request)
            status, response_headers, data, close = read_response(conn.reader)
        except TimeoutError as exc:
            conn.close()
            raise ReadTimeoutError(endpoint_url=self._connections.url, error=exc) from exc
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise ConnectionClosedError(endpoint_url=self._connections.url, error=exc) from exc
        except BaseException:
            conn.close()
            raise
        if close:
            conn.close()
        else:
            self._connections.put(conn)
        return status, response_headers, data

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
        except Exception:  # JSON but not an object: what botocore gives for a non-JSON body
            parsed = {"Error": {"Code": str(status), "Message": "unreadable error response"},
                      "ResponseMetadata": {"HTTPStatusCode": status}}
        return ClientError(parsed, operation)


def _decode_binary(attribute: dict[str, Any]) -> None:
    if "BinaryValue" in attribute:
        attribute["BinaryValue"] = base64.b64decode(attribute["BinaryValue"])
    if "BinaryListValues" in attribute:
        attribute["BinaryListValues"] = [base64.b64decode(v)
                                         for v in attribute["BinaryListValues"]]


def lean_client(settings: Settings, pool: int) -> SqsClient | None:
    """This client for the settings, or None where boto3 has to do it.

    boto3 keeps: LOGIN_ETL_SQS_CLIENT=boto3, an HTTP(S) proxy that applies to the endpoint,
    and FIPS or dual-stack endpoint selection (AWS_USE_FIPS_ENDPOINT, ..._DUALSTACK_...,
    or the same in the AWS config file). Credentials and the CA bundle (AWS_CA_BUNDLE or
    the config file's ca_bundle) are what boto3 would use: the environment's when the
    environment alone decides them, else those of a botocore session.
    """
    if settings.sqs_client != "lean":
        return None
    endpoint = settings.endpoint_url or _aws_endpoint(settings.region)
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if _proxied(parts.scheme, parts.hostname):
        return None
    env = os.environ
    if _environment_decides(env):
        # The chain's first provider answers from the environment; no session (and no 0.2 s
        # of botocore imports at every start) is needed to know it.
        credentials: Any = _EnvironmentCredentials(
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
            env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN") or None)
        flags = [env.get(f"AWS_USE_{name}_ENDPOINT", "") for name in ("FIPS", "DUALSTACK")]
        ca_bundle = env.get("AWS_CA_BUNDLE") or None
    else:
        import botocore.session

        session = botocore.session.get_session()
        credentials = session.get_credentials()
        flags = [str(session.get_config_variable(name))
                 for name in ("use_fips_endpoint", "use_dualstack_endpoint")]
        ca_bundle = session.get_config_variable("ca_bundle")
    if any(flag.lower() == "true" for flag in flags):
        return None
    if parts.scheme == "https" and not ca_bundle:
        ca_bundle = _default_ca_bundle()
    return SqsClient(endpoint, settings.region, credentials, pool=pool, connect_timeout=3,
                     read_timeout=settings.wait_time_seconds + 10, ca_bundle=ca_bundle)


class _EnvironmentCredentials:
    """Static keys from the environment, shaped like botocore's frozen credentials."""

    def __init__(self, access_key: str, secret_key: str, token: str | None) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.token = token

    def get_frozen_credentials(self) -> _EnvironmentCredentials:
        return self


def _environment_decides(env: Mapping[str, str]) -> bool:
    """Static keys in the environment, and no profile or config file that could say otherwise."""
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        return False
    if any(env.get(name) for name in ("AWS_CREDENTIAL_EXPIRATION", "AWS_PROFILE",
                                      "AWS_DEFAULT_PROFILE")):
        return False
    config = env.get("AWS_CONFIG_FILE") or os.path.join("~", ".aws", "config")
    return not os.path.exists(os.path.expanduser(config))


def _proxied(scheme: str, host: str) -> bool:
    """Whether an HTTP(S)_PROXY of the environment applies to this host (NO_PROXY aside)."""
    if not any(k.lower().endswith("_proxy") and k.lower() != "no_proxy" for k in os.environ):
        return False
    import urllib.request

    proxy = urllib.request.getproxies().get(scheme)
    return bool(proxy) and not urllib.request.proxy_bypass(host)


def _aws_endpoint(region: str) -> str:
    """botocore's standard SQS endpoint for a region (the aws and aws-cn partitions)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sqs.{region}.{suffix}"


def _default_ca_bundle() -> str | None:
    """The bundle botocore verifies with by default (certifi's, else its own cacert.pem)."""
    from botocore.httpsession import get_cert_path

    path = get_cert_path(True)
    return path if isinstance(path, str) else None

