"""The series the alert rules read are kept fresh by the worker itself, with no status page
rendered: a gauge refreshed only when someone looks at the page cannot raise an alert."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from login_etl import ledger
from tests.integration.stack import Stack, end, free_port, http_get, log_events, metric_sum, wait_until

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    status, text = http_get(port, "/metrics")
    assert status == 200
    return text


def ready(port: int) -> bool:
    try:
        return http_get(port, "/readyz", timeout=2)[0] == 200
    except OSError:
        return False


@contextlib.contextmanager
def role_that_cannot_maintain(stack: Stack) -> Iterator[str]:
    """The schema made, the last day ahead dropped, and a role that may read and write the
    ledger but not create in the schema, so its maintenance cannot make that day again: the
    role's database URL; the role is dropped on leaving."""
    stack.cli("init-db")
    stack.query(f"DROP TABLE {ledger.partition_name(ledger.today() + ledger.AHEAD_DAYS)}")
    role = f"etl_nomaint_{uuid.uuid4().hex[:8]}"
    stack.query(f"CREATE ROLE {role} LOGIN;"
                f"GRANT SELECT, INSERT, DELETE ON user_logins, login_etl_ledger TO {role};"
                f"GRANT SELECT ON login_etl_ledger_packed TO {role};"
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        yield stack.database_url.replace("postgres@", f"{role}@")
    finally:
        stack.query(f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_dlq_gauge_shows_three_rejects_within_30_s_without_the_page(
        stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    worker = stack.start(env=stack.env(LOGIN_ETL_HTTP_PORT=str(port)), log=tmp_path / "worker.log")
    try:
        wait_until(lambda: ready(port), 30, what="worker ready")
        assert metric_sum(scrape(port), "login_etl_queue_messages", queue="dlq",
                          state="visible") == 0
        stack.send(["not json 1", "not json 2", "not json 3"])
        wait_until(lambda: metric_sum(scrape(port), "login_etl_messages_total",
                                      outcome="rejected") == 3, 30, what="3 rejects")
        rejected_at = time.monotonic()
        assert stack.depth(dlq=True)["visible"] == 3
        # Only /metrics is read from here on (no /, no /status.json).
        wait_until(lambda: metric_sum(scrape(port), "login_etl_queue_messages", queue="dlq",
                                      state="visible") == 3,
                   30, interval=0.5, what="the DLQ gauge at 3")
        print(f"DLQ gauge at 3 {time.monotonic() - rejected_at:.1f} s after the third reject")
    finally:
        end(worker, 30)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_failed_ledger_maintenance_is_counted(stack: Stack, tmp_path: Path) -> None:
    """A role without CREATE cannot make the days ahead: housekeeping's maintenance fails,
    and /metrics says so (before, one log line was all)."""
    port = free_port()
    with role_that_cannot_maintain(stack) as url:
        worker = stack.start(env=stack.env(LOGIN_ETL_DATABASE_URL=url,
                                           LOGIN_ETL_HTTP_PORT=str(port)),
                             log=tmp_path / "worker.log")
        try:
            wait_until(lambda: ready(port), 30, what="worker ready")
            wait_until(lambda: metric_sum(scrape(port),
                                          "login_etl_ledger_maintenance_failures_total") >= 1,
                       30, interval=0.5, what="the maintenance failure counted")
        finally:
            end(worker, 30)
        assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
        assert any(e.get("event") == "ledger_prune_failed"
                   for e in log_events(tmp_path / "worker.log"))
