"""Nothing lost, nothing duplicated: crashes, outages, shutdowns and replicas, on the real stack.

Each scenario prints its figures (sent, stored, DLQ, duplicates, time to recover) so a CI log
shows them; `pytest -s` to see them locally.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import both_clients
from tests.integration.faultproxy import FaultProxy
from tests.integration.stack import (
    Stack,
    free_port,
    http_get,
    log_events,
    metric_sum,
    sample_bodies,
    unique_bodies,
    wait_until,
)

pytestmark = pytest.mark.slow
FAST = {"LOGIN_ETL_VISIBILITY_TIMEOUT": "5", "LOGIN_ETL_BATCH_WINDOW_MS": "50"}


def drain(stack: Stack, deadline: float = 120) -> None:
    """Run --until-empty until the queue holds nothing, waiting out dead workers' visibility."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        stack.cli("run", "--until-empty", env=stack.env(**FAST))
        depth = stack.depth()
        if depth["visible"] == depth["in_flight"] == depth["delayed"] == 0:
            return
        time.sleep(1)
    raise AssertionError(f"queue not drained: {stack.depth()}")


def assert_exactly_once(stack: Stack, expected: int) -> None:
    rows, dups = stack.count_rows(), stack.duplicate_rows()
    ledger = stack.query("SELECT count(*) FROM login_etl_ledger")[0][0]
    print(f"  stored={rows} duplicates={dups} ledger={ledger} dlq={stack.depth(dlq=True)}")
    assert dups == 0
    assert rows == expected
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def stop(worker: subprocess.Popen[str], timeout: float = 30) -> tuple[int, float]:
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(timeout=timeout)
    return code, time.monotonic() - started


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(stack: Stack, tmp_path: Path) -> None:
    bodies = unique_bodies(3000)
    stack.send(bodies)
    rng = random.Random(int(os.environ.get("LOGIN_ETL_TEST_SEED", time.time())))
    kills = 0
    for round_ in range(4):
        worker = stack.start(env=stack.env(**FAST), log=tmp_path / f"w{round_}.log")
        time.sleep(rng.uniform(0.8, 2.5))
        if worker.poll() is None:
            worker.kill()  # SIGKILL: no cleanup, no release, mid-batch
            kills += 1
        worker.wait(timeout=10)
        print(f"  kill {round_}: rows so far {stack.count_rows()}")
    assert kills >= 3
    drain(stack)
    print(f"  sent=3000 kills={kills}")
    assert_exactly_once(stack, 3000)


@both_clients
def test_sigterm_drains_and_exits_0_within_the_bound(stack: Stack, tmp_path: Path) -> None:
    stack.send(unique_bodies(3000))
    log = tmp_path / "worker.log"
    worker = stack.start(env=stack.env(LOGIN_ETL_SHUTDOWN_TIMEOUT="20"), log=log)
    wait_until(lambda: stack.count_rows() >= 300, 60, what="first rows")
    code, seconds = stop(worker)
    print(f"  SIGTERM after {stack.count_rows()} rows: exit {code} in {seconds:.2f}s")
    assert code == 0
    assert seconds < 20
    # Held messages were released (visibility 0), not left invisible for the 60 s timeout.
    assert stack.depth()["in_flight"] == 0
    events = {e["event"] for e in log_events(log)}
    assert {"signal_received", "worker_stopping", "worker_stopped"} <= events
    drain(stack)
    assert_exactly_once(stack, 3000)


# After a dependency returns, the worker commits again within this bound, every time; the
# tolerance covers this test's own polling of the table.
RECOVERY_SECONDS = 2.0
RECOVERY_TOLERANCE = 0.3


# The SQS outage with each client (the boto3 one reports it with its own exceptions).
@pytest.mark.parametrize(("dependency", "sqs_client_kind"),
                         [("postgres", None), ("sqs", "lean"), ("sqs", "boto3")],
                         indirect=["sqs_client_kind"])
