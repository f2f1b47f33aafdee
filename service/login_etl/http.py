"""The service's HTTP port: /metrics, /healthz (the loop is alive), /readyz (DB and SQS reachable).

Read-only and dependency-free (http.server in a daemon thread): a probe must never be able to
change data or block the worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from login_etl import metrics
from login_etl.worker import Health

STALL_SECONDS = 60.0

Route = Callable[[], tuple[int, str, bytes]]


def _json(status: int, body: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()


def routes(health: Health, db_ping: Callable[[], bool]) -> dict[str, Route]:
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

    return {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics_page}


def serve(port: int, table: dict[str, Route], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = table.get(self.path.split("?", 1)[0])
            status, content_type, body = route() if route else _json(404, {"error": "not found"})
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds are not worth a log line each."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
