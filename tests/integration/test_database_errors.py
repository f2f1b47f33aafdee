"""pgerrors' table of SQLSTATEs against a real PostgreSQL: each error a real server can be made
to send is sent, and the worker's reading of it checked (wait, this row, stop).

And a race inside the ledger (a claim routed to the default partition while its day's
partition is attached) that the server reports as a check violation: never a row's fault.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from login_etl import ledger, pgerrors
from login_etl.pgerrors import ROW, STOP, WAIT, StoreError, verdict
from login_etl.store import Store
from tests.integration.stack import ADMIN_DSN, Stack, wait_until

ROW_SQL = ("INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, locale,"
           " app_version, create_date) VALUES ('u', 'ios', 'ip', 'dev', 'en', 1, now())")


@pytest.fixture
def store(stack: Stack) -> Iterator[Store]:
    store = Store(stack.database_url, pool_size=2)
    store.open()
    store.init_schema()
    yield store
    store.close()


def raised(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("nothing raised")


def in_transaction(url: str, *statements: str) -> BaseException:
    """The error the last of the statements raises, run in one transaction."""
    with psycopg.connect(url) as conn:
        def run() -> None:
            for sql in statements:
                conn.execute(sql)
        return raised(run)


def test_read_only(stack: Stack, store: Store) -> None:
    error = in_transaction(stack.database_url, "SET TRANSACTION READ ONLY", ROW_SQL)
    assert getattr(error, "sqlstate", None) == "25006"
    assert verdict(error) == WAIT and pgerrors.drops_session(error)


def test_lock_timeout(stack: Stack, store: Store) -> None:
    with psycopg.connect(stack.database_url) as holder:
        holder.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        error = in_transaction(stack.database_url, "SET lock_timeout = '100ms'", ROW_SQL)
    assert getattr(error, "sqlstate", None) == "55P03" and verdict(error) == WAIT


def test_statement_timeout(stack: Stack, store: Store) -> None:
    error = in_transaction(stack.database_url, "SET statement_timeout = '50ms'",
                           "SELECT pg_sleep(2)")
    assert getattr(error, "sqlstate", None) == "57014" and verdict(error) == WAIT


def test_a_roles_connection_limit(stack: Stack, store: Store) -> None:
    role = f"limited_{uuid.uuid4().hex[:8]}"
    database = stack.database_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
        admin.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
    url = stack.database_url.replace("postgres@", f"{role}@", 1)
    try:
        with psycopg.connect(url):
            error = raised(lambda: psycopg.connect(url, connect_timeout=5).close())
        assert isinstance(error, psycopg.OperationalError)
        assert "too many connections" in pgerrors.why_not(error)
        assert verdict(error) == WAIT and not pgerrors.refused_for_good(error)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_pg_terminate_backend(stack: Stack, store: Store) -> None:
    with psycopg.connect(stack.database_url) as conn:
        pid = conn.info.backend_pid
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        error = raised(lambda: conn.execute(ROW_SQL))
    assert isinstance(error, psycopg.OperationalError) and verdict(error) == WAIT


@pytest.mark.parametrize(("statements", "code", "what"), [
    (("ALTER TABLE user_logins ADD CONSTRAINT no_u CHECK (user_id <> 'u') NOT VALID", ROW_SQL),
     "23514", ROW),
    ((ROW_SQL.replace("'ios'", "repeat('x', 40)"),), "22001", ROW),
    (("INSERT INTO no_such_table VALUES (1)",), "42P01", STOP),
    (("SET ROLE pg_read_all_data", ROW_SQL), "42501", STOP),
], ids=["check-on-rows", "too-long", "no-table", "no-privilege"])
def test_rows_and_refusals(stack: Stack, store: Store, statements: tuple[str, ...], code: str,
                           what: str) -> None:
    error = in_transaction(stack.database_url, *statements)
    assert getattr(error, "sqlstate", None) == code and verdict(error) == what


def test_a_write_to_a_read_only_database_is_an_outage(stack: Stack, store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Through Store.write: retried under the commit policy, then a StoreError a wait heals
    (before: 'refused the batch', and the worker halted)."""
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda _s: None)
    database = stack.database_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
    try:
        error = raised(lambda: store.write(lambda tx: tx.conn.execute(ROW_SQL)))
        assert isinstance(error, StoreError) and error.retryable is True
        assert not store.ping()
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {database} RESET default_transaction_read_only")
    store.write(lambda tx: tx.conn.execute(ROW_SQL))
    assert store.ping()


def test_a_claim_racing_the_attach_of_its_day_is_not_a_refused_row(stack: Stack,
                                                                    store: Store) -> None:
    """A claim for a day without a partition goes to the default partition; the day's
    partition is attached (init-db, housekeeping) while the claim waits for the default
    partition's lock; the server then refuses the claimed id with a check violation (23514) on
    the ledger. Retried, the claim files it in the new partition: one id, new, no refusal
    (before: RowRefused 23514, and a one-message batch went to the DLQ as db_rejected:23514)."""
    day = ledger.today() + ledger.AHEAD_DAYS + 3
    message_id = str(uuid.uuid4())
    result: dict[str, Any] = {}

    def claim() -> None:
        try:
            result["new"] = store.write(lambda tx: tx.claim([(message_id, "stored", day)]))
        except Exception as exc:
            result["error"] = exc

    with psycopg.connect(stack.database_url) as attacher:
        ledger.add_partition(attacher, day)
        claimer = threading.Thread(target=claim)
        claimer.start()
        wait_until(lambda: stack.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'login-etl%%' AND wait_event_type = 'Lock'")[0][0] == 1,
            10, interval=0.02, what="the claim waiting for the default partition")
        time.sleep(0.1)
        attacher.commit()
    claimer.join(30)
    assert "error" not in result, repr(result.get("error"))
    assert result["new"] == {message_id}
    where = stack.query(f"SELECT tableoid::regclass::text FROM {ledger.TABLE} WHERE id = %s",
                        (message_id,))
    assert where == [(ledger.partition_name(day),)]