def test_outage_pauses_and_resumes(stack: Stack, tmp_path: Path, dependency: str) -> None:
    """The dependency vanishes mid-run (a TCP proxy cuts it) and comes back 15 s later: the
    worker commits again within RECOVERY_SECONDS of its return."""
    proxy = FaultProxy(5432 if dependency == "postgres" else 4566)
    port = free_port()
    log = tmp_path / "worker.log"
    stack.send(unique_bodies(2000))
    through_proxy = ({"LOGIN_ETL_DATABASE_URL": proxy.url_for(stack.database_url)}
                     if dependency == "postgres"
                     else {"LOGIN_ETL_QUEUE_URL": proxy.url_for(stack.queue_url)})
    env = stack.env(LOGIN_ETL_HTTP_PORT=str(port), LOGIN_ETL_BATCH_SIZE="100",
                    **{**FAST, "LOGIN_ETL_VISIBILITY_TIMEOUT": "10", **through_proxy})
    worker = stack.start(env=env, log=log)
    try:
        wait_until(lambda: stack.count_rows() > 0, 60, what="first rows")
        proxy.cut()
        cut_at = time.monotonic()
        lines_before = len(log.read_text().splitlines())
        wait_until(lambda: http_get(port, "/readyz")[0] == 503, 30, what="not ready")
        assert http_get(port, "/healthz")[0] == 200, "an outage is not a reason to restart"
        time.sleep(max(0.0, 15 - (time.monotonic() - cut_at)))
        lines_during = len(log.read_text().splitlines()) - lines_before
        assert worker.poll() is None, "an outage must not crash the worker"
        rows_at_restore = stack.count_rows()
        proxy.restore()
        restored_at = time.monotonic()
        assert rows_at_restore < 2000, "nothing left to commit after the outage"
        wait_until(lambda: stack.count_rows() > rows_at_restore, 60, interval=0.05,
                   what="first commit after restore")
        recovered = time.monotonic() - restored_at
        wait_until(lambda: stack.count_rows() == 2000, 90, what="all rows")
        wait_until(lambda: sum(stack.depth().values()) == 0, 60, what="queue empty")
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 30, what="ready again")
        retries = metric_sum(http_get(port, "/metrics")[1], "login_etl_retries_total")
        code, _ = stop(worker)
    finally:
        if worker.poll() is None:
            worker.kill()
        proxy.close()
    print(f"  {dependency} outage {restored_at - cut_at:.1f}s: {lines_during} log lines during "
          f"it, rows at restore {rows_at_restore}, first commit {recovered:.2f}s after restore, "
          f"retries={retries:.0f}")
    assert code == 0
    assert lines_during < 40, "the worker must not spin or flood the log during an outage"
    assert retries > 0
    assert recovered < RECOVERY_SECONDS + RECOVERY_TOLERANCE
    assert_exactly_once(stack, 2000)


def test_four_workers_on_20000_messages(stack: Stack, tmp_path: Path) -> None:
    stack.send(unique_bodies(20_000), threads=8)
    started = time.monotonic()
    workers = [stack.start("--until-empty", env=stack.env(LOGIN_ETL_POLLERS="2"),
                           log=tmp_path / f"w{i}.log") for i in range(4)]
    codes = [w.wait(timeout=300) for w in workers]
    seconds = time.monotonic() - started
    assert codes == [0, 0, 0, 0]
    drain(stack)
    stored = [sum(e.get("stored", 0) for e in log_events(tmp_path / f"w{i}.log")
                  if e["event"] == "batch_settled") for i in range(4)]
    print(f"  4 workers, 20000 messages in {seconds:.1f}s; per worker stored={stored}")
    assert_exactly_once(stack, 20_000)


