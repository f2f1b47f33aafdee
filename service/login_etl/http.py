"""The service's HTTP port: /metrics, /healthz (the loop is alive), /readyz (DB and SQS reachable),
and the status page (/ and /status.json, see statuspage.py).

Read-only and dependency-free (http.server in a daemon thread): a probe must never be able to
change data or block the worker. Only GET and HEAD are answered; any other method gets 405.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from login_etl import metrics
from login_etl.worker import Health

if TYPE_CHECKING:
    from login_etl.statuspage import StatusPage

STALL_SECONDS = 60.0

Route = Callable[[], tuple[int, str, bytes]]


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def routes(health: Health, db_ping: Callable[[], bool],
           status: StatusPage | None = None) -> dict[str, Route]:
    """The probes and metrics, plus `/` and `/status.json` when a status page is given."""
    def healthz() -> tuple[int, str, bytes]:
        stalled = health.stalled(STALL_SECONDS)
        return _json(503 if stalled else 200, {"status": "stalled" if stalled else "ok",
                                               "stalled": stalled})

    def readyz() -> tuple[int, str, bytes]:
        db = db_ping()
        metrics.DEPENDENCY_UP.labels("postgres").set(int(db))
        metrics.DEPENDENCY_UP.labels("sqs").set(int(health.sqs_ok))
        ready = db and health.sqs_ok
        return _json(200 if ready else 503, {"status": "ready" if ready else "not_ready",
                                             "postgres": db, "sqs": health.sqs_ok})

    def metrics_page() -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest()

    table = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_page}
    if status is not None:
        table.update(status.routes())
    return table


def serve(port: int, table: dict[str, Route], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._respond(head=False)

        def do_HEAD(self) -> None:
            self._respond(head=True)

        def _respond(self, head: bool) -> None:
            route = table.get(self.path.split("?", 1)[0])
            try:
                status, content_type, body = (route() if route else
                                              _json(404, {"error": "not found"}))
            except Exception as exc:  # a failing page must answer, not drop the connection
                status, content_type, body = _json(500, {"error": type(exc).__name__})
            self._send(status, content_type, body, head=head)

        def _not_allowed(self) -> None:
            """Nothing on this port changes data: refuse every method but GET and HEAD."""
            self._send(405, *_json(405, {"error": "method not allowed"})[1:],
                       extra={"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed

        def _send(self, status: int, content_type: str, body: bytes,
                  extra: dict[str, str] | None = None, head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds are not worth a log line each."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
