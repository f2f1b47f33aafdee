"""Message attributes are producer input: attributes named like our sealed ledger ids, of any
type, length and text, never break the worker or `dlq redrive`. A mark that does not verify
is ignored and counted, and its message is processed as an ordinary one. Real LocalStack and
Postgres."""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from login_etl.masking import Masker
from login_etl.queue import ORIGIN_ATTRIBUTE, REDRIVE_ATTRIBUTE
from login_etl.settings import MaskingKey, Settings
from tests.integration.stack import (
    Stack,
    create_queues,
    free_port,
    http_get,
    metric_sum,
    unique_bodies,
    wait_until,
)
from tests.integration.test_faults import stop

OURS = (REDRIVE_ATTRIBUTE, ORIGIN_ATTRIBUTE)


def masker(stack: Stack) -> Masker:
    return Masker(Settings.from_env(stack.env()).masking_keys)


def forged(stack: Stack) -> list[dict[str, Any]]:
    """One forged value per data type and shape, for either of our names."""
    key_id = masker(stack).key_id
    other_key = Masker([MaskingKey(key_id, secrets.token_bytes(32))])
    return [
        {"DataType": "String", "StringValue": f"x|{key_id}|é"},
        {"DataType": "String", "StringValue": "same-id"},
        {"DataType": "String", "StringValue": f"é|{key_id}|" + "é" * 120_000},
        {"DataType": "String", "StringValue": other_key.seal("a-ledger-id")},
        {"DataType": "String.custom", "StringValue": masker(stack).seal("a-ledger-id")},
        {"DataType": "Number", "StringValue": "12345"},
        {"DataType": "Number.int", "StringValue": "7"},
        {"DataType": "Binary", "BinaryValue": f"x|{key_id}|".encode() + b"\xff\x00"},
        {"DataType": "Binary", "BinaryValue": masker(stack).seal("a-ledger-id").encode()},
    ]


def invalid_bodies(n: int) -> list[str]:
    return [f"not json {uuid.uuid4().hex}" for _ in range(n)]


def test_forged_marks_of_every_type_are_ignored_counted_and_processed(
        stack: Stack, tmp_path: Path) -> None:
    """Each forged value on valid and invalid bodies, under each of our names: every valid
    event stored once, every invalid one in the DLQ, each mark counted, no restart."""
    values = forged(stack)
    valid = unique_bodies(2 * len(values), prefix="forged")
    invalid = invalid_bodies(2 * len(values))
    sent = 0
    for i, value in enumerate(values):
        for j, name in enumerate(OURS):
            for body in (valid[2 * i + j], invalid[2 * i + j]):
                stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body,
                                       MessageAttributes={name: value})
                sent += 1
    port = free_port()
    log = tmp_path / "w.log"
    worker = stack.start(env=stack.env(LOGIN_ETL_HTTP_PORT=str(port),
                                       LOGIN_ETL_WAIT_TIME_SECONDS="1"), log=log)
    try:
        wait_until(lambda: stack.count_rows() == len(valid)
                   and stack.depth(dlq=True)["visible"] == len(invalid), 60, what="all settled")
        metrics_text = http_get(port, "/metrics")[1]
        assert http_get(port, "/healthz")[0] == 200
    finally:
        code, _ = stop(worker)
    assert code == 0 and "Traceback" not in log.read_text()
    assert stack.query("SELECT count(DISTINCT user_id) FROM user_logins")[0][0] == len(valid)
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    counted = sum(metric_sum(metrics_text, "login_etl_unverified_marks_total", attribute=name)
                  for name in OURS)
    assert counted == sent


