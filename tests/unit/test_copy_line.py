"""The COPY text line of a row, byte for byte, for the values that COPY would misread.

A value that is not escaped can end the row early (newline, CR), shift the columns (tab),
become NULL (\\N) or end the data (\\.). tests/integration/test_copy_roundtrip.py sends the
same values through a real Postgres.
"""

from __future__ import annotations

import json
from datetime import date

import pytest

from login_etl.masking import Masker
from login_etl.messages import (
    COLUMNS,
    LoginEvent,
    Received,
    Rejection,
    copy_value,
    login_event,
    parse,
)
from login_etl.settings import MaskingKey

KEY = MaskingKey("kat1", bytes(range(32)))
IP_TOKEN = "h1.kat1.dxYXksAv7DPNA7Go1Skv7TiW6J9jCMQy29qyJaZCxLE"
DEVICE_TOKEN = "h1.kat1.1mBDrioqLU-WtuikC32qiG_LEnS-vRpjFvXv6v-xvwU"

# (value, its COPY text)
HOSTILE = [
    ("plain", "plain"),
    ("", ""),
    ("a\tb", "a\\tb"),
    ("a\nb", "a\\nb"),
    ("a\rb", "a\\rb"),
    ("\r\n", "\\r\\n"),
    ("a\\b", "a\\\\b"),
    ("\\N", "\\\\N"),
    ("\\.", "\\\\."),
    ("\\", "\\\\"),
    ("\\\\t", "\\\\\\\\t"),
    ("\t\\\n\r", "\\t\\\\\\n\\r"),
    ("é📱ü", "é📱ü"),
    ("x\x0by\x0cz\x08", "x\x0by\x0cz\x08"),
    ("N", "N"),
    (".", "."),
]


@pytest.mark.parametrize(("value", "text"), HOSTILE)
def test_copy_value(value: str, text: str) -> None:
    assert copy_value(value) == text


def test_null_is_backslash_n_and_differs_from_every_text() -> None:
    assert copy_value(None) == "\\N"
    assert copy_value("\\N") != copy_value(None) and copy_value("") != copy_value(None)


@pytest.mark.parametrize(("value", "text"), HOSTILE)
def test_the_line_of_an_event(value: str, text: str) -> None:
    event = login_event("m-1", value, value, IP_TOKEN, DEVICE_TOKEN, value, 2_003_000,
                        date(2023, 11, 14))
    assert event.line == (f"{text}\t{text}\t{IP_TOKEN}\t{DEVICE_TOKEN}\t{text}\t2003000\t"
                          "2023-11-14\n")
    assert event.row() == (value, value, IP_TOKEN, DEVICE_TOKEN, value, 2_003_000, date(2023, 11, 14))
    assert event.message_id == "m-1"


def test_the_line_with_a_null_locale() -> None:
    event = login_event("m-2", "u", "ios", IP_TOKEN, DEVICE_TOKEN, None, 0, date(1970, 1, 1))
    assert event.line == f"u\tios\t{IP_TOKEN}\t{DEVICE_TOKEN}\t\\N\t0\t1970-01-01\n"
    assert event.locale is None


@pytest.mark.parametrize(("value", "text"), HOSTILE[2:])
def test_a_parsed_message_carries_the_same_line(value: str, text: str) -> None:
    """parse() builds the line on its fast path (ASCII) and its slow path (non-ASCII) alike."""
    body = {"user_id": f"u{value}", "device_type": f"d{value}", "locale": f"l{value}",
            "ip": "192.0.2.1", "device_id": "593-47-5928", "app_version": "2.3.0"}
    event = parse(Received("m-3", "rh", json.dumps(body), 1_700_000_000_000), Masker([KEY]))
    assert isinstance(event, LoginEvent)
    assert event.line == (f"u{text}\td{text}\t{IP_TOKEN}\t{DEVICE_TOKEN}\tl{text}\t2003000\t"
                          "2023-11-14\n")


@pytest.mark.parametrize("locale", ["", " ", "   ", "\t"])
def test_a_blank_locale_is_kept_as_it_came(locale: str) -> None:
    """locale is optional free text: blank is a value (unlike user_id), null is NULL."""
    body = {"user_id": "u", "device_type": "ios", "locale": locale, "ip": "192.0.2.1",
            "device_id": "593-47-5928", "app_version": "1"}
    event = parse(Received("m-4", "rh", json.dumps(body), 0), Masker([KEY]))
    assert isinstance(event, LoginEvent) and event.locale == locale
    assert event.line.split("\t")[COLUMNS.index("locale")] == copy_value(locale)
    assert event.app_version == 1_000_000 and event.create_date == date(1970, 1, 1)


@pytest.mark.parametrize("field", ["user_id", "device_type", "device_id", "ip", "app_version"])
@pytest.mark.parametrize("blank", ["", " ", "\t\n"])
def test_blank_required_fields_are_rejected(field: str, blank: str) -> None:
    body = {"user_id": "u", "device_type": "ios", "locale": None, "ip": "192.0.2.1",
            "device_id": "593-47-5928", "app_version": "1", field: blank}
    result = parse(Received("m-5", "rh", json.dumps(body), 0), Masker([KEY]))
    assert result == Rejection("m-5", f"empty_field:{field}")


@pytest.mark.parametrize(("device_id", "outcome"), [
    ("x" * 128, "stored"),
    ("é" * 85, "stored"),
    ("é" * 85 + "x", "too_long:device_id"),
    ("é" * 86, "too_long:device_id"),
    ("📱" * 42 + "xx", "stored"),
    ("📱" * 43, "too_long:device_id"),
    ("  " + "é" * 85 + "  ", "stored"),
])
def test_siv_length_check_counts_utf8_bytes_of_the_trimmed_device_id(device_id: str,
                                                                      outcome: str) -> None:
    """s1.kat1. + base64url(16 + n bytes) <= 256 characters: n <= 170 bytes with this key id."""
    body = {"user_id": "u", "device_type": "ios", "locale": None, "ip": "192.0.2.1",
            "device_id": device_id, "app_version": "1"}
    masker = Masker([KEY], "siv")
    result = parse(Received("m-6", "rh", json.dumps(body), 0), masker)
    if outcome == "stored":
        assert isinstance(result, LoginEvent) and len(result.masked_device_id) <= 256
        assert masker.unmask(result.masked_device_id, "device_id") == device_id.strip()
    else:
        assert result == Rejection("m-6", outcome)
    # hmac tokens have one length whatever the value
    assert isinstance(parse(Received("m-6", "rh", json.dumps(body), 0), Masker([KEY])), LoginEvent)


def test_the_columns_are_the_tables_in_its_order() -> None:
    """COPY names these columns and the line carries its values in this order: the existing
    user_logins table decides it."""
    assert COLUMNS == ("user_id", "device_type", "masked_ip", "masked_device_id", "locale",
                       "app_version", "create_date")
    event = login_event("m-9", "u", "ios", IP_TOKEN, DEVICE_TOKEN, "DE", 7, date(2024, 2, 29))
    assert event.row() == tuple(getattr(event, c) for c in COLUMNS)
    assert event.line[:-1].split("\t") == [str(v) for v in event.row()]
