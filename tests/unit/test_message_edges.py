"""Parsing at the edges: each length limit at both sides, the UTC day boundary, the id kept."""

from __future__ import annotations

import json
from datetime import date

import pytest

from login_etl.masking import Masker
from login_etl.messages import LoginEvent, Received, Rejection, parse
from login_etl.settings import MaskingKey

MASKER = Masker([MaskingKey("kat1", bytes(range(32)))])
GOOD = {"user_id": "u", "device_type": "ios", "locale": "DE", "ip": "192.0.2.1",
        "device_id": "d-1", "app_version": "1.2.3"}


def outcome(sent_ms: int = 0, **fields: object) -> LoginEvent | Rejection:
    return parse(Received("m-7", "rh", json.dumps({**GOOD, **fields}), sent_ms), MASKER)


@pytest.mark.parametrize(("field", "fits", "value_of"), [
    ("user_id", 128, lambda n: "u" * n),
    ("device_type", 32, lambda n: "d" * n),
    ("locale", 32, lambda n: "l" * n),
    ("device_id", 128, lambda n: "x" * n),
    # an ip may come padded with blanks (trimmed), up to 64 characters in all
    ("ip", 64, lambda n: "192.0.2.1".ljust(n)),
    # leading zeros are still a version ("000...7" is 7.0.0), up to 32 characters
    ("app_version", 32, lambda n: "7".rjust(n, "0")),
])
def test_each_length_limit_at_both_sides(field: str, fits: int, value_of) -> None:  # type: ignore[no-untyped-def]
    inside = outcome(**{field: value_of(fits)})
    assert isinstance(inside, LoginEvent), inside
    assert outcome(**{field: value_of(fits + 1)}) == Rejection("m-7", f"too_long:{field}")
    # non-ASCII is counted in characters too
    if field in ("user_id", "device_type", "locale"):
        assert isinstance(outcome(**{field: "é" * fits}), LoginEvent)
        assert outcome(**{field: "é" * (fits + 1)}) == Rejection("m-7", f"too_long:{field}")


def test_the_event_keeps_its_message_id() -> None:
    event = outcome()
    assert isinstance(event, LoginEvent) and event.message_id == "m-7"
    assert event.app_version == 1_002_003


@pytest.mark.parametrize(("sent_ms", "day"), [
    (0, date(1970, 1, 1)),
    (86_399_999, date(1970, 1, 1)),
    (86_400_000, date(1970, 1, 2)),
    (1_700_006_399_999, date(2023, 11, 14)),
    (1_700_006_400_000, date(2023, 11, 15)),
    (4_102_444_800_000, date(2100, 1, 1)),
    (4_102_444_799_999, date(2099, 12, 31)),
])
def test_create_date_changes_exactly_at_utc_midnight(sent_ms: int, day: date) -> None:
    event = outcome(sent_ms)
    assert isinstance(event, LoginEvent) and event.create_date == day
    assert event.line.endswith(f"\t{day.isoformat()}\n")


def test_a_message_without_a_receive_count_counts_as_received_once() -> None:
    """Messages built by hand (load, redrive, tests) are first deliveries, not redeliveries."""
    assert Received("m", "rh", "{}", 0).receive_count == 1
