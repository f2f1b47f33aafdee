"""An HTTP/1.1 proxy in front of SQS that forwards every request and, for the operations a
test names, replaces every n-th answer with one of its own (after the server acted on it):
a gateway or a server of another make answering 200 with a body of the wrong shape.

With a `prefix`, it is a gateway that serves SQS under that path only: a request to any
other path is answered 404, one to the prefix is forwarded to the server's `/`."""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

from tests.unit.fakeserver import read_request, serve_forever


class RewriteProxy:
    def __init__(self, target_port: int, operations: tuple[str, ...], answer: bytes,
                 every: int = 3, target_host: str = "127.0.0.1", status: int = 200,
                 prefix: str | None = None) -> None:
        self.target = (target_host, target_port)
        self.operations = operations
        self.answer = answer
        self.every = every
        self.status = status
        self.prefix = prefix
        self.paths: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.rewritten: dict[str, int] = {}
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        serve_forever(self._listener, self._serve)

    def url_for(self, url: str) -> str:
        """The same URL with host:port replaced by the proxy's."""
        return urlunsplit(urlsplit(url)._replace(netloc=f"127.0.0.1:{self.port}"))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _rewrite(self, operation: str) -> bool:
        with self._lock:
            self.calls[operation] = n = self.calls.get(operation, 0) + 1
            if operation in self.operations and n % self.every == 0:
                self.rewritten[operation] = self.rewritten.get(operation, 0) + 1
                return True
        return False

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        upstream = http.client.HTTPConnection(*self.target, timeout=60)
        with contextlib.suppress(OSError, http.client.HTTPException), conn:
            while (request := read_request(reader)) is not None:
                head, _, body = request.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:])
                operation = headers.get("X-Amz-Target", "").rpartition(".")[2]
                with self._lock:
                    self.paths[path] = self.paths.get(path, 0) + 1
                if self.prefix is not None:
                    if path != self.prefix:
                        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        continue
                    path = "/"
                upstream.request(method, path, body, headers)
                response = upstream.getresponse()
                data = response.read()
                status, kind = response.status, response.getheader("Content-Type", "")
                if self._rewrite(operation):
                    status, data = self.status, self.answer
                conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\n"
                             f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        upstream.close()
