"""Why a connection failed, in the words `run` prints: the server's own refusal, else a fixed
description matched from libpq's text, never that text itself (it can quote the URL)."""

from __future__ import annotations

import psycopg
import psycopg.errors as pg
import pytest

from login_etl.pgerrors import refused_for_good, why_not

AT = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: '

BY_SQLSTATE = [
    ("28P01", "password authentication failed (28P01)"),
    ("28000", "the role may not log in here (28000)"),
    ("3D000", "the database does not exist (3D000)"),
    ("42501", "permission denied (42501)"),
    ("53300", "too many connections (53300)"),
    ("57P03", "the server is starting up or shutting down (57P03)"),
]


@pytest.mark.parametrize(("sqlstate", "expected"), BY_SQLSTATE)
def test_a_refusal_with_a_sqlstate_is_named_by_it(sqlstate: str, expected: str) -> None:
    assert why_not(pg.lookup(sqlstate)("postgresql://u:secret@h/db")) == expected


# libpq's client-side text: matched, never shown (no "failed: FATAL:" part to quote).
BY_WORDING = [
    ("password authentication failed for user", "password authentication failed"),
    ("no pg_hba.conf entry for host", "refused by the server's pg_hba.conf"),
    ('database "x" does not exist', "the database does not exist"),
    ('role "x" does not exist', "the role does not exist"),
    ("Connection refused", "connection refused"),
    ('could not resolve host name "db"', "host name not found"),
    ('could not translate host name "db" to address', "host name not found"),
    ("timeout expired", "timed out"),
    ("Connection timed out", "timed out"),
    ("SSL SYSCALL error: EOF detected", "TLS negotiation failed"),
    ('invalid connection option "x"', "an invalid connection option"),
    ("could not receive data from server", "OperationalError"),
    ('relation "x" does not exist', "OperationalError"),
    ('role "x" is not permitted to log in', "OperationalError"),
]


@pytest.mark.parametrize(("text", "expected"), BY_WORDING)
def test_a_client_side_failure_is_described_never_quoted(text: str, expected: str) -> None:
    assert why_not(psycopg.OperationalError(f"postgresql://u:s3cret@h/db {text}")) == expected


def test_a_database_word_alone_is_not_a_missing_database() -> None:
    assert why_not(psycopg.OperationalError("the database system is in recovery")) == (
        "OperationalError")


@pytest.mark.parametrize("level", ["FATAL", "ERROR", "PANIC"])
def test_the_server_is_quoted_in_its_own_words(level: str) -> None:
    error = psycopg.OperationalError(f"{AT}{level}:  unsupported startup parameter: options")
    assert why_not(error) == "the server said: unsupported startup parameter: options"


def test_a_known_refusal_carries_the_servers_words() -> None:
    error = psycopg.OperationalError(f'{AT}FATAL:  role "etl" does not exist')
    assert why_not(error) == 'the role does not exist (the server said: role "etl" does not exist)'


@pytest.mark.parametrize(("said", "quoted"), [
    ("x", "x"), ("y" * 300, "y" * 300), ("z" * 301, "z" * 300)])
def test_the_servers_words_are_bounded(said: str, quoted: str) -> None:
    assert why_not(psycopg.OperationalError(f"{AT}FATAL:  {said}")) == (
        f"the server said: {quoted}")


def test_the_servers_words_reach_no_terminal_raw() -> None:
    said = why_not(psycopg.OperationalError(f"{AT}FATAL:  no\x1b[2J\u202eway"))
    assert said == "the server said: no\\u001b[2J\\u202eway"


def test_an_empty_server_line_is_not_quoted() -> None:
    assert why_not(psycopg.OperationalError(f"{AT}FATAL:  \nmore")) == "OperationalError"


@pytest.mark.parametrize(("said", "for_good"), [
    ('password authentication failed for user "etl"', True),
    ('no pg_hba.conf entry for host "10.0.0.1"', True),
    ('database "etl" does not exist', True),
    ('role "etl" does not exist', True),
    ('role "" does not exist', True),
    ("unsupported startup parameter: options", True),
    ("the database system is starting up", False),
    ("sorry, too many clients already", False),
])
def test_refusals_no_wait_heals(said: str, for_good: bool) -> None:
    assert refused_for_good(psycopg.OperationalError(f"{AT}FATAL:  {said}")) is for_good
