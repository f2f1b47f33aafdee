"""/healthz answers for the loop only, /readyz for the dependencies: an outage is not a restart.
Both answer from the state the worker keeps, never from a dependency."""

from __future__ import annotations

import json
import time

from login_etl import health as health_module
from login_etl.health import Health
from login_etl.http import STALL_SECONDS, routes


def call(table: dict, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    status, _, body = table[path]()
    return status, json.loads(body)


def test_healthz_fails_when_a_thread_stops_ticking() -> None:
    health = Health()
    health.tick("batcher")
    health.tick("poller-0")
    table = routes(health)
    assert call(table, "/healthz") == (200, {"status": "ok", "stalled": []})
    health.ticks["poller-0"] = time.monotonic() - STALL_SECONDS - 1
    assert call(table, "/healthz") == (503, {"status": "stalled", "stalled": ["poller-0"]})


def test_readyz_follows_postgres_and_sqs_but_healthz_does_not() -> None:
    health = Health()
    health.tick("batcher")
    table = routes(health)
    health.db_ok = False
    assert call(table, "/readyz")[0] == 503
    assert call(table, "/healthz")[0] == 200
    health.db_ok = True
    status, body = call(table, "/readyz")
    assert (status, body["status"], body["postgres"], body["sqs"]) == (200, "ready", True, True)
    assert body["seconds_since_success"]["postgres"] < 1
    health.sqs_ok = False
    assert call(table, "/readyz")[1]["sqs"] is False and call(table, "/readyz")[0] == 503
    assert call(table, "/healthz")[0] == 200


def test_a_database_success_too_long_ago_is_not_ready() -> None:
    """No commit and no ping for DB_STALE_SECONDS: the flag alone is not believed."""
    health = Health()
    table = routes(health)
    assert call(table, "/readyz")[0] == 200
    assert not health.db_ping_due()
    health.db_success_at -= health_module.DB_PING_SECONDS
    assert health.db_ping_due() and call(table, "/readyz")[0] == 200
    health.db_success_at -= health_module.DB_STALE_SECONDS
    status, body = call(table, "/readyz")
    assert status == 503 and body["postgres"] is False
    assert body["seconds_since_success"]["postgres"] >= health_module.DB_STALE_SECONDS
    health.db_ok = True
    assert call(table, "/readyz")[0] == 200


def test_metrics_page_is_prometheus_text() -> None:
    status, content_type, body = routes(Health())["/metrics"]()
    assert status == 200 and content_type.startswith("text/plain")
    assert b"login_etl_messages_total" in body
