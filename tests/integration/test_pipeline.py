"""The core pipeline against real LocalStack and real PostgreSQL."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

from tests.integration.conftest import both_clients
from tests.integration.stack import SAMPLE, Stack, sample_bodies, sample_events, wait_until


def _raw_pii(stack: Stack) -> list[str]:
    """Every ip and device_id of the sample that shows up anywhere in the table."""
    rows = stack.query("SELECT * FROM user_logins")
    cells = [str(c) for row in rows for c in row if c is not None]
    values = [e[k] for e in sample_events() for k in ("ip", "device_id") if k in e]
    return [v for v in values if any(v in cell for cell in cells)]


@both_clients
def test_sample_gives_99_rows_and_1_dlq_message(stack: Stack) -> None:
    stack.cli("load", str(SAMPLE))
    result = stack.cli("run", "--until-empty")
    assert stack.count_rows() == 99
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert _raw_pii(stack) == []
    assert stack.query("SELECT count(*) FROM user_logins WHERE locale IS NULL")[0][0] == 29
    assert stack.query("SELECT count(*) FROM user_logins WHERE masked_ip LIKE 'h1.%' "
                       "AND masked_device_id LIKE 'h1.%'")[0][0] == 99
    # app_version is encoded without collisions: every row matches its source text
    events = {e["user_id"]: e for e in sample_events() if "user_id" in e}
    for user_id, version in stack.query("SELECT user_id, app_version FROM user_logins"):
        major, minor, *patch = (int(p) for p in events[user_id]["app_version"].split("."))
        assert version == major * 1_000_000 + minor * 1_000 + (patch[0] if patch else 0)
    dlq = stack.receive_all(dlq=True)
    assert len(dlq) == 1
    assert json.loads(dlq[0]["Body"]) == {"foo": "oops_wrong_msg_type", "bar": "123"}
    assert dlq[0]["Body"] in sample_bodies(), "the DLQ body must be the message unchanged"
    assert dlq[0]["MessageAttributes"]["reason"]["StringValue"] == "missing_field:user_id"
    events_logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    settled = [e for e in events_logged if e["event"] == "batch_settled"]
    assert sum(e["stored"] for e in settled) == 99 and sum(e["rejected"] for e in settled) == 1
    for value in (v for e in sample_events() for k, v in e.items() if k in ("ip", "device_id")):
        assert value not in result.stderr


def test_create_date_is_the_date_sqs_received_the_message(stack: Stack) -> None:
    stack.send(sample_bodies()[:5])
    sent = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=1,
                                     VisibilityTimeout=0,
                                     MessageSystemAttributeNames=["SentTimestamp"])
    sent_ms = int(sent["Messages"][0]["Attributes"]["SentTimestamp"])
    stack.cli("run", "--until-empty")
    dates = stack.query("SELECT DISTINCT create_date FROM user_logins")
    expected = time.strftime("%Y-%m-%d", time.gmtime(sent_ms / 1000))
    assert [str(d[0]) for d in dates] == [expected]


def keep_messages_then_run(stack: Stack) -> dict[str, Any]:
    """The sample stored with --keep-messages, then run again on the redelivered messages:
    each stored once, the reject handed off once. The second run's worker_stopped event."""
    stack.send(sample_bodies())
    stack.cli("run", "--keep-messages", "--until-empty")
    assert stack.count_rows() == 99
    depth = stack.depth()
    assert depth["visible"] + depth["in_flight"] == 100, "keep-messages must not delete"
    wait_until(lambda: stack.depth()["visible"] == 100, 10, what="kept messages released")
    again = stack.cli("run", "--until-empty")
    assert stack.count_rows() == 99, "a redelivered message must never make a second row"
    assert stack.duplicate_rows() == 0
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert len(stack.receive_all(dlq=True)) == 1, "the reject is handed to the DLQ only once"
    stopped = [json.loads(line) for line in again.stderr.splitlines() if '"worker_stopped"' in line]
    assert stopped[0]["stored"] == 0
    return stopped[0]


