"""The request side of the fake HTTP servers the SQS client's unit tests talk to.

Each test scripts its own answers; reading a request off a keep-alive connection and
accepting connections on a thread each are the same everywhere, so they live here.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import BinaryIO


def read_request(reader: BinaryIO) -> bytes | None:
    """One request (head and body) off a connection; None once the client has closed it.

    The client always frames its requests with Content-Length, so that is all this reads."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline()
        if not line:
            return None
        head += line
    length = next(int(h.split(b":", 1)[1]) for h in head.split(b"\r\n")
                  if h.lower().startswith(b"content-length:"))
    return head + reader.read(length)


def serve_forever(listener: socket.socket, serve: Callable[[socket.socket], None]) -> list[int]:
    """Accepts on a daemon thread, each connection served on a thread of its own, until the
    listener is closed; returns the count of connections accepted (a one-element list the
    thread updates), which tells whether the client reused a connection."""
    accepted = [0]

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted[0] += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return accepted
