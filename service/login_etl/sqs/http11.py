"""HTTP/1.1 framing for the lean client: one response read off a kept connection, and the pool
of keep-alive connections to one endpoint."""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
import threading
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
)
from botocore.exceptions import SSLError as BotoSSLError

# A full ReceiveMessage answer is about 10.5 MiB (ten 1 MiB messages with their attributes);
# JSON escaping can triple a body of two-byte characters (each one a \\u00XX escape). Longer
# is refused before anything that size is allocated.
MAX_BODY_BYTES = 32 * 1024 * 1024
_MAX_LINE = 65_536
_MAX_HEADERS = 100
_MAX_INTERIM = 10
# 8 hex digits reach 4 GiB, past MAX_BODY_BYTES: a longer size is refused unread.
_MAX_CHUNK_DIGITS = 8
_MAX_CHUNKS = 100_000
_HEX = b"0123456789abcdefABCDEF"
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class MalformedResponse(http.client.HTTPException):
    """The answer breaks HTTP/1.1 framing or a stated bound. The connection is dropped and the
    call retried like one whose connection was lost (sqs.errors.retryable lists it)."""


class _SocketReader(socket.SocketIO):
    """The raw stream under a connection's BufferedReader. While `probing`, a read returns at
    once with nothing, so peek() shows what the buffer holds without touching the socket.
    Each read waits at most read_timeout and never past `deadline` (time.monotonic()): a
    server trickling its answer a byte at a time cannot hold a call past its deadline."""

    probing = False
    deadline = float("inf")
    read_timeout: float | None = None

    def __init__(self, sock: socket.socket, mode: Literal["rb"]) -> None:
        super().__init__(sock, mode)
        self.sock = sock
        # What the socket's timeout was last set to: setting it is a system call (ioctl) each
        # time, and on a kept connection it is read_timeout call after call.
        self.timeout = sock.gettimeout()

    def bound(self, remaining: float) -> None:
        """The socket's timeout: read_timeout, or less once the deadline is nearer."""
        if remaining <= 0:
            raise TimeoutError("the call's deadline passed")
        limit = self.read_timeout
        timeout = remaining if limit is None or remaining < limit else limit
        if timeout != self.timeout:
            self.sock.settimeout(timeout)
            self.timeout = timeout

    def readinto(self, b: Any) -> int | None:
        if self.probing:
            return None
        self.bound(self.deadline - time.monotonic())
        return super().readinto(b)