def test_visibility_heartbeat_keeps_a_slow_batch_from_other_replicas(stack: Stack,
                                                                    tmp_path: Path) -> None:
    """A batch stuck 3x longer than the visibility timeout is not redelivered to a replica."""
    stack.cli("init-db")
    stack.send(unique_bodies(200))
    env = stack.env(LOGIN_ETL_VISIBILITY_TIMEOUT="6")
    with stack.connect() as conn:
        conn.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        first = stack.start(env=env, log=tmp_path / "a.log")
        wait_until(lambda: stack.depth()["in_flight"] > 0, 30, what="first worker holding")
        time.sleep(2)
        second = stack.start(env=env, log=tmp_path / "b.log")
        time.sleep(16)  # well past the 6 s timeout
        conn.rollback()
    wait_until(lambda: stack.count_rows() == 200, 60, what="rows after the lock")
    for worker in (first, second):
        assert stop(worker)[0] == 0
    events = log_events(tmp_path / "a.log") + log_events(tmp_path / "b.log")
    extended = sum(e["messages"] for e in events if e["event"] == "visibility_extended")
    duplicates = sum(e.get("duplicates", 0) for e in events if e["event"] == "batch_settled")
    print(f"  visibility extended for {extended} message-times, duplicates={duplicates}")
    assert extended > 0
    assert duplicates == 0
    assert_exactly_once(stack, 200)


@both_clients
def test_deleted_queue_is_reported_not_retried_forever(stack: Stack, tmp_path: Path) -> None:
    worker = stack.start(env=stack.env(LOGIN_ETL_WAIT_TIME_SECONDS="1"), log=tmp_path / "w.log")
    wait_until(lambda: '"worker_started"' in (tmp_path / "w.log").read_text(), 30,
               what="worker started")
    stack.sqs.delete_queue(QueueUrl=stack.queue_url)
    code = worker.wait(timeout=60)
    text = (tmp_path / "w.log").read_text()
    assert code == 1
    assert "will not heal" in text and "Traceback" not in text


def _seal(stack: Stack, ledger_id: str) -> str:
    from login_etl.masking import Masker
    from login_etl.settings import Settings

    return Masker(Settings.from_env(stack.env()).masking_keys).seal(ledger_id)


def test_dlq_redrive_is_counted_and_idempotent(stack: Stack) -> None:
    good = unique_bodies(25, prefix="fixed")
    stack.send(good, queue_url=stack.dlq_url)  # as if moved there by SQS, and fixed since
    result = stack.cli("dlq", "redrive")
    assert "moved 25 messages" in result.stdout
    assert stack.depth(dlq=True)["visible"] == 0
    # A redrive interrupted between its send and its delete sends a copy twice.
    message_id = "an-id-from-the-dlq"
    for _ in range(2):
        stack.sqs.send_message(
            QueueUrl=stack.queue_url, MessageBody=unique_bodies(1, prefix="twice")[0],
            MessageAttributes={"login_etl_redrive_of": {
                "DataType": "String", "StringValue": _seal(stack, message_id)}})
    stack.cli("run", "--until-empty")
    assert_exactly_once(stack, 26)


def test_unsealed_redrive_marks_from_producers_are_ignored(stack: Stack) -> None:
    """A producer cannot make distinct messages share a ledger id (and be dropped as repeats)."""
    for i, body in enumerate(unique_bodies(3, prefix="forged")):
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body, MessageAttributes={
            "login_etl_redrive_of": {"DataType": "String", "StringValue": "same-id"},
            "login_etl_origin": {"DataType": "String", "StringValue": f"x|{i}|forged"}})
    stack.cli("run", "--until-empty")
    assert_exactly_once(stack, 3)


def test_redrive_of_rejects_makes_one_row_each_and_skips_what_was_stored(stack: Stack) -> None:
    """Two DLQ copies of one reject (a hand-off repeated by a crash) -> one row after redrive;
    a stored message that SQS moved to the DLQ (its delete kept failing) -> no second row."""
    bad = json.dumps({"user_id": "later-fixed", "app_version": "1.2.3", "device_type": "ios",
                      "ip": "10.0.0.1", "device_id": "d-1", "locale": None, "oops": 1})
    stack.send(unique_bodies(5, prefix="stored"))
    stack.cli("run", "--until-empty")
    stored_ids = [r[0] for r in stack.query("SELECT coalesce(id::text, text_id) FROM login_etl_ledger")]
    origin = _seal(stack, "original-reject-id")
    for _ in range(2):  # the same reject handed off twice
        stack.sqs.send_message(QueueUrl=stack.dlq_url, MessageBody=bad, MessageAttributes={
            "reason": {"DataType": "String", "StringValue": "invalid_ip"},
            "login_etl_origin": {"DataType": "String", "StringValue": origin}})
    # A stored message that SQS itself moved to the DLQ keeps its id: simulate with its seal.
    stack.sqs.send_message(QueueUrl=stack.dlq_url, MessageBody=unique_bodies(1, "stored")[0],
                           MessageAttributes={"login_etl_redrive_of": {
                               "DataType": "String", "StringValue": _seal(stack, stored_ids[0])}})
    assert "moved 3 messages" in stack.cli("dlq", "redrive").stdout
    run = stack.cli("run", "--until-empty")
    stopped = [json.loads(line) for line in run.stderr.splitlines() if '"worker_stopped"' in line]
    assert stopped[0]["stored"] == 1 and stopped[0]["duplicates"] == 2
    assert_exactly_once(stack, 6)


