"""HTTP/1.1 framing for the lean client: one response read off a kept connection, and the pool
of keep-alive connections to one endpoint."""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
)
from botocore.exceptions import SSLError as BotoSSLError

_HEX = frozenset(b"0123456789abcdefABCDEF")


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


class Connections:
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

