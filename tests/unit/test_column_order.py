"""One column order for user_logins: LoginEvent's fields, its COPY line, the COPY statement and
the table's DDL must agree, or COPY stores each value in another column without a word."""

from __future__ import annotations

import re
from datetime import date

from login_etl.messages import COLUMNS, LoginEvent, copy_value, login_event
from login_etl.store import _COPY, SCHEMA


def test_the_columns_are_the_fields_between_message_id_and_line() -> None:
    assert LoginEvent._fields == ("message_id", *COLUMNS, "line")
    assert COLUMNS == ("user_id", "device_type", "masked_ip", "masked_device_id", "locale",
                       "app_version", "create_date")


def test_each_value_of_the_line_stands_in_its_column() -> None:
    """Every column a different value, so a swap of any two shows."""
    event = login_event("m-1", "user\t1", "device", "h1.k.ip", "h1.k.dev", "en\\GB", 1_002_003,
                        date(2024, 2, 29))
    cells = event.line.removesuffix("\n").split("\t")
    assert len(cells) == len(COLUMNS)
    for name, cell, value in zip(COLUMNS, cells, event.row(), strict=True):
        expected = value.isoformat() if isinstance(value, date) else copy_value(str(value))
        assert cell == expected, name
        assert getattr(event, name) == value


def test_the_copy_statement_names_the_columns_in_that_order() -> None:
    listed = re.fullmatch(r"COPY user_logins \(([^)]*)\) FROM STDIN", _COPY)
    assert listed is not None
    assert tuple(c.strip() for c in listed.group(1).split(",")) == COLUMNS


def test_the_table_declares_the_columns_in_that_order() -> None:
    body = re.search(r"CREATE TABLE IF NOT EXISTS user_logins\((.*)\);", SCHEMA, re.S)
    assert body is not None
    declared = tuple(part.split()[0] for part in body.group(1).split(","))
    assert declared == COLUMNS
