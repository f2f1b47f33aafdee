"""SNS and EventBridge envelopes as the services make them (LocalStack's SNS and EventBridge
delivering to the test's SQS queue), mixed with raw events on one standard queue."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3

from tests.integration.conftest import both_clients
from tests.integration.stack import ENDPOINT, Stack, sample_bodies, unique_bodies, wait_until


def _client(service: str) -> Any:
    return boto3.client(service, endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def _queue_arn(stack: Stack) -> str:
    return stack.sqs.get_queue_attributes(
        QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _wait_for_depth(stack: Stack, n: int) -> None:
    wait_until(lambda: stack.depth()["visible"] >= n, 60, what=f"{n} messages in the queue")


@both_clients
def test_sns_envelopes_and_raw_events_on_one_queue(stack: Stack) -> None:
    """Acceptance: the 100-event sample published to an SNS topic (raw delivery off) plus 10
    raw events: 109 rows; the malformed one in the DLQ as missing_field:user_id, its body the
    SNS envelope unchanged."""
    sns = _client("sns")
    topic = sns.create_topic(Name=f"t-{uuid.uuid4().hex[:12]}")["TopicArn"]
    try:
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=_queue_arn(stack),
                      Attributes={"RawMessageDelivery": "false"})
        for start in range(0, 100, 10):
            entries = [{"Id": str(i), "Message": body}
                       for i, body in enumerate(sample_bodies()[start:start + 10])]
            assert not sns.publish_batch(TopicArn=topic,
                                         PublishBatchRequestEntries=entries).get("Failed")
        stack.send(unique_bodies(10, prefix="raw"))
        _wait_for_depth(stack, 110)
        stack.cli("run", "--until-empty")
    finally:
        sns.delete_topic(TopicArn=topic)

    assert stack.count_rows() == 109
    assert stack.query("SELECT count(*) FROM user_logins WHERE user_id LIKE 'raw-%'")[0][0] == 10
    [dead] = stack.receive_all(dlq=True)
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "missing_field:user_id"
    envelope = json.loads(dead["Body"])
    assert envelope["Type"] == "Notification" and envelope["TopicArn"] == topic
    assert json.loads(envelope["Message"]) == {"foo": "oops_wrong_msg_type", "bar": "123"}
    assert stack.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_eventbridge_rule_to_sqs(stack: Stack) -> None:
    """Events put on a bus, a rule with the queue as target: each event's detail is stored;
    a detail that is not an event goes to the DLQ with its reason, the envelope unchanged."""
    events = _client("events")
    bus = f"t-{uuid.uuid4().hex[:12]}"
    events.create_event_bus(Name=bus)
    try:
        events.put_rule(Name="logins", EventBusName=bus,
                        EventPattern=json.dumps({"source": ["app.logins"]}))
        events.put_targets(Rule="logins", EventBusName=bus,
                           Targets=[{"Id": "queue", "Arn": _queue_arn(stack)}])
        details = [*unique_bodies(19, prefix="eb"), json.dumps({"user_id": "eb-bad"})]
        for start in range(0, 20, 10):
            answer = events.put_events(Entries=[
                {"EventBusName": bus, "Source": "app.logins", "DetailType": "login",
                 "Detail": detail} for detail in details[start:start + 10]])
            assert answer["FailedEntryCount"] == 0
        _wait_for_depth(stack, 20)
        stack.cli("run", "--until-empty")
    finally:
        events.remove_targets(Rule="logins", EventBusName=bus, Ids=["queue"])
        events.delete_rule(Name="logins", EventBusName=bus)
        events.delete_event_bus(Name=bus)

    assert stack.count_rows() == 19
    [dead] = stack.receive_all(dlq=True)
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "missing_field:device_type"
    envelope = json.loads(dead["Body"])
    assert envelope["detail-type"] == "login" and envelope["detail"] == {"user_id": "eb-bad"}


def test_envelopes_none_sends_wrapped_events_to_the_dlq(stack: Stack) -> None:
    """LOGIN_ETL_ENVELOPES=none: a body is the event; an envelope has no user_id."""
    wrapped = json.dumps({"version": "0", "id": "x", "detail-type": "login", "source": "s",
                          "time": "2031-01-01T00:00:00Z",
                          "detail": json.loads(unique_bodies(1)[0])})
    stack.send([wrapped, *unique_bodies(2, prefix="raw")])
    stack.cli("run", "--until-empty", env=stack.env(LOGIN_ETL_ENVELOPES="none"))
    assert stack.count_rows() == 2
    [dead] = stack.receive_all(dlq=True)
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "missing_field:user_id"
    assert dead["Body"] == wrapped


def test_sns_envelopes_made_by_moto(moto_stack: Stack) -> None:
    """The same through moto's SNS, a second implementation of the envelope."""
    endpoint = moto_stack.sqs.meta.endpoint_url
    sns = boto3.client("sns", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    topic = sns.create_topic(Name=f"t-{uuid.uuid4().hex[:12]}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=_queue_arn(moto_stack))
    bodies = [*unique_bodies(9, prefix="moto"), json.dumps({"user_id": "moto-bad"})]
    for body in bodies:
        sns.publish(TopicArn=topic, Message=body)
    _wait_for_depth(moto_stack, 10)
    moto_stack.cli("run", "--until-empty")
    assert moto_stack.count_rows() == 9
    [dead] = moto_stack.receive_all(dlq=True)
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "missing_field:device_type"
    assert json.loads(json.loads(dead["Body"])["Message"]) == {"user_id": "moto-bad"}


def test_eventbridge_events_made_by_moto(moto_stack: Stack) -> None:
    """An EventBridge rule with the queue as target on moto's server: details stored."""
    events = boto3.client("events", endpoint_url=moto_stack.sqs.meta.endpoint_url,
                          region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")
    rule = f"t-{uuid.uuid4().hex[:12]}"
    events.put_rule(Name=rule, EventPattern=json.dumps({"source": ["app.logins"]}))
    events.put_targets(Rule=rule, Targets=[{"Id": "queue", "Arn": _queue_arn(moto_stack)}])
    details = [*unique_bodies(4, prefix="mb"), json.dumps({**json.loads(unique_bodies(1)[0]),
                                                          "ip": "300.1.1.1"})]
    answer = events.put_events(Entries=[{"Source": "app.logins", "DetailType": "login",
                                         "Detail": detail} for detail in details])
    assert answer["FailedEntryCount"] == 0
    _wait_for_depth(moto_stack, 5)
    moto_stack.cli("run", "--until-empty")
    assert moto_stack.count_rows() == 4
    [dead] = moto_stack.receive_all(dlq=True)
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "invalid_ip"
    assert json.loads(dead["Body"])["detail"]["ip"] == "300.1.1.1"
