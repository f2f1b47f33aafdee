"""/healthz answers for the loop only, /readyz for the dependencies: an outage is not a restart."""

from __future__ import annotations

import json
import time

from login_etl.http import STALL_SECONDS, routes
from login_etl.worker import Health


def call(table: dict, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    status, _, body = table[path]()
    return status, json.loads(body)


def test_healthz_fails_when_a_thread_stops_ticking() -> None:
    health = Health()
    health.tick("batcher")
    health.tick("poller-0")
    table = routes(health, db_ping=lambda: True)
    assert call(table, "/healthz") == (200, {"status": "ok", "stalled": []})
    health.ticks["poller-0"] = time.monotonic() - STALL_SECONDS - 1
    assert call(table, "/healthz") == (503, {"status": "stalled", "stalled": ["poller-0"]})


def test_readyz_follows_postgres_and_sqs_but_healthz_does_not() -> None:
    health = Health()
    health.tick("batcher")
    db_up = [False]
    table = routes(health, db_ping=lambda: db_up[0])
    assert call(table, "/readyz")[0] == 503
    assert call(table, "/healthz")[0] == 200
    db_up[0] = True
    assert call(table, "/readyz") == (200, {"status": "ready", "postgres": True, "sqs": True})
    health.sqs_ok = False
    assert call(table, "/readyz")[1]["sqs"] is False and call(table, "/readyz")[0] == 503
    assert call(table, "/healthz")[0] == 200


def test_metrics_page_is_prometheus_text() -> None:
    status, content_type, body = routes(Health(), lambda: True)["/metrics"]()
    assert status == 200 and content_type.startswith("text/plain")
    assert b"login_etl_messages_total" in body
