"""Through PgBouncer in transaction mode (Debian's package, default settings): every event once,
bounds in force, a refusal reported in the pooler's own words."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from login_etl import ledger
from login_etl.store import Bounds, Store
from tests.integration.pgbouncer import PgBouncer
from tests.integration.stack import (
    SAMPLE,
    Stack,
    create_database,
    drop_database,
    unique_bodies,
    wait_until,
)
from tests.integration.test_faults import FAST, assert_exactly_once, drain


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    with PgBouncer() as running:
        yield running


@pytest.fixture
def pooled(stack: Stack, bouncer: PgBouncer) -> Stack:
    """The test's stack with the product (not the test's own queries) going through PgBouncer."""
    return replace(stack, extra_env={
        **stack.extra_env, "LOGIN_ETL_DATABASE_URL": bouncer.url(stack.database_url)})


@pytest.fixture
def pooled_store(bouncer: PgBouncer) -> Iterator[tuple[Store, str]]:
    """A Store through PgBouncer with short bounds, and the direct URL of its database."""
    url = create_database()
    store = Store(bouncer.url(url), pool_size=4,
                  bounds=Bounds(statement_ms=1500, lock_ms=400, idle_in_transaction_ms=5000))
    try:
        store.open()
        store.init_schema()
        yield store, url
    finally:
        store.close()
        drop_database(url)


def test_pgbouncer_refuses_the_options_startup_parameter(bouncer: PgBouncer) -> None:
    """The setup is strict where it matters: a startup `options` is refused, so the product
    passing below proves it sends none."""
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(bouncer.url("postgresql://postgres@x/postgres"),
                        options="-c statement_timeout=1000")


def test_sample_through_pgbouncer_gives_99_rows_and_1_dlq_message(pooled: Stack) -> None:
    pooled.cli("load", str(SAMPLE))
    pooled.cli("run", "--until-empty")
    assert pooled.count_rows() == 99
    assert pooled.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert len(pooled.receive_all(dlq=True)) == 1


def test_redelivery_through_pgbouncer_is_a_no_op(pooled: Stack) -> None:
    pooled.send(unique_bodies(300, prefix="again"))
    pooled.cli("run", "--keep-messages", "--until-empty")
    assert pooled.count_rows() == 300
    wait_until(lambda: pooled.depth()["visible"] == 300, 10, what="kept messages released")
    again = pooled.cli("run", "--until-empty")
    stopped = [json.loads(line) for line in again.stderr.splitlines() if '"worker_stopped"' in line]
    assert stopped[0]["duplicates"] == 300 and stopped[0]["stored"] == 0
    assert_exactly_once(pooled, 300)


@pytest.mark.slow
def test_kill_9_through_pgbouncer_loses_and_duplicates_nothing(pooled: Stack,
                                                               tmp_path: Path) -> None:
    pooled.send(unique_bodies(3000))
    rng = random.Random(time.time())
    kills = 0
    for round_ in range(4):
        worker = pooled.start(env=pooled.env(**FAST), log=tmp_path / f"w{round_}.log")
        time.sleep(rng.uniform(0.8, 2.5))
        if worker.poll() is None:
            worker.kill()
            kills += 1
        worker.wait(timeout=10)
    assert kills >= 3
    drain(pooled)
    assert_exactly_once(pooled, 3000)


def test_a_statement_blocked_on_a_lock_ends_at_the_lock_bound(
        pooled_store: tuple[Store, str]) -> None:
    store, direct = pooled_store
    with psycopg.connect(direct) as holder:
        holder.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable), store.transaction() as tx:
            tx.conn.execute("SELECT count(*) FROM user_logins")
        waited = time.monotonic() - started
        holder.rollback()
    assert 0.3 <= waited < 1.4, f"lock_timeout 400 ms, waited {waited:.2f} s"


def test_a_long_statement_ends_at_the_statement_bound(pooled_store: tuple[Store, str]) -> None:
    store, _ = pooled_store
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled), store.bounded() as conn:
        conn.execute("SELECT pg_sleep(10)")
    waited = time.monotonic() - started
    assert 1.4 <= waited < 4, f"statement_timeout 1.5 s, waited {waited:.2f} s"


def test_bounds_hold_in_every_transaction_and_leave_no_session_state(
        pooled_store: tuple[Store, str], bouncer: PgBouncer) -> None:
    """SET LOCAL per transaction: each transaction sees the bounds whatever server connection
    the pooler gives it, and a plain connection through the same pooler sees the defaults."""
    store, direct = pooled_store
    seen: set[tuple[str, str, str]] = set()
    for _ in range(20):
        with store.bounded() as conn:
            row = conn.execute("SELECT current_setting('statement_timeout'),"
                               " current_setting('lock_timeout'),"
                               " current_setting('idle_in_transaction_session_timeout')"
                               ).fetchone()
            assert row is not None
            seen.add(row)
    assert seen == {("1500ms", "400ms", "5s")}
    with psycopg.connect(bouncer.url(direct), autocommit=True) as plain:
        row = plain.execute("SHOW statement_timeout").fetchone()
    assert row is not None and row[0] == "0"


def test_statements_survive_a_change_of_server_connection(
        pooled_store: tuple[Store, str], bouncer: PgBouncer) -> None:
    """Transaction pooling hands the next transaction whichever server connection is free: a
    statement psycopg had prepared on the first one would not exist on the second."""
    store, direct = pooled_store

    def claims(prefix: str) -> None:
        for i in range(8):
            with store.transaction() as tx:
                assert tx.claim([(f"{prefix}{i}", "stored")]) == {f"{prefix}{i}"}
                # the same parametrised statement again and again: what psycopg would prepare
                assert tx.conn.execute("SELECT count(*) FROM login_etl_ledger WHERE"
                                       " text_id = %s", (f"{prefix}{i}",)).fetchone() == (1,)

    claims("a")
    # Another client takes the server connection used so far (PgBouncer reuses the last one
    # freed) and keeps it: the store's next transactions run on another.
    with psycopg.connect(bouncer.url(direct)) as holder:
        holder.execute("SELECT 1")
        claims("b")
        holder.rollback()
    with store.bounded() as conn:
        row = conn.execute("SELECT count(*) FROM login_etl_ledger").fetchone()
    assert row is not None and row[0] == 16


def test_replicas_starting_together_through_pgbouncer_create_the_schema_once(
        bouncer: PgBouncer) -> None:
    url = create_database()
    stores = [Store(bouncer.url(url), pool_size=1) for _ in range(4)]
    errors: list[BaseException] = []

    def start(store: Store) -> None:
        try:
            store.open()
            store.init_schema()
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=start, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with psycopg.connect(url) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename IN"
                                  " ('user_logins', 'login_etl_ledger')").fetchone()
        assert tables is not None and tables[0] == 2
    finally:
        for s in stores:
            s.close()
        drop_database(url)


def test_a_refusal_at_connect_is_reported_in_the_servers_words(pooled: Stack,
                                                               bouncer: PgBouncer) -> None:
    """What the server (here the pooler) sent is shown; libpq's own text, which quotes the
    URL, is not."""
    url = bouncer.url(pooled.database_url) + "?options=-c%20work_mem%3D64MB"
    result = pooled.cli("init-db", env=pooled.env(LOGIN_ETL_DATABASE_URL=url), check=False)
    assert result.returncode == 1, result.stderr
    assert "the server said: unsupported startup parameter: options" in result.stderr
    assert "Traceback" not in result.stderr and str(bouncer.port) not in result.stderr
    unknown = bouncer.url(pooled.database_url).replace("postgres@", "nobody@")
    result = pooled.cli("init-db", env=pooled.env(LOGIN_ETL_DATABASE_URL=unknown), check=False)
    assert result.returncode == 1
    assert "the server said:" in result.stderr and "authentication failed" in result.stderr


def test_a_day_is_packed_through_pgbouncer_and_still_knows_its_ids(
        pooled_store: tuple[Store, str]) -> None:
    """The packing's bounds and locks are all of its own transaction: through transaction
    pooling it packs, and a later claim of that day, on whatever server connection, finds
    every id."""
    store, direct = pooled_store
    day = ledger.today() - 3
    ids = [str(uuid.uuid4()) for _ in range(300)]
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", day) for i in ids]) == set(ids)
    done = store.maintain_ledger(keep_days=5)
    assert (done.days_packed, done.ids_packed) == (1, 300)
    # Every step, the vacuum and reindex of the packed day's partition too, went through.
    assert done.failed == []
    for start in range(0, 300, 30):
        with store.transaction() as tx:
            assert tx.claim([(i, "stored", day) for i in ids[start:start + 30]]) == set()
    with psycopg.connect(direct) as conn:
        left = conn.execute("SELECT count(*) FROM login_etl_ledger").fetchone()
    assert left == (0,)