def test_redrive_stops_at_the_dlq_depth_while_bad_messages_come_back(stack: Stack,
                                                                      tmp_path: Path) -> None:
    stack.send(["not json", "[]", '{"user_id": 1}'], queue_url=stack.dlq_url)
    worker = stack.start(env=stack.env(LOGIN_ETL_WAIT_TIME_SECONDS="1"), log=tmp_path / "w.log")
    try:
        result = stack.cli("dlq", "redrive", timeout=60)
        assert "moved 3 messages" in result.stdout
        wait_until(lambda: stack.depth(dlq=True)["visible"] == 3, 30, what="rejects back")
    finally:
        assert stop(worker)[0] == 0


def test_keep_messages_daemon_never_pushes_messages_to_the_dlq(stack: Stack,
                                                              tmp_path: Path) -> None:
    """Kept messages stay invisible while the daemon runs (the heartbeat extends them), so
    they are not received again and again until SQS moves them to the DLQ."""
    stack.send(unique_bodies(50))
    log = tmp_path / "w.log"
    worker = stack.start("--keep-messages", env=stack.env(LOGIN_ETL_VISIBILITY_TIMEOUT="5"),
                         log=log)
    wait_until(lambda: stack.count_rows() == 50, 60, what="rows")
    time.sleep(14)  # almost 3 visibility timeouts
    code, _ = stop(worker)
    assert code == 0
    events = log_events(log)
    assert sum(e.get("duplicates", 0) for e in events if e["event"] == "batch_settled") == 0
    assert any(e["event"] == "visibility_extended" for e in events)
    assert stack.depth(dlq=True)["visible"] == 0
    wait_until(lambda: stack.depth()["visible"] == 50, 10, what="kept messages released")


@both_clients
def test_dlq_gone_mid_run_halts_and_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    worker = stack.start(env=stack.env(LOGIN_ETL_WAIT_TIME_SECONDS="1"), log=log)
    wait_until(lambda: '"worker_started"' in log.read_text(), 30, what="worker started")
    stack.sqs.delete_queue(QueueUrl=stack.dlq_url)
    stack.send(sample_bodies())
    assert worker.wait(timeout=60) == 1
    assert "no wait will fix it" in log.read_text() and "Traceback" not in log.read_text()
    wait_until(lambda: stack.depth()["in_flight"] == 0, 10, what="held messages released")
    assert stack.count_rows() + stack.depth()["visible"] == 100


def test_sigterm_while_the_database_is_stuck_exits_within_the_bound(stack: Stack,
                                                                   tmp_path: Path) -> None:
    stack.cli("init-db")
    stack.send(unique_bodies(300))
    with stack.connect() as conn:
        conn.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        worker = stack.start(env=stack.env(LOGIN_ETL_SHUTDOWN_TIMEOUT="10"),
                             log=tmp_path / "w.log")
        wait_until(lambda: stack.depth()["in_flight"] > 0, 30, what="worker holding")
        time.sleep(2)
        code, seconds = stop(worker)
        print(f"  SIGTERM with the table locked: exit {code} in {seconds:.1f}s")
        assert code == 0 and seconds < 10  # LOGIN_ETL_SHUTDOWN_TIMEOUT
        assert stack.depth()["in_flight"] == 0, "held messages are released, not abandoned"
        conn.rollback()
    drain(stack)
    assert_exactly_once(stack, 300)
