"""The service's HTTP port: /metrics, /healthz (the loop is alive), /readyz (DB and SQS reachable),
and the status page (/ and /status.json, see the statuspage package).

Read-only: a probe must never be able to change data or block the worker. Only GET and HEAD
are answered; any other method gets 405.

Bounded whatever clients do: one selector thread owns every connection, reads request heads
without blocking and answers the probes and /metrics itself (they read memory only; the
metrics page is rendered at most once per METRICS_MAX_AGE_SECONDS); the status page's routes,
which may read SQS and Postgres on a cache miss, run on PAGE_THREADS threads. A connection
gets at most REQUESTS_PER_TURN answers before every other connection has had its turn, so a
pipelining client cannot hold the probes back. At most MAX_CONNECTIONS are open and a new one
always gets a slot (a waiting connection nearest its deadline is closed for it, else the one
holding its slot longest), a request head must arrive within READ_TIMEOUT_SECONDS of the
connection opening or of the previous answer (so idle and trickling connections are closed),
and an answer the client does not take within WRITE_TIMEOUT_SECONDS is dropped with its
connection. A request head that cannot be framed for sure (httphead.py: too large, a malformed
header line, repeated or conflicting framing headers) is answered with an error and a close.
"""

from __future__ import annotations

import contextlib
import json
import queue
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from login_etl import httphead, logs, metrics
from login_etl.health import Health

if TYPE_CHECKING:
    from login_etl.statuspage import StatusPage

log = logs.get("login_etl.http")
STALL_SECONDS = 60.0
MAX_CONNECTIONS = 256
READ_TIMEOUT_SECONDS = 10.0
WRITE_TIMEOUT_SECONDS = 10.0
PAGE_THREADS = 2
REQUESTS_PER_TURN = 4
METRICS_MAX_AGE_SECONDS = 0.2
# Answered on the selector thread: they read the worker's memory only, never a dependency.
INLINE = frozenset({"/healthz", "/readyz", "/metrics"})

Route = Callable[[], tuple[int, str, bytes]]


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def routes(health: Health, status: StatusPage | None = None) -> dict[str, Route]:
    """The probes and metrics, plus `/` and `/status.json` when a status page is given."""
    def healthz() -> tuple[int, str, bytes]:
        stalled = health.stalled(STALL_SECONDS)
        return _json(503 if stalled else 200, {"status": "stalled" if stalled else "ok",
                                               "stalled": stalled})

    def readyz() -> tuple[int, str, bytes]:
        db, sqs = health.db_ready(), health.sqs_ok
        metrics.DEPENDENCY_UP.labels("postgres").set(int(db))
        metrics.DEPENDENCY_UP.labels("sqs").set(int(sqs))
        ready = db and sqs
        return _json(200 if ready else 503, {"status": "ready" if ready else "not_ready",
                                             "postgres": db, "sqs": sqs,
                                             "seconds_since_success": health.ages()})

    # (rendered at, page): the selector thread alone calls metrics_page
    rendered: list[Any] = [float("-inf"), b""]

    def metrics_page() -> tuple[int, str, bytes]:
        # A client asking for it as fast as it reads must not cost a rendering each time.
        now = time.monotonic()
        if now - rendered[0] >= METRICS_MAX_AGE_SECONDS:
            rendered[:] = [now, generate_latest()]
        return 200, CONTENT_TYPE_LATEST, rendered[1]

    table = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_page}
    if status is not None:
        table.update(status.routes())
    return table


def _run_route(route: Route) -> tuple[int, str, bytes]:
    try:
        return route()
    except Exception as exc:
        # A failing page must answer, not drop the connection.
        return _json(500, {"error": type(exc).__name__})


