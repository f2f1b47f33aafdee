"""Hostile text through the real COPY: what is read back is exactly what was parsed.

tests/unit/test_copy_line.py pins the line byte for byte; this proves that Postgres reads
that line as the same values (no shifted column, no early end of row, no NULL by accident).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from login_etl.masking import Masker
from login_etl.messages import LoginEvent, Received, parse
from login_etl.settings import MaskingKey
from login_etl.store import Store
from tests.integration.stack import create_database, drop_database

HOSTILE = ["a\tb", "a\nb", "a\rb", "\r\n", "a\\b", "\\N", "\\.", "\\", "\\\\t", "\t\\\n\r",
           "é📱ü", "x\x0by\x0cz\x08", "", " ", "N", ".", "ünïcödé\u2028\u00a0"]


@pytest.fixture
def store(postgres: str) -> Iterator[Store]:
    url = create_database()
    store = Store(url, pool_size=1)
    store.open()
    store.init_schema()
    yield store
    store.close()
    drop_database(url)


def events(masker: Masker) -> list[LoginEvent]:
    parsed = []
    for i, value in enumerate(HOSTILE):
        # the value in every free-text column, and alone as the user_id (so "\." is a whole
        # field at the start of a line)
        for n, user_id in enumerate((f"u{i}{value}", value if value.strip() else f"-{value}")):
            body = {"user_id": user_id, "device_type": f"d{value}"[:32], "locale": value[:32],
                    "ip": f"192.0.2.{i}", "device_id": f"dev{value}", "app_version": "2.3.0"}
            event = parse(Received(f"m-{i}-{n}", "rh", json.dumps(body), 1_700_000_000_000), masker)
            assert isinstance(event, LoginEvent), (value, event)
            parsed.append(event)
    null_locale = {"user_id": "u-null", "device_type": "ios", "locale": None, "ip": "::1",
                   "device_id": "d", "app_version": "1"}
    event = parse(Received("m-null", "rh", json.dumps(null_locale), 0), masker)
    assert isinstance(event, LoginEvent)
    return [*parsed, event]


@pytest.mark.parametrize("mode", ["hmac", "siv"])
def test_hostile_values_survive_copy(store: Store, mode: str) -> None:
    written = events(Masker([MaskingKey("kat1", bytes(range(32)))], mode))
    with store.transaction() as tx:
        tx.insert(written)
    with store.connection() as conn:
        rows = conn.execute(
            "SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version,"
            " create_date FROM user_logins").fetchall()
    assert sorted(rows, key=repr) == sorted((e.row() for e in written), key=repr)
    assert len(rows) == len(written) == 2 * len(HOSTILE) + 1
    with store.connection() as conn:
        nulls = conn.execute("SELECT user_id FROM user_logins WHERE locale IS NULL").fetchall()
        empty = conn.execute("SELECT count(*) FROM user_logins WHERE locale = ''").fetchone()
        backslash_n = conn.execute(
            "SELECT count(*) FROM user_logins WHERE locale = E'\\\\N'").fetchone()
    assert nulls == [("u-null",)]
    assert empty == (2,) and backslash_n == (2,)
