"""A database that turns read-only (a failover) is an outage: the worker pauses, drops the
read-only sessions, and commits again once the database is writable, losing and duplicating
nothing, sending nothing to the DLQ.

Read-only is made with ALTER DATABASE .. SET default_transaction_read_only, which new sessions
take up; a session opened meanwhile stays read-only after the database is writable again, as a
session to a demoted primary or a standby does.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.stack import (
    ADMIN_DSN,
    Stack,
    free_port,
    http_get,
    log_events,
    unique_bodies,
    wait_until,
)
from tests.integration.test_faults import (
    FAST,
    RECOVERY_SECONDS,
    RECOVERY_TOLERANCE,
    assert_exactly_once,
    stop,
)

pytestmark = pytest.mark.slow
MESSAGES = 5000
READ_ONLY_SECONDS = 15


def set_read_only(database: str, on: bool, *, cut: bool) -> int:
    """Turn the database read-only (or back) for new sessions; `cut` also ends its sessions,
    so that the worker's next ones take the new setting. The sessions cut, counted."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = "
                     f"{'on' if on else 'off'}")
        if not cut:
            return 0
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = %s AND pid <> pg_backend_pid()",
                            (database,)).fetchall()
        return len(rows)


@pytest.mark.parametrize("cut_at_return", [False, True], ids=["sessions-kept", "sessions-cut"])
def test_a_read_only_database_is_an_outage_not_a_refusal(stack: Stack, tmp_path: Path,
                                                         cut_at_return: bool) -> None:
    """Read-only for 15 s at 30 % of 5,000 messages (its sessions cut, the new ones
    read-only), then writable again, with its read-only sessions left open or cut: no exit,
    no DLQ entry, a commit within RECOVERY_SECONDS of the return, every message stored once."""
    database = stack.database_url.rsplit("/", 1)[1]
    port = free_port()
    log = tmp_path / "worker.log"
    stack.send(unique_bodies(MESSAGES), threads=8)
    env = stack.env(LOGIN_ETL_HTTP_PORT=str(port), LOGIN_ETL_BATCH_SIZE="100",
                    **{**FAST, "LOGIN_ETL_VISIBILITY_TIMEOUT": "10"})
    worker = stack.start(env=env, log=log)
    try:
        wait_until(lambda: stack.count_rows() >= MESSAGES * 0.3, 120, interval=0.05,
                   what="30 % stored")
        set_read_only(database, True, cut=True)
        started = time.monotonic()
        wait_until(lambda: http_get(port, "/readyz")[0] == 503, 30, what="not ready")
        time.sleep(max(0.0, READ_ONLY_SECONDS - (time.monotonic() - started)))
        assert worker.poll() is None, "a read-only database must not stop the worker"
        rows_at_return = stack.count_rows()
        set_read_only(database, False, cut=cut_at_return)
        returned = time.monotonic()
        assert rows_at_return < MESSAGES, "nothing left to commit after the read-only spell"
        wait_until(lambda: stack.count_rows() > rows_at_return, 30, interval=0.05,
                   what="first commit after the return")
        recovered = time.monotonic() - returned
        wait_until(lambda: stack.count_rows() == MESSAGES, 120, what="all rows")
        wait_until(lambda: sum(stack.depth().values()) == 0, 60, what="queue empty")
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 30, what="ready again")
        code, _ = stop(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
    events = log_events(log)
    rejected = sum(e.get("rejected", 0) for e in events if e["event"] == "batch_settled")
    print(f"  read-only {READ_ONLY_SECONDS}s at {rows_at_return} rows; first commit "
          f"{recovered:.2f}s after the return (sessions {'cut' if cut_at_return else 'kept'})")
    assert code == 0
    assert not any(e["event"] == "worker_halted" for e in events)
    assert rejected == 0 and stack.depth(dlq=True)["visible"] == 0
    assert recovered < RECOVERY_SECONDS + RECOVERY_TOLERANCE
    assert_exactly_once(stack, MESSAGES)
