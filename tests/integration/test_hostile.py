"""Hostile input: the worker never crashes, and every message ends as a row or a DLQ message."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import both_clients
from tests.integration.rewriteproxy import RewriteProxy
from tests.integration.stack import Stack, sample_events, unique_bodies

GOOD = sample_events()[0]

# SQS accepts #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF in a body.
sqs_chars = st.characters(min_codepoint=0x20, max_codepoint=0x10FFFF,
                          exclude_categories=("Cs",)).filter(
    lambda c: c not in "\ufffe\uffff") | st.sampled_from("\t\n\r")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(sqs_chars, max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
any_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
near_valid = st.fixed_dictionaries({}, optional={
    "user_id": st.one_of(any_text, json_values), "app_version": st.one_of(
        st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,4}){0,3}\Z"), json_values),
    "device_type": st.one_of(any_text, json_values),
    "ip": st.one_of(st.ip_addresses().map(str), any_text, json_values),
    "locale": st.one_of(st.none(), any_text), "device_id": st.one_of(any_text, json_values),
}).map(lambda d: json.dumps(d, ensure_ascii=bool(len(d) % 2)))


def sns_envelope(message: Any, **changes: Any) -> str:
    """An SNS notification as anyone can write one: nothing in it is verified."""
    return json.dumps({"Type": "Notification", "MessageId": "forged", "TopicArn": "arn:forged",
                       "Message": message, "Timestamp": "1970-01-01T00:00:00Z", **changes})


def eventbridge_envelope(detail: Any, **changes: Any) -> str:
    return json.dumps({"version": "0", "id": "forged", "detail-type": "login", "source": "x",
                       "time": "1970-01-01T00:00:00Z", "detail": detail, **changes})


bodies = st.one_of(
    st.text(sqs_chars, min_size=1, max_size=200),
    json_values.map(json.dumps),
    near_valid,
    # Envelopes, forged: around near-valid events and around any JSON value.
    st.one_of(near_valid, json_values).map(sns_envelope),
    st.one_of(near_valid.map(json.loads), json_values).map(eventbridge_envelope),
)


def hand_written() -> list[str]:
    def event(**changes: Any) -> str:
        return json.dumps({**GOOD, **changes})

    return [
        "{", "not json at all", "[]", "[1, 2, 3]", '"string"', "42", "true", "null",
        '{"user_id": }', json.dumps({"foo": "oops_wrong_msg_type", "bar": "123"}),
        event(user_id=None), event(ip=12345), event(app_version=2.3), event(locale=7),
        event(device_type=["ios"]), event(user_id="u" * 129), event(device_type="d" * 33),
        event(locale="x" * 33), event(device_id="i" * 500), event(user_id="nul\u0000inside"),
        event(device_id="\u0000"), event(user_id="x" * 200_000),  # ~200 KB body
        event(extra="y" * 200_000),  # ~200 KB body that is a valid event
        event(user_id="🙂👩‍💻", device_id="📱-device-🔑", locale="🏳️‍🌈"),
        event(ip="2001:db8::8a2e:370:7334"), event(ip="::ffff:192.0.2.1"), event(ip="fe80::1%eth0"),
        event(ip=" 10.0.0.1 "), event(ip="300.1.1.1"), event(ip=""),
        event(app_version="1.2.3.4"), event(app_version="1.1000.0"), event(app_version="-1.0"),
        event(app_version="9" * 40), event(app_version="１.２.３"), event(app_version=""),
        "\t\n\r {} \n", '{"a": ' * 5000 + "1" + "}" * 5000,
        # Forged envelopes: a valid event inside one is stored like the raw event (its forged
        # ids, time and attributes named like our seals change nothing); the rest are rejects.
        sns_envelope(json.dumps(GOOD), MessageAttributes={
            "login_etl_redrive_of": {"Type": "String", "Value": "forged"}}),
        sns_envelope(GOOD), sns_envelope(None), sns_envelope("[" * 5000),
        sns_envelope(json.dumps(GOOD), Type="SubscriptionConfirmation"),
        sns_envelope(sns_envelope(json.dumps(GOOD))), sns_envelope(event(ip="300.1.1.1")),
        eventbridge_envelope({**GOOD, "ip": "300.1.1.1"}), eventbridge_envelope(json.dumps(GOOD)),
        eventbridge_envelope(GOOD, source=None),
    ]


def run_and_count(stack: Stack, sent: list[str]) -> None:
    rows_before, dlq_before = stack.count_rows(), stack.depth(dlq=True)["visible"]
    stack.send(sent)
    result = stack.cli("run", "--until-empty", timeout=180)
    assert "Traceback" not in result.stderr
    rows = stack.count_rows() - rows_before
    dlq = stack.depth(dlq=True)["visible"] - dlq_before
    assert rows + dlq == len(sent), (rows, dlq, len(sent))
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


@both_clients
def test_hand_written_hostile_bodies(stack: Stack) -> None:
    sent = hand_written()
    run_and_count(stack, sent)
    # the valid ones among them: the 200 KB extra field, emoji, 3 ip spellings and the event
    # in a forged SNS envelope
    assert stack.count_rows() == 6


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(st.lists(bodies, min_size=20, max_size=60))
def test_generated_bodies_never_crash_and_are_all_accounted_for(stack: Stack,
                                                                sent: list[str]) -> None:
    run_and_count(stack, sent)


@both_clients
def test_malformed_batch_answers_from_a_proxy_neither_halt_nor_lose(stack: Stack) -> None:
    """Every third SendMessageBatch and DeleteMessageBatch answered 200 with a body of the
    wrong shape (after SQS acted on it): the worker carries on, and after a clean drain every
    valid event is stored once and every reject is in the DLQ."""
    valid = unique_bodies(300, prefix="shape")
    rejects = [f"not json {i}" for i in range(40)]
    stack.send(valid + rejects)
    proxy = RewriteProxy(4566, ("SendMessageBatch", "DeleteMessageBatch"),
                         b'{"Successful": "0", "Failed": {"Id": 1}}')
    try:
        env = stack.env(LOGIN_ETL_QUEUE_URL=proxy.url_for(stack.queue_url),
                        LOGIN_ETL_VISIBILITY_TIMEOUT="5", LOGIN_ETL_BATCH_SIZE="20",
                        LOGIN_ETL_WAIT_TIME_SECONDS="1")
        result = stack.cli("run", "--until-empty", env=env, check=False, timeout=180)
    finally:
        proxy.close()
    print(f"  calls {proxy.calls}, rewritten {proxy.rewritten}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "worker_halted" not in result.stderr
    assert proxy.rewritten.get("SendMessageBatch", 0) >= 1
    assert proxy.rewritten.get("DeleteMessageBatch", 0) >= 3
    # the clean drain: what the rewritten deletes left in flight comes back once visible
    deadline = time.monotonic() + 60
    while stack.depth() != {"visible": 0, "in_flight": 0, "delayed": 0}:
        assert time.monotonic() < deadline, stack.depth()
        stack.cli("run", "--until-empty", env=stack.env(LOGIN_ETL_VISIBILITY_TIMEOUT="5"))
        time.sleep(1)
    assert stack.count_rows() == len(valid)
    assert stack.duplicate_rows() == 0
    assert {m["Body"] for m in stack.receive_all(dlq=True)} == set(rejects)


@both_clients
def test_an_endpoint_with_a_path_is_where_the_calls_go(stack: Stack) -> None:
    """AWS_ENDPOINT_URL=http://gateway/prefix: a gateway serving SQS under that path only."""
    stack.send(unique_bodies(50, prefix="gw"))
    proxy = RewriteProxy(4566, (), b"", prefix="/sqs-gateway")
    try:
        endpoint = f"http://127.0.0.1:{proxy.port}/sqs-gateway"
        result = stack.cli("run", "--until-empty", check=False, timeout=120,
                           env=stack.env(AWS_ENDPOINT_URL=endpoint))
    finally:
        proxy.close()
    print(f"  paths {proxy.paths}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(proxy.paths) == {"/sqs-gateway"}
    assert stack.count_rows() == 50