def test_dlq_redrive_ignores_forged_marks(stack: Stack) -> None:
    """Messages SQS moved to the DLQ keep a producer's attributes: redrive moves them as
    ordinary DLQ messages, and each is stored once."""
    values = forged(stack)
    valid = unique_bodies(len(values) * 2, prefix="redriven")
    for i, body in enumerate(valid):
        stack.sqs.send_message(QueueUrl=stack.dlq_url, MessageBody=body, MessageAttributes={
            OURS[i % 2]: values[i // 2]})
    result = stack.cli("dlq", "redrive")
    assert f"moved {len(valid)} messages" in result.stdout and "Traceback" not in result.stderr
    stack.cli("run", "--until-empty")
    assert stack.query("SELECT count(*), count(DISTINCT user_id) FROM user_logins")[0] == (
        len(valid), len(valid))


# -- drawn attributes -------------------------------------------------------------------------

sqs_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF,
                                 exclude_categories=("Cs",)).filter(
    lambda c: c not in "\ufffe\uffff"), max_size=30)
names = st.sampled_from([*OURS, "reason", "source_message_id", "other", "a.b-c_d", "nämé"])
data_types = st.sampled_from(["String", "Number", "Binary", "String.x", "Number.int",
                              "Binary.é"])
# "seal": a genuine seal of a fresh ledger id; "forged": our shape with a bad tag
value_kinds = st.one_of(
    sqs_text, st.just(""), st.just("seal"), st.just("forged"),
    st.integers(0, 128 * 1024).map(lambda n: "é" * n),
)
attributes = st.dictionaries(names, st.tuples(data_types, value_kinds), max_size=4)
messages = st.lists(st.tuples(st.booleans(), attributes), min_size=5, max_size=15)


def attribute_value(kind: str, value: str, seal: Masker) -> dict[str, Any]:
    if value == "seal":
        value = seal.seal(f"fresh-{uuid.uuid4().hex}")
    elif value == "forged":
        value = f"{uuid.uuid4().hex}|{seal.key_id}|é"
    if kind.startswith("Binary"):
        return {"DataType": kind, "BinaryValue": value.encode()}
    return {"DataType": kind, "StringValue": value}


def within_256_kb(attrs: dict[str, Any]) -> bool:
    size = sum(len(n.encode()) + len(a["DataType"].encode())
               + len(a.get("BinaryValue") or a.get("StringValue", "").encode())
               for n, a in attrs.items())
    return size <= 256 * 1024


@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(messages)
def test_drawn_attributes_each_message_gets_exactly_one_outcome(
        stack: Stack, drawn: list[tuple[bool, dict[str, tuple[str, str]]]]) -> None:
    queue_url, dlq_url = create_queues(stack.sqs)
    run = Stack(stack.sqs, queue_url, dlq_url, stack.database_url, key=stack.key)
    seal = masker(run)
    try:
        valid_ids, invalid_bodies_sent = [], []
        bodies = unique_bodies(len(drawn), prefix=f"drawn-{uuid.uuid4().hex[:8]}")
        for (is_valid, spec), good in zip(drawn, bodies, strict=True):
            attrs = {name: attribute_value(kind, value, seal)
                     for name, (kind, value) in spec.items()}
            if not within_256_kb(attrs):
                attrs = {}
            body = good if is_valid else invalid_bodies(1)[0]
            try:
                kwargs = {"MessageAttributes": attrs} if attrs else {}
                run.sqs.send_message(QueueUrl=queue_url, MessageBody=body, **kwargs)
            except ClientError:
                continue  # SQS refused it (an empty value, say): no producer can send it
            if is_valid:
                valid_ids.append(json.loads(body)["user_id"])
            else:
                invalid_bodies_sent.append(body)
        result = run.cli("run", "--until-empty", timeout=120)
        assert "Traceback" not in result.stderr
        stored = dict(stack.query(
            "SELECT user_id, count(*) FROM user_logins WHERE user_id = ANY(%s) GROUP BY 1",
            (valid_ids,)))
        assert stored == dict.fromkeys(valid_ids, 1)
        dead = sorted(m["Body"] for m in run.receive_all(dlq=True, wait=1.5))
        assert dead == sorted(invalid_bodies_sent)
        assert run.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    finally:
        for url in (queue_url, dlq_url):
            with contextlib.suppress(Exception):
                stack.sqs.delete_queue(QueueUrl=url)
