"""The database bootstrap of docs/operations.md, run as written: a role with only those grants
creates the ledger (init-db), stores messages, and its hourly maintenance (days ahead, days
dropped, days packed) succeeds, so the grants are enough and LoginEtlLedgerMaintenanceFailing
stays quiet."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from tests.integration.stack import (
    ROOT,
    Stack,
    end,
    free_port,
    http_get,
    log_events,
    metric_sum,
    unique_bodies,
    wait_until,
)

pytestmark = pytest.mark.integration


def bootstrap_sql(role: str, database: str) -> str:
    """The SQL block of docs/operations.md with the role and database names of this test."""
    text = (ROOT / "docs" / "operations.md").read_text()
    (block,) = re.findall(r"```sql\n(.*?)```", text, re.S)
    return (block.replace("login_etl LOGIN", f"{role} LOGIN").replace("TO login_etl;", f"TO {role};")
            .replace("DATABASE logins", f'DATABASE "{database}"').replace("'...'", "'unused'"))


def test_the_documented_grants_run_the_worker_and_its_maintenance(stack: Stack,
                                                                   tmp_path: Path) -> None:
    database = stack.database_url.rsplit("/", 1)[1].split("?")[0]
    role = f"etl_least_{uuid.uuid4().hex[:8]}"
    # user_logins exists and belongs to someone else, as in production.
    stack.query("CREATE TABLE user_logins(user_id varchar(128), device_type varchar(32),"
                " masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32),"
                " app_version integer, create_date date)")
    sql = bootstrap_sql(role, database)
    assert f"TO {role};" in sql and "CREATE ROLE login_etl" not in sql
    stack.query(sql)
    try:
        url = stack.database_url.replace("postgres@", f"{role}@")
        stack.cli("init-db", env=stack.env(LOGIN_ETL_DATABASE_URL=url))
        owners = {owner for (owner,) in stack.query(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE 'login_etl_ledger%'")}
        assert owners == {role}
        stack.send(unique_bodies(50, prefix="least"))
        port = free_port()
        # init-db kept 15 days back: a retention of 1 day makes the first maintenance drop
        # days, and pack the ended ones, besides creating the days ahead.
        worker = stack.start(env=stack.env(LOGIN_ETL_DATABASE_URL=url,
                                           LOGIN_ETL_HTTP_PORT=str(port),
                                           LOGIN_ETL_LEDGER_RETENTION_DAYS="1"),
                             log=tmp_path / "worker.log")
        try:
            wait_until(lambda: stack.count_rows() == 50, 60, what="50 rows")
            wait_until(lambda: any(e.get("event") == "ledger_pruned"
                                   for e in log_events(tmp_path / "worker.log")),
                       30, what="a maintenance run that did something")
            status, text = http_get(port, "/metrics")
            assert status == 200
            assert metric_sum(text, "login_etl_ledger_maintenance_failing") == 0
            assert metric_sum(text, "login_etl_ledger_maintenance_failures_total") == 0
        finally:
            end(worker, 30)
        events = log_events(tmp_path / "worker.log")
        assert not [e for e in events if e.get("event") == "ledger_prune_failed"]
        pruned = [e for e in events if e.get("event") == "ledger_pruned"]
        assert pruned[0]["days"] > 0, pruned
        assert worker.returncode == 0
    finally:
        stack.query(f"DROP OWNED BY {role}; DROP ROLE {role}")