class _Conn:
    __slots__ = ("busy", "close_after", "closed", "deadline", "events", "inbuf", "opened",
                 "outbuf", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.opened = time.monotonic()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.deadline = deadline
        # On a page thread: no deadline and no reading until its answer is queued.
        self.busy = False
        self.close_after = False
        self.closed = False
        self.events = 0


class Server:
    """The port's listener, its selector thread and its page threads."""

    def __init__(self, host: str, port: int, table: dict[str, Route]) -> None:
        self.table = table
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.setblocking(False)
        self.server_address = self._listener.getsockname()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        self._conns: set[_Conn] = set()
        # Connections with more requests buffered than their turn answered (reading paused):
        # served again, in order, after the next select.
        self._backlog: dict[_Conn, None] = {}
        self._jobs: queue.Queue[tuple[_Conn, Route, bool, bool] | None] = queue.Queue()
        self._done: deque[tuple[_Conn, bytes, bool]] = deque()
        self._stopped = False
        # Daemon threads: a page stuck on a dependency must not hold the process at exit.
        self._threads = [threading.Thread(target=self._loop, name="http", daemon=True)]
        self._threads += [threading.Thread(target=self._page_worker, name=f"http-page-{i}",
                                           daemon=True) for i in range(PAGE_THREADS)]
        for thread in self._threads:
            thread.start()

    def shutdown(self) -> None:
        self._stopped = True
        self._wake()
        for _ in range(PAGE_THREADS):
            self._jobs.put(None)
        self._threads[0].join(5)

    def server_close(self) -> None:
        for conn in list(self._conns):
            self._close(conn)
        with contextlib.suppress(Exception):
            self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def open_connections(self) -> int:
        return len(self._conns)

    # -- the selector thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopped:
            timeout = self._expire(time.monotonic())
            for key, mask in self._selector.select(0 if self._backlog else timeout):
                if key.data is None:
                    self._accept()
                elif key.data is self._wake_r:
                    self._finish_pages()
                else:
                    conn: _Conn = key.data
                    try:
                        if mask & selectors.EVENT_WRITE and not conn.closed:
                            self._flush(conn)
                        if mask & selectors.EVENT_READ and not conn.closed:
                            self._read(conn)
                        self._serve(conn)
                    except Exception as exc:
                        # one connection's surprise must not end the port for all the others
                        log.warning("http_connection_failed", error=type(exc).__name__)
                        self._close(conn)
            backlog, self._backlog = self._backlog, {}
            for conn in backlog:
                try:
                    self._serve(conn)
                except Exception as exc:
                    log.warning("http_connection_failed", error=type(exc).__name__)
                    self._close(conn)

    def _expire(self, now: float) -> float:
        """Close connections past their deadline; the wait until the next one (at most 1 s)."""
        nearest = now + 1.0
        for conn in list(self._conns):
            if conn.busy:
                continue
            if conn.deadline <= now:
                self._close(conn)
            else:
                nearest = min(nearest, conn.deadline)
        return max(0.0, nearest - now)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # Out of descriptors or the like: what is open keeps being served.
                return
            if len(self._conns) >= MAX_CONNECTIONS and not self._evict():
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sock, time.monotonic() + READ_TIMEOUT_SECONDS)
            self._conns.add(conn)
            self._want(conn, selectors.EVENT_READ)

    def _evict(self) -> bool:
        """Make room for a new connection (a probe must always find a slot): close the waiting
        connection nearest its deadline, else the one that has held its slot longest (on a
        page thread or with an answer its client does not take)."""
        waiting = [c for c in self._conns if not c.busy and not c.outbuf]
        if waiting:
            self._close(min(waiting, key=lambda c: c.deadline))
        elif self._conns:
            self._close(min(self._conns, key=lambda c: c.opened))
        else:
            return False
        return True

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65_536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.inbuf += data

    def _serve(self, conn: _Conn) -> None:
        """Answer up to REQUESTS_PER_TURN complete requests of the buffer, one at a time, while
        answers leave at once. With more buffered, reading pauses and the connection waits in
        the backlog for its next turn, after every other ready connection's: the buffer stays
        bounded and no client holds the probes back."""
        for _ in range(REQUESTS_PER_TURN):
            if conn.closed or conn.busy or conn.outbuf:
                return
            if not self._request(conn):
                self._want(conn, selectors.EVENT_READ)
                return
            if conn.outbuf:
                self._flush(conn)
        if not (conn.closed or conn.busy or conn.outbuf):
            self._want(conn, 0)
            self._backlog[conn] = None

    def _request(self, conn: _Conn) -> bool:
        """Take the first request off the buffer and answer it (or hand it to a page thread);
        False when no whole request head is there yet."""
        request = httphead.take(conn.inbuf)
        if request is None:
            return False
        if isinstance(request, httphead.Refused):
            self._reply(conn, *_json(request.status, {"error": request.error}), head=False,
                        keep_alive=False)
            return True
        method, path, keep_alive = request.method, request.path, request.keep_alive
        if method not in ("GET", "HEAD"):
            self._reply(conn, *_json(405, {"error": "method not allowed"}), head=False,
                        keep_alive=keep_alive, extra={"Allow": "GET, HEAD"})
            return True
        route = self.table.get(path)
        if route is None:
            self._reply(conn, *_json(404, {"error": "not found"}), head=method == "HEAD",
                        keep_alive=keep_alive)
        elif path in INLINE:
            self._reply(conn, *_run_route(route), head=method == "HEAD", keep_alive=keep_alive)
        else:
            conn.busy = True
            self._want(conn, 0)
            self._jobs.put((conn, route, method == "HEAD", keep_alive))
        return True

    def _reply(self, conn: _Conn, status: int, content_type: str, body: bytes, *, head: bool,
               keep_alive: bool, extra: dict[str, str] | None = None) -> None:
        conn.outbuf += httphead.answer(status, content_type, body, head=head,
                                       keep_alive=keep_alive, extra=extra)
        conn.close_after = not keep_alive
        conn.deadline = time.monotonic() + WRITE_TIMEOUT_SECONDS

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        del conn.outbuf[:sent]
        if conn.outbuf:
            self._want(conn, selectors.EVENT_WRITE)
            return
        if conn.close_after:
            self._close(conn)
            return
        conn.deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        self._want(conn, selectors.EVENT_READ)

    def _want(self, conn: _Conn, events: int) -> None:
        if events == conn.events or conn.closed:
            return
        if not conn.events:
            self._selector.register(conn.sock, events, conn)
        elif not events:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: _Conn) -> None:
        if conn.closed:
            return
        with contextlib.suppress(Exception):
            self._want(conn, 0)
        conn.closed = True
        self._conns.discard(conn)
        conn.sock.close()

    # -- page threads ----------------------------------------------------------------------

    def _page_worker(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, route, head, keep_alive = job
            # closed meanwhile (evicted for a new connection, or the server stopping)
            status, content_type, body = ((0, "", b"") if conn.closed
                                          else _run_route(route))
            self._done.append((conn, httphead.answer(status, content_type, body, head=head,
                                                     keep_alive=keep_alive), keep_alive))
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _finish_pages(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(4096):
                pass
        while self._done:
            conn, answer, keep_alive = self._done.popleft()
            conn.busy = False
            if conn.closed:
                continue
            conn.outbuf += answer
            conn.close_after = not keep_alive
            conn.deadline = time.monotonic() + WRITE_TIMEOUT_SECONDS
            self._flush(conn)
            self._serve(conn)


def serve(port: int, table: dict[str, Route], host: str = "0.0.0.0") -> Server:
    return Server(host, port, table)
