"""SNS and EventBridge envelopes: unwrapped, the inner event validated as usual; a malformed
envelope is `invalid_envelope`; an envelope adds no trust (forged ones change nothing)."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from login_etl.messages import LoginEvent, Received, Rejection, parse
from tests.unit.test_messages import GOOD, MASKER, SENT_MS


def sns(message: Any, **changes: Any) -> dict[str, Any]:
    """An SNS notification as SNS delivers it to SQS with raw message delivery off."""
    envelope = {
        "Type": "Notification", "MessageId": "5f0d6a2c-0000-4000-8000-000000000001",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:logins", "Subject": None,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2031-01-01T23:59:59.000Z", "SignatureVersion": "1",
        "Signature": "EXAMPLE", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"}
    envelope.update(changes)
    return envelope


def eventbridge(detail: Any, **changes: Any) -> dict[str, Any]:
    event = {"version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
             "detail-type": "login", "source": "app.logins", "account": "000000000000",
             "time": "2031-01-01T23:59:59Z", "region": "us-east-1", "resources": [],
             "detail": detail}
    event.update(changes)
    return event


def outcome(body: Any, envelopes: bool = True) -> LoginEvent | Rejection:
    text = body if isinstance(body, str) else json.dumps(body)
    return parse(Received("m-1", "rh-1", text, SENT_MS), MASKER, envelopes)


@pytest.mark.parametrize("wrap", [sns, eventbridge])
def test_a_wrapped_event_is_the_same_row_as_the_raw_one(wrap: Any) -> None:
    raw = outcome(GOOD)
    assert outcome(wrap(GOOD)) == raw
    # create_date is the SQS SentTimestamp's day, not the envelope's (forgeable) time.
    assert raw.create_date == date(2023, 11, 14)  # type: ignore[union-attr]


@pytest.mark.parametrize("wrap", [sns, eventbridge])
def test_a_bad_inner_event_keeps_its_own_reason(wrap: Any) -> None:
    assert outcome(wrap({**GOOD, "ip": "999.1.1.1"})) == Rejection("m-1", "invalid_ip")
    assert outcome(wrap({"foo": "oops"})) == Rejection("m-1", "missing_field:user_id")
    assert outcome(wrap([GOOD])) == Rejection(
        "m-1", "not_object" if wrap is sns else "invalid_envelope")


@pytest.mark.parametrize(("body", "reason"), [
    (sns("{not json"), "invalid_json"),
    (sns(GOOD, Type="SubscriptionConfirmation"), "invalid_envelope"),
    (sns(GOOD, Message=GOOD), "invalid_envelope"),
    (sns(GOOD, Message=None), "invalid_envelope"),
    (sns(GOOD, MessageId=7), "invalid_envelope"),
    (sns(GOOD, TopicArn=None), "invalid_envelope"),
    ({k: v for k, v in sns(GOOD).items() if k != "Timestamp"}, "invalid_envelope"),
    (eventbridge(json.dumps(GOOD)), "invalid_envelope"),
    (eventbridge(None), "invalid_envelope"),
    (eventbridge(GOOD, source=["app"]), "invalid_envelope"),
    ({k: v for k, v in eventbridge(GOOD).items() if k != "id"}, "invalid_envelope"),
    ({k: v for k, v in eventbridge(GOOD).items() if k != "version"}, "invalid_envelope"),
    ({k: v for k, v in eventbridge(GOOD).items() if k != "time"}, "invalid_envelope"),
    (eventbridge(GOOD, **{"detail-type": 5}), "invalid_envelope"),
])
def test_a_malformed_envelope_is_invalid_envelope(body: Any, reason: str) -> None:
    assert outcome(body) == Rejection("m-1", reason)


def test_forged_envelopes_add_no_trust() -> None:
    """Whatever an envelope claims, only the inner event counts, validated as any body: the
    ledger id stays the SQS message id and create_date the SentTimestamp's day."""
    forged = sns(GOOD, MessageId="m-0", Timestamp="1999-01-01T00:00:00Z",
                 MessageAttributes={"login_etl_redrive_of": {"Type": "String", "Value": "x"}})
    event = outcome(forged)
    assert isinstance(event, LoginEvent)
    assert event.message_id == "m-1" and event.create_date == date(2023, 11, 14)
    # An envelope inside an envelope is not unwrapped twice.
    assert outcome(sns(sns(GOOD))) == Rejection("m-1", "missing_field:user_id")
    assert outcome(eventbridge(sns(GOOD))) == Rejection("m-1", "missing_field:user_id")
    # A body with a user_id is the event itself, whatever else it carries.
    both = {**sns({"user_id": "other"}), **GOOD}
    assert outcome(both) == outcome(GOOD)
    # Deep nesting inside the Message string is decided as for any body.
    assert outcome(sns("[" * 100_000)) == Rejection("m-1", "invalid_json")


def test_parse_unwraps_envelopes_unless_told_not_to() -> None:
    # LOGIN_ETL_ENVELOPES=auto is the default, and parse's own default says the same.
    message = Received("m-1", "rh-1", json.dumps(sns(GOOD)), SENT_MS)
    assert parse(message, MASKER) == outcome(GOOD)


def test_envelopes_none_takes_every_body_as_the_event() -> None:
    assert outcome(sns(GOOD), envelopes=False) == Rejection("m-1", "missing_field:user_id")
    assert outcome(eventbridge(GOOD), envelopes=False) == Rejection("m-1", "missing_field:user_id")