@both_clients
def test_keep_messages_then_run_stores_each_message_once(stack: Stack) -> None:
    assert keep_messages_then_run(stack)["duplicates"] == 100


def test_same_content_under_new_message_ids_is_new_rows(stack: Stack) -> None:
    """Deduplication is by SQS message id (the previous test redelivers the same ids), not by
    content: ten users logging in again with identical fields are ten new rows."""
    stack.send(sample_bodies())
    stack.cli("run", "--until-empty")
    assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 100
    stack.send(sample_bodies()[:10])
    stack.cli("run", "--until-empty")
    assert stack.count_rows() == 109
    assert stack.query("SELECT count(*) FROM login_etl_ledger")[0][0] == 110


def _fail_commits(stack: Stack, action: str) -> None:
    """A deferred trigger that acts at COMMIT while the table fail_commits has a row."""
    stack.cli("init-db")
    stack.query(f"""
        CREATE TABLE fail_commits (on_ boolean);
        INSERT INTO fail_commits VALUES (true);
        CREATE FUNCTION at_commit() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN IF EXISTS (SELECT 1 FROM fail_commits) THEN {action}; END IF;
           RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON login_etl_ledger
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION at_commit();
    """)


def test_killed_connection_at_commit_deletes_nothing_and_loses_nothing(stack: Stack) -> None:
    """Delete-after-commit: while every COMMIT dies with its connection, the queue keeps
    every message; once commits succeed again each message is stored exactly once."""
    _fail_commits(stack, "PERFORM pg_terminate_backend(pg_backend_pid())")
    stack.send(sample_bodies())
    worker = stack.start("--until-empty")
    try:
        wait_until(lambda: stack.depth()["in_flight"] > 0, 15, what="worker holding messages")
        time.sleep(4)  # several commits killed
        depth = stack.depth()
        assert depth["visible"] + depth["in_flight"] == 100, depth
        assert stack.count_rows() == 0
        # The reject's hand-off precedes the COMMIT (so it cannot be lost) and is not repeated
        # by the retries of the same batch.
        assert stack.depth(dlq=True)["visible"] <= 1
        assert worker.poll() is None, "a lost connection is an outage, not a crash"
        stack.query("DELETE FROM fail_commits")
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert stack.count_rows() == 99 and stack.duplicate_rows() == 0
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert stack.depth(dlq=True)["visible"] == 1


def test_commit_refused_for_good_halts_and_deletes_nothing(stack: Stack, tmp_path: Path) -> None:
    """A COMMIT no retry can fix (here a trigger raising) stops the worker with one clear line;
    every message is back in the queue, and a run after the fix stores each exactly once."""
    _fail_commits(stack, "RAISE EXCEPTION 'refused by test'")
    stack.send(sample_bodies())
    log = tmp_path / "worker.log"
    worker = stack.start("--until-empty", log=log)
    assert worker.wait(timeout=60) == 1
    assert "no wait will fix it" in log.read_text() and "Traceback" not in log.read_text()
    depth = stack.depth()
    assert depth["visible"] == 100 and depth["in_flight"] == 0, "held messages are released"
    assert stack.count_rows() == 0
    stack.query("DELETE FROM fail_commits")
    stack.cli("run", "--until-empty")
    assert stack.count_rows() == 99 and stack.duplicate_rows() == 0
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    # The reject may be handed off once per process that tried (at least once, never lost).
    assert 1 <= stack.depth(dlq=True)["visible"] <= 2


