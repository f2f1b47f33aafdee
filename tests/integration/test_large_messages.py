"""Large messages against real LocalStack SQS and Postgres: the DLQ hand-off, `load` and
`dlq redrive` group their SendMessageBatch calls by bytes, split what SQS refuses for size,
and leave an entry SQS refuses for good where it is, counted; nothing halts the worker.

LocalStack (measured): a message may be up to 1 MiB (body + attribute names, types and
values, in UTF-8 bytes); a SendMessageBatch whose entries add up to more than 1 MiB is
refused whole with BatchRequestTooLong, also when it holds that single entry."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.integration.stack import Stack, log_events, unique_bodies

MIB = 1024 * 1024


def junk(size: int, i: int) -> str:
    """An invalid body of exactly `size` bytes: not JSON, or a user_id far over its column."""
    if i % 2:
        return f"not json {i} ".ljust(size, "x")
    head = f'{{"n": {i}, "user_id": "'
    tail = '", "app_version": "1.0", "device_type": "ios", "ip": "10.0.0.1", "device_id": "d"}'
    return head + "u" * (size - len(head) - len(tail)) + tail


def send_one_by_one(stack: Stack, bodies: list[str], queue_url: str | None = None) -> None:
    for body in bodies:
        stack.sqs.send_message(QueueUrl=queue_url or stack.queue_url, MessageBody=body)


def send_with_forged_marks(stack: Stack, bodies: list[str]) -> None:
    """Each with both of our attribute names, forged (one non-ASCII, one of another type)."""
    marks = {"login_etl_redrive_of": {"DataType": "String", "StringValue": "x|k|é"},
             "login_etl_origin": {"DataType": "Binary", "BinaryValue": b"\xff|k|\x00"}}
    for start in range(0, len(bodies), 10):
        stack.sqs.send_message_batch(QueueUrl=stack.queue_url, Entries=[
            {"Id": str(i), "MessageBody": body, "MessageAttributes": marks}
            for i, body in enumerate(bodies[start:start + 10])])


def test_valid_events_mixed_with_large_rejects_all_settle(stack: Stack, tmp_path: Path) -> None:
    """300 valid events (30 with forged marks), 10 rejects of ~105 KB (over 1 MiB in one
    hand-off), one reject that fits the DLQ with our attributes and one that does not."""
    valid = unique_bodies(300, prefix="mixed")
    large = [junk(105_000, i) for i in range(10)]
    fits, too_long = junk(MIB - 4096, 11), junk(MIB - 16, 12)
    stack.send(valid[:150])
    send_one_by_one(stack, [*large, fits, too_long])
    send_with_forged_marks(stack, valid[150:180])
    stack.send(valid[180:])
    started = time.monotonic()
    result = stack.cli("run", "--until-empty", timeout=180)
    seconds = time.monotonic() - started
    assert "Traceback" not in result.stderr
    log = tmp_path / "run.log"
    log.write_text(result.stderr)
    events = log_events(log)
    [stopped] = [e for e in events if e["event"] == "worker_stopped"]
    left = [e for e in events if e["event"] == "rejects_left_in_source"]
    stored, distinct = stack.query("SELECT count(*), count(DISTINCT user_id) FROM user_logins")[0]
    dlq = stack.receive_all(dlq=True, wait=3)
    print(f"  stored={stored} dlq={len(dlq)} left={stopped['left_in_queue']} exit=0 "
          f"seconds={seconds:.1f}")
    assert (stored, distinct) == (300, 300)
    assert sorted(len(m["Body"].encode()) for m in dlq) == sorted([105_000] * 10 + [MIB - 4096])
    assert {m["MessageAttributes"]["reason"]["StringValue"] for m in dlq} == {
        "invalid_json", "too_long:user_id"}
    assert stopped["left_in_queue"] == 1 and stopped["rejected"] == 11
    assert [e["reasons"] for e in left] == [["dlq_refused"]]
    assert stack.depth() == {"visible": 0, "in_flight": 1, "delayed": 0}
    assert not [e for e in events if e["event"] == "worker_halted"]


def test_load_sends_large_events_and_names_the_one_sqs_refuses(stack: Stack,
                                                               tmp_path: Path) -> None:
    events = [json.dumps({"user_id": f"big-{i}", "app_version": "1.0", "device_type": "ios",
                          "ip": "10.0.0.1", "device_id": "d", "pad": "p" * 105_000})
              for i in range(12)]
    events.insert(5, json.dumps({"user_id": "huge", "pad": "p" * MIB}))
    file = tmp_path / "events.jsonl"
    file.write_text("\n".join(events) + "\n")
    result = stack.cli("load", str(file), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "sent 12 messages" in result.stdout
    assert "refused 1 events" in result.stderr and "event 6" in result.stderr
    assert stack.depth()["visible"] == 12


def test_redrive_moves_large_messages_and_leaves_one_without_room(stack: Stack) -> None:
    fixed = [json.dumps({"user_id": f"r-{i}", "app_version": "1.0", "device_type": "ios",
                         "ip": "10.0.0.1", "device_id": "d", "pad": "p" * 105_000})
             for i in range(10)]
    send_one_by_one(stack, [*fixed, junk(MIB, 1)], queue_url=stack.dlq_url)
    result = stack.cli("dlq", "redrive", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "moved 10 messages" in result.stdout
    assert "1 messages stay in the DLQ" in result.stderr
    assert stack.depth(dlq=True) == {"visible": 1, "in_flight": 0, "delayed": 0}
    stack.cli("run", "--until-empty")
    assert stack.query("SELECT count(DISTINCT user_id) FROM user_logins")[0][0] == 10