class Connection:
    """One keep-alive connection: the socket and the buffered reader that stays with it."""

    __slots__ = ("_raw", "reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._raw = _SocketReader(sock, "rb")
        self._raw.read_timeout = sock.gettimeout()
        # as socket.makefile does: the socket is really closed once its reader is closed too
        sock._io_refs += 1  # type: ignore[attr-defined]
        self.reader = io.BufferedReader(self._raw)

    def start(self, deadline: float) -> None:
        """A new call: its request is sent and its answer read by `deadline` (monotonic)."""
        self._raw.deadline = deadline
        # sendall's timeout bounds the whole send: by read_timeout, and by the deadline
        self._raw.bound(deadline - time.monotonic())

    def drained(self) -> bool:
        """Nothing is left unread in the reader's buffer or in OpenSSL's.

        Bytes beyond the response just read (a second response, a body longer than its
        Content-Length) would be taken as the answer to the next request on this connection.
        Bytes still on the socket are seen by Connections.get() before the next request.
        """
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return False
        self._raw.probing = True
        try:
            return not self.reader.peek(1)
        finally:
            self._raw.probing = False

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def read_response(reader: Any) -> tuple[int, dict[str, str], bytes, bool]:
    """Read one HTTP/1.x response: (status, lowercase headers, body, connection must close).

    The small subset of http.client a JSON API needs (status line, headers, a Content-Length
    or chunked body, interim 1xx skipped), at a fraction of its cost: http.client parses
    headers with the email package, which was half of a call's CPU. Held to RFC 9112 where
    a lenient reading could misframe: lengths are plain ASCII digits (hex for chunks) and
    bounded by MAX_BODY_BYTES before anything is allocated, header names are tokens right
    before their colon, obsolete line folding is refused. A truncated answer raises
    http.client's RemoteDisconnected or IncompleteRead, anything else MalformedResponse;
    the caller maps all of them to ConnectionClosedError.
    """
    for _ in range(_MAX_INTERIM + 1):
        line = reader.readline(_MAX_LINE + 1)
        if not line:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        version, code, end = line[:8], line[9:12], line[12:13]
        if (version not in (b"HTTP/1.1", b"HTTP/1.0") or line[8:9] != b" "
                or len(code) != 3 or not code.isdigit()
                or end not in (b" ", b"\r", b"\n") or not line.endswith(b"\n")):
            raise MalformedResponse(f"bad status line {line[:40]!r}")
        status = int(code)
        if not 100 <= status <= 599 or status == 101:
            # 101 answers an upgrade this client never asks for
            raise MalformedResponse(f"status {status}")
        headers = _read_headers(reader)
        if status >= 200:
            break
    else:
        raise MalformedResponse("too many interim responses")
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    close = "close" in tokens or (version == b"HTTP/1.0" and "keep-alive" not in tokens)
    coding = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if coding is not None:
        if coding.lower() != "chunked" or length is not None:
            # another coding, or both framings at once: no safe way to find the end
            raise MalformedResponse("unsupported Transfer-Encoding")
        body = _read_chunked(reader)
    elif length is not None:
        # isdigit() alone would pass "²" and int() would take "+2", "1_0" and " 2"
        if not length or len(length) > 10 or not length.isascii() or not length.isdigit():
            raise MalformedResponse("bad Content-Length")
        size = int(length)
        if size > MAX_BODY_BYTES:
            raise MalformedResponse(f"Content-Length over {MAX_BODY_BYTES}")
        body = reader.read(size)
        if len(body) < size:
            raise http.client.IncompleteRead(body, size - len(body))
    elif status in (204, 304):
        body = b""
    else:
        # delimited by the end of the connection
        body, close = reader.read(MAX_BODY_BYTES + 1), True
        if len(body) > MAX_BODY_BYTES:
            raise MalformedResponse(f"body over {MAX_BODY_BYTES}")
    return status, headers, body, close


def _read_headers(reader: Any) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS):
        line = reader.readline(_MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line.endswith(b"\n"):
            if len(line) > _MAX_LINE:
                raise MalformedResponse("header line too long")
            # the connection ended inside the head
            raise http.client.IncompleteRead(line)
        name, sep, value = line.decode("latin-1").partition(":")
        # A name must be a token right before its colon: "Name : v" and a line starting
        # with whitespace (obsolete folding) are refused, not read as a new header. Letters,
        # digits and dashes decide the usual names; the rest of the token characters are
        # looked up only when another one is there.
        if not sep or not ((name.isascii() and name.replace("-", "").isalnum())
                           or _is_token(name)):
            raise MalformedResponse(f"malformed header line {line[:40]!r}")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise MalformedResponse("too many header lines")


def _is_token(name: str) -> bool:
    return bool(name) and name.isascii() and not name.encode("ascii").translate(None, _TOKEN)


def _read_chunked(reader: Any) -> bytes:
    parts: list[bytes] = []
    total = 0
    for _ in range(_MAX_CHUNKS):
        line = reader.readline(_MAX_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > _MAX_LINE:
                raise MalformedResponse("chunk size line too long")
            raise http.client.IncompleteRead(b"".join(parts))
        digits = line.split(b";", 1)[0].rstrip(b" \t\r\n")
        # int(x, 16) would take "-5", "+2", "1_0", " 2" and sizes of any length
        if not digits or len(digits) > _MAX_CHUNK_DIGITS or digits.translate(None, _HEX):
            raise MalformedResponse(f"bad chunk size {line[:20]!r}")
        size = int(digits, 16)
        if size == 0:
            _read_headers(reader)
            return b"".join(parts)
        total += size
        if total > MAX_BODY_BYTES:
            raise MalformedResponse(f"chunked body over {MAX_BODY_BYTES}")
        chunk = reader.read(size + 2)
        if len(chunk) < size + 2:
            raise http.client.IncompleteRead(b"".join(parts), size + 2 - len(chunk))
        if chunk[size:] != b"\r\n":
            raise MalformedResponse("chunk not closed by CRLF")
        parts.append(chunk[:size])
    raise MalformedResponse("too many chunks")


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

    def get(self, deadline: float = float("inf")) -> Connection:
        """A kept connection, else a new one (connecting by `deadline` at the latest)."""
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect(deadline)
            # A kept connection the server has closed (or written to) in the meantime reads
            # as ready: drop it rather than send a request into it.
            if not _readable(conn.sock):
                return conn
            conn.close()

    def put(self, conn: Connection) -> None:
        """Keep a connection for the next call, unless anything is left unread on it."""
        if conn.drained():
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

    def _connect(self, deadline: float) -> Connection:
        timeout = min(self.connect_timeout, max(0.001, deadline - time.monotonic()))
        try:
            sock = socket.create_connection((self.host, self.port), timeout)
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

