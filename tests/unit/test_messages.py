"""Parsing and validation: every body gets exactly one outcome with a bounded reason code."""

from __future__ import annotations

import json
from datetime import date

import pytest

from login_etl.masking import Masker
from login_etl.messages import LoginEvent, Received, Rejection, parse
from login_etl.settings import MaskingKey

MASKER = Masker([MaskingKey("k1", b"k" * 32)])
GOOD = {"user_id": "u-1", "app_version": "2.3.0", "device_type": "android",
        "ip": "199.172.111.135", "locale": "RU", "device_id": "593-47-5928"}
SENT_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def received(body: object, raw: bool = False) -> Received:
    text = body if raw else json.dumps(body)
    assert isinstance(text, str)
    return Received("m-1", "rh-1", text, SENT_MS)


def outcome(body: object, raw: bool = False) -> LoginEvent | Rejection:
    return parse(received(body, raw), MASKER)


def test_valid_event_becomes_a_masked_row() -> None:
    event = outcome(GOOD)
    assert isinstance(event, LoginEvent)
    assert event.user_id == "u-1" and event.device_type == "android" and event.locale == "RU"
    assert event.app_version == 2_003_000
    assert event.create_date == date(2023, 11, 14)
    assert event.masked_ip.startswith("h1.k1.") and "199.172" not in event.masked_ip
    assert event.masked_device_id.startswith("h1.k1.") and "593-47" not in event.masked_device_id
    assert event.masked_ip != MASKER.mask("device_id", "199.172.111.135")


def test_create_date_is_the_utc_date_of_sending() -> None:
    late = Received("m", "r", json.dumps(GOOD), 1_700_006_399_000)  # 23:59:59 UTC
    result = parse(late, MASKER)
    assert isinstance(result, LoginEvent) and result.create_date == date(2023, 11, 14)


@pytest.mark.parametrize("locale", [None, "missing"])
def test_null_or_missing_locale_stays_null(locale: str | None) -> None:
    body = dict(GOOD)
    if locale == "missing":
        del body["locale"]
    else:
        body["locale"] = None
    result = outcome(body)
    assert isinstance(result, LoginEvent) and result.locale is None


def test_extra_fields_are_ignored() -> None:
    assert isinstance(outcome({**GOOD, "extra": {"nested": [1, 2]}}), LoginEvent)


@pytest.mark.parametrize(("body", "raw", "reason"), [
    ("{not json", True, "invalid_json"),
    ("", True, "invalid_json"),
    ("[1, 2]", True, "not_object"),
    ('"a string"', True, "not_object"),
    ("null", True, "not_object"),
    ({"foo": "oops_wrong_msg_type", "bar": "123"}, False, "missing_field:user_id"),
    ({**GOOD, "ip": None}, False, "missing_field:ip"),
    ({k: v for k, v in GOOD.items() if k != "device_id"}, False, "missing_field:device_id"),
    ({**GOOD, "user_id": 42}, False, "wrong_type:user_id"),
    ({**GOOD, "app_version": 2.3}, False, "wrong_type:app_version"),
    ({**GOOD, "locale": ["RU"]}, False, "wrong_type:locale"),
    ({**GOOD, "device_type": True}, False, "wrong_type:device_type"),
    ({**GOOD, "user_id": "   "}, False, "empty_field:user_id"),
    ({**GOOD, "user_id": "u" * 129}, False, "too_long:user_id"),
    ({**GOOD, "device_type": "d" * 33}, False, "too_long:device_type"),
    ({**GOOD, "locale": "l" * 33}, False, "too_long:locale"),
    ({**GOOD, "device_id": "x" * 129}, False, "too_long:device_id"),
    ({**GOOD, "user_id": "a\x00b"}, False, "nul_character:user_id"),
    ({**GOOD, "locale": "R\x00"}, False, "nul_character:locale"),
    ({**GOOD, "ip": "999.1.1.1"}, False, "invalid_ip"),
    ({**GOOD, "ip": "not an ip"}, False, "invalid_ip"),
    ({**GOOD, "ip": "fe80::1%eth0"}, False, "invalid_ip"),
    ({**GOOD, "app_version": "1.2.3.4"}, False, "invalid_version"),
    ({**GOOD, "app_version": "v1.2"}, False, "invalid_version"),
    ({**GOOD, "app_version": "1..2"}, False, "invalid_version"),
    ({**GOOD, "app_version": "1.1000.0"}, False, "version_out_of_range"),
    ({**GOOD, "app_version": "99999999999.0"}, False, "version_out_of_range"),
])
def test_rejections_carry_a_reason(body: object, raw: bool, reason: str) -> None:
    result = outcome(body, raw)
    assert result == Rejection("m-1", reason)


def test_length_is_counted_in_characters_like_varchar() -> None:
    result = outcome({**GOOD, "user_id": "é" * 128, "device_type": "📱" * 32})
    assert isinstance(result, LoginEvent)


def test_deeply_nested_json_is_a_rejection_not_a_crash() -> None:
    assert outcome("[" * 100_000 + "]" * 100_000, raw=True) == Rejection("m-1", "invalid_json")
    assert outcome("[" * 100_000, raw=True) == Rejection("m-1", "invalid_json")


@pytest.mark.parametrize("spelling", [
    "2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", " 2001:DB8::1 ",
])
def test_ipv6_spellings_give_one_token(spelling: str) -> None:
    a = outcome({**GOOD, "ip": "2001:db8::1"})
    b = outcome({**GOOD, "ip": spelling})
    assert isinstance(a, LoginEvent) and isinstance(b, LoginEvent)
    assert a.masked_ip == b.masked_ip


def test_ipv4_mapped_ipv6_is_the_ipv4_address() -> None:
    a = outcome({**GOOD, "ip": "::ffff:10.0.0.1"})
    b = outcome({**GOOD, "ip": "10.0.0.1 "})
    assert isinstance(a, LoginEvent) and isinstance(b, LoginEvent)
    assert a.masked_ip == b.masked_ip


def test_an_unexpected_error_is_a_reject_not_a_crash() -> None:
    class BrokenMasker(Masker):
        def mask(self, field: str, value: str) -> str:
            raise RuntimeError("bug")

    broken = BrokenMasker([MaskingKey("k1", b"k" * 32)])
    assert parse(received(GOOD), broken) == Rejection("m-1", "internal_error")