def test_role_without_create_privilege_runs_on_an_existing_schema(stack: Stack) -> None:
    stack.cli("init-db")
    stack.query("DROP ROLE IF EXISTS etl_app_test; CREATE ROLE etl_app_test LOGIN;"
                "GRANT SELECT, INSERT, DELETE ON user_logins, login_etl_ledger TO etl_app_test;"
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        stack.send(sample_bodies())
        url = stack.database_url.replace("postgres@", "etl_app_test@")
        stack.cli("run", "--until-empty", env=stack.env(LOGIN_ETL_DATABASE_URL=url))
        assert stack.count_rows() == 99
    finally:
        stack.query("DROP OWNED BY etl_app_test; DROP ROLE etl_app_test")


@both_clients
def test_row_the_database_refuses_goes_to_the_dlq_alone(stack: Stack) -> None:
    """One bad row never fails its batch: it is isolated and handed to the DLQ with a reason."""
    stack.cli("init-db")
    victim = sample_events()[0]["user_id"]
    stack.query(f"ALTER TABLE user_logins ADD CONSTRAINT no_victim CHECK (user_id <> '{victim}')")
    stack.send(sample_bodies())
    stack.cli("run", "--until-empty", "--batch-size", "100")
    assert stack.count_rows() == 98
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"]
                     for m in stack.receive_all(dlq=True))
    assert reasons == ["db_rejected:23514", "missing_field:user_id"]
    assert stack.depth()["visible"] == 0


def test_load_reads_json_lines_and_gzip(stack: Stack, tmp_path: Path) -> None:
    lines = tmp_path / "events.jsonl"
    lines.write_text("\n".join(sample_bodies()[:40]) + "\n")
    packed = tmp_path / "events.json.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    assert "sent 40 messages" in stack.cli("load", str(lines)).stdout
    assert "sent 100 messages" in stack.cli("load", str(packed)).stdout
    counted = json.loads(stack.cli("count", "--json").stdout)
    assert counted["source"]["visible"] == 140 and counted["dlq"]["visible"] == 0


def test_until_empty_on_an_empty_queue_exits_promptly(stack: Stack) -> None:
    started = time.monotonic()
    stack.cli("run", "--until-empty")
    assert time.monotonic() - started < 10


def test_status_shows_depths_and_masked_rows_only(stack: Stack) -> None:
    stack.send(sample_bodies())
    stack.cli("run", "--until-empty")
    out = stack.cli("status", "--limit", "100", env={**stack.env(), "COLUMNS": "400"}).stdout
    assert "99 rows" in out and "h1." in out
    for event in sample_events():
        for key in ("ip", "device_id"):
            if key in event:
                assert event[key] not in out


def test_clear_db_needs_confirmation(stack: Stack) -> None:
    stack.send(sample_bodies()[:10])
    stack.cli("run", "--until-empty")
    refused = stack.cli("clear-db", check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert stack.count_rows() == 10
    assert "removed 10 rows" in stack.cli("clear-db", "--yes").stdout
    assert stack.count_rows() == 0


def test_two_copies_of_one_message_in_a_batch_make_one_row_and_both_are_deleted(
        stack: Stack) -> None:
    """After a visibility lapse the same message is received twice (two receipt handles) and
    can land in one batch: one row, one duplicate, and neither copy comes back."""
    import secrets

    from login_etl.masking import Masker
    from login_etl.messages import parse
    from login_etl.pipeline import Pipeline
    from login_etl.queue import Queue
    from login_etl.settings import MaskingKey
    from login_etl.store import Store

    stack.send(sample_bodies()[:1])
    source, dlq = Queue(stack.sqs, stack.queue_url), Queue(stack.sqs, stack.dlq_url, "dlq")
    [first] = source.receive(wait_seconds=10, visibility_timeout=30)
    source.change_visibility([first], 0)
    [second] = source.receive(wait_seconds=10, visibility_timeout=30)
    assert second.message_id == first.message_id and second.receipt_handle != first.receipt_handle
    masker = Masker([MaskingKey("k", secrets.token_bytes(32))])
    store = Store(stack.database_url, pool_size=1)
    store.open()
    try:
        store.init_schema()
        outcome = Pipeline(store, source, dlq).settle(
            [(m, parse(m, masker)) for m in (first, second)])
    finally:
        store.close()
    assert (outcome.stored, outcome.duplicates, outcome.not_deleted) == (1, 1, [])
    assert stack.count_rows() == 1
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
