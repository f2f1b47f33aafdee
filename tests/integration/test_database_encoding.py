"""Databases that are not UTF-8: text reaches the server as UTF-8 (client_encoding), so the
server decides per row what it can store; a value it cannot represent is that row's reject
(db_rejected:<sqlstate>), found by halving, and never holds up the batch. Real Postgres with
a LATIN1 database created here, real LocalStack."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from login_etl import store as store_module
from login_etl.masking import Masker
from login_etl.messages import parse
from login_etl.pipeline import Pipeline
from login_etl.queue import Queue
from login_etl.settings import Settings
from login_etl.store import Store
from tests.integration.stack import ADMIN_DSN, Stack, drop_database, sample_bodies, sample_events

LATIN1_USER = "Müller-Ærøskøbing ÿ½§"
UNREPRESENTABLE = "Zoë’s phone €"


@contextlib.contextmanager
def database_in(stack: Stack, encoding: str) -> Iterator[Stack]:
    """The stack's queues on a database of its own in `encoding`."""
    name = f"t_{encoding.lower()}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE \"{name}\" ENCODING '{encoding}' LC_COLLATE 'C'"
                     " LC_CTYPE 'C' TEMPLATE template0")
    url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield Stack(stack.sqs, stack.queue_url, stack.dlq_url, url, key=stack.key)
    finally:
        drop_database(url)


@pytest.fixture
def latin1_stack(stack: Stack) -> Iterator[Stack]:
    with database_in(stack, "LATIN1") as latin1:
        yield latin1


def event(user_id: str) -> str:
    return json.dumps({**sample_events()[0], "user_id": user_id}, ensure_ascii=False)


def test_latin1_database_stores_latin1_text_and_rejects_the_rest_per_row(
        latin1_stack: Stack) -> None:
    s = latin1_stack
    assert s.query("SELECT pg_encoding_to_char(encoding) FROM pg_database"
                   " WHERE datname = current_database()") == [("LATIN1",)]
    s.send([*sample_bodies(), event(LATIN1_USER), event(UNREPRESENTABLE)])
    result = s.cli("run", "--until-empty", timeout=120)
    assert "Traceback" not in result.stderr
    assert s.count_rows() == 99 + 1
    assert s.query("SELECT count(*) FROM user_logins WHERE user_id = %s",
                   (LATIN1_USER,)) == [(1,)]
    with psycopg.connect(s.database_url, client_encoding="LATIN1") as conn:
        raw = conn.execute("SELECT convert_to(user_id, 'LATIN1') FROM user_logins"
                           " WHERE user_id LIKE 'M%%ller%%'").fetchone()
    assert raw is not None and bytes(raw[0]) == LATIN1_USER.encode("latin-1")
    dead = {m["Body"]: m["MessageAttributes"]["reason"]["StringValue"]
            for m in s.receive_all(dlq=True)}
    assert dead[event(UNREPRESENTABLE)] == "db_rejected:22P05"
    assert len(dead) == 2
    assert s.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_text_the_driver_cannot_encode_is_that_rows_reject(
        latin1_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection whose client encoding is not UTF-8 (a pooler that overrides it, say):
    psycopg raises UnicodeEncodeError while encoding the COPY, with no SQLSTATE. Halving
    isolates the row all the same."""
    s = latin1_stack
    monkeypatch.setitem(store_module.CONNECTION_KWARGS, "client_encoding", "LATIN1")
    s.send([event(LATIN1_USER), event(UNREPRESENTABLE), *sample_bodies()[:8]])
    masker = Masker(Settings.from_env(s.env()).masking_keys)
    store = Store(s.database_url, pool_size=1)
    store.open()
    store.init_schema()
    source = Queue(s.sqs, s.queue_url, sealer=masker)
    dlq = Queue(s.sqs, s.dlq_url, "dlq", sealer=masker)
    received: list[Any] = []
    try:
        while len(received) < 10:
            received += source.receive(wait_seconds=2, visibility_timeout=60)
        outcome = Pipeline(store, source, dlq).settle([(m, parse(m, masker)) for m in received])
    finally:
        store.close()
    assert outcome.stored == 9
    assert [reason for _, reason in outcome.rejected] == ["db_rejected:encoding"]
    assert s.count_rows() == 9


def test_sql_ascii_database_stores_every_text_as_sent(stack: Stack) -> None:
    """SQL_ASCII converts nothing: with UTF-8 sent, what is read back as UTF-8 is what was
    sent (no row refused, none garbled)."""
    with database_in(stack, "SQL_ASCII") as s:
        s.send([*sample_bodies(), event(LATIN1_USER), event(UNREPRESENTABLE)])
        result = s.cli("run", "--until-empty", timeout=120)
        assert "Traceback" not in result.stderr
        assert s.count_rows() == 99 + 2
        assert s.query("SELECT count(*) FROM user_logins WHERE user_id IN (%s, %s)",
                       (LATIN1_USER, UNREPRESENTABLE)) == [(2,)]
        assert len(s.receive_all(dlq=True)) == 1
