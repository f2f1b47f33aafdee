"""`run` started while PostgreSQL or SQS is unreachable waits for it instead of exiting (an exit
would put the replica into an orchestrator's crash-loop back-off after the outage), unready and
quiet, and begins committing within 2 s of the dependency's return. What no wait heals still
exits at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.faultproxy import FaultProxy
from tests.integration.stack import (
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
MESSAGES = 300
OUTAGE_SECONDS = 12


def answer(port: int, path: str) -> int:
    """The status of path, 0 while nothing listens yet."""
    try:
        return http_get(port, path)[0]
    except OSError:
        return 0


@pytest.mark.parametrize("dependency", ["postgres", "sqs"])
def test_run_started_during_an_outage_waits_and_begins_on_its_return(
        stack: Stack, tmp_path: Path, dependency: str) -> None:
    """Postgres: through a proxy that refuses every connection until restored. SQS: the
    worker is pointed at a port nothing listens on; a forwarding proxy is started there later."""
    stack.cli("init-db")
    stack.send(unique_bodies(MESSAGES))
    http_port = free_port()
    log = tmp_path / "worker.log"
    if dependency == "postgres":
        proxy: FaultProxy | None = FaultProxy(5432)
        proxy.cut()
        through = {"LOGIN_ETL_DATABASE_URL": proxy.url_for(stack.database_url)}
        sqs_port = 0
    else:
        proxy = None
        sqs_port = free_port()
        through = {"LOGIN_ETL_QUEUE_URL": FaultProxy.url_for_port(stack.queue_url, sqs_port)}
    env = stack.env(LOGIN_ETL_HTTP_PORT=str(http_port), **{**FAST, **through})
    worker = stack.start(env=env, log=log)
    try:
        wait_until(lambda: answer(http_port, "/readyz") == 503, 30, what="unready")
        assert answer(http_port, "/healthz") == 200, "waiting is no reason to restart"
        time.sleep(OUTAGE_SECONDS)
        assert worker.poll() is None, "an unreachable dependency at start must not end run"
        assert stack.count_rows() == 0
        waiting = [e for e in log_events(log) if e["event"] == "waiting_for_dependency"]
        if proxy is not None:
            proxy.restore()
        else:
            proxy = FaultProxy(4566, port=sqs_port)
        back = time.monotonic()
        wait_until(lambda: stack.count_rows() > 0, 30, interval=0.05, what="first commit")
        first_commit = time.monotonic() - back
        wait_until(lambda: stack.count_rows() == MESSAGES, 60, what="all rows")
        wait_until(lambda: http_get(http_port, "/readyz")[0] == 200, 20, what="ready")
        code, _ = stop(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
        if proxy is not None:
            proxy.close()
    print(f"  {dependency} unreachable at start for {OUTAGE_SECONDS}s: "
          f"{len(waiting)} waiting lines, first commit {first_commit:.2f}s after its return")
    assert code == 0
    # One line per 10 s, the first at once.
    assert 1 <= len(waiting) <= 2 and {e["dependency"] for e in waiting} == {dependency}
    assert first_commit < RECOVERY_SECONDS + RECOVERY_TOLERANCE
    assert_exactly_once(stack, MESSAGES)


@pytest.mark.parametrize(("env", "fragment", "code"), [
    ({"LOGIN_ETL_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/no_such_db_x"},
     "the database does not exist", 1),
    ({"LOGIN_ETL_DATABASE_URL": "postgresql://no_such_role_x@127.0.0.1:5432/postgres"},
     "the role does not exist", 1),
    ({"LOGIN_ETL_QUEUE_URL": "http://127.0.0.1:4566/000000000000/no-such-queue-x",
      "LOGIN_ETL_DLQ_URL": "http://127.0.0.1:4566/000000000000/no-such-queue-x-dlq"},
     "queue does not exist", 2),
], ids=["no-database", "no-role", "no-queue"])
def test_what_no_wait_heals_still_exits_at_once(stack: Stack, env: dict[str, str],
                                                fragment: str, code: int) -> None:
    started = time.monotonic()
    result = stack.cli("run", env=stack.env(**env), check=False, timeout=60)
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 10
