"""The ledger claim on real PostgreSQL: COPY when every id is new, row by row when one is known."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from login_etl import ledger
from login_etl.store import Store, StoreError, Transaction
from tests.integration.stack import create_database, drop_database


@pytest.fixture
def store(postgres: str) -> Iterator[Store]:
    """A Store on a fresh database with the schema in place."""
    url = create_database()
    store = Store(url, pool_size=1)
    try:
        store.open()
        store.init_schema()
        yield store
    finally:
        store.close()
        drop_database(url)


def test_claim_returns_only_new_ids_and_keeps_the_rest_of_the_transaction(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.claim([("a", "stored"), ("b", "rejected")]) == {"a", "b"}
    with store.transaction() as tx:
        # "b" is known: the COPY fast path fails, only its savepoint is undone
        assert tx.claim([("b", "stored"), ("c", "stored")]) == {"c"}
        assert tx.claim([("d", "stored")]) == {"d"}
    with store.connection() as conn:
        rows = conn.execute("SELECT text_id, rejected FROM login_etl_ledger "
                            "ORDER BY text_id").fetchall()
    assert rows == [("a", False), ("b", True), ("c", False), ("d", False)]


def test_copy_text_payload_round_trips_escapes_and_nulls(store: Store) -> None:
    """Ledger ids and rows go out as one COPY text payload: backslash, tab, newline, carriage
    return and a literal \\N must come back as written, None as NULL."""
    from datetime import date

    from login_etl.messages import login_event

    awkward = ["a\\b", "t\tab", "new\nline", "cr\rx", "\\N", "plain", "é ✓", "\\\\t"]
    events = [login_event(f"id{i}{v}", v, v, "h1.k.ip", "h1.k.dev", v if i % 2 else None,
                         1_002_003, date(2024, 2, 29)) for i, v in enumerate(awkward)]
    with store.transaction() as tx:
        ids = [(e.message_id, "stored") for e in events]
        assert tx.claim(ids) == {e.message_id for e in events}
        tx.insert(events)
    with store.transaction() as tx:  # the escaped ids are found again: a redelivery
        assert tx.claim(ids) == set()
    with store.connection() as conn:
        rows = conn.execute("SELECT user_id, device_type, masked_ip, masked_device_id,"
                            " locale, app_version, create_date FROM user_logins").fetchall()
        ledger = conn.execute("SELECT text_id FROM login_etl_ledger").fetchall()
    assert sorted(rows, key=repr) == sorted((e.row() for e in events), key=repr)
    assert sorted(r[0] for r in ledger) == sorted(e.message_id for e in events)


@pytest.mark.parametrize("column", [1, 2, 5])
def test_one_awkward_free_text_value_is_escaped_alone(store: Store, column: int) -> None:
    """The escape check covers each free-text column on its own (user_id, device_type,
    locale): one tab in a single row's locale must not split that row."""
    from datetime import date

    from login_etl.messages import login_event

    plain = login_event("m0", "u", "ios", "h1.k.ip", "h1.k.dev", "en", 1, date(2024, 1, 1))
    odd = login_event("m1", *[v + "\t\\" if i == column else v
                              for i, v in enumerate(plain[:8])][1:])
    with store.transaction() as tx:
        tx.claim([("m0", "stored"), ("m1", "stored")])
        tx.insert([plain, odd])
    with store.connection() as conn:
        rows = conn.execute("SELECT user_id, device_type, masked_ip, masked_device_id,"
                            " locale, app_version, create_date FROM user_logins").fetchall()
    assert sorted(rows) == sorted([plain.row(), odd.row()])


@pytest.mark.parametrize("first_commits", [True, False])
def test_a_replica_claiming_an_id_being_committed_waits_for_the_outcome(
        store: Store, first_commits: bool) -> None:
    """Two replicas with the same message (a visibility lapse): the second claim blocks on
    the first transaction, then gets nothing if it committed, or the id if it rolled back.
    Exactly one of them stores the row."""
    import threading

    from tests.integration.stack import wait_until

    other_store = Store(store.pool.conninfo, pool_size=1)
    other_store.open()
    second: dict[str, set[str]] = {}

    def other_replica() -> None:
        with other_store.transaction() as tx:
            second["claimed"] = tx.claim([("m-1", "stored")])

    try:
        try:
            with store.transaction() as tx:
                assert tx.claim([("m-1", "stored")]) == {"m-1"}
                replica = threading.Thread(target=other_replica, daemon=True)
                replica.start()
                wait_until(lambda: _lock_waits(other_store) > 0, 10, what="second claim waits")
                if not first_commits:
                    raise RuntimeError("the first replica fails before COMMIT")
        except RuntimeError:
            pass
        replica.join(10)
        assert second["claimed"] == (set() if first_commits else {"m-1"})
    finally:
        other_store.close()


def _lock_waits(store: Store) -> int:
    import psycopg

    with psycopg.connect(store.pool.conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                           " AND datname = current_database()").fetchone()
    return int(row[0]) if row else 0


def _sent(trace: str) -> list[str]:
    """The simple queries of a libpq trace (time, F or B, length, type, contents)."""
    return [fields[4].strip().strip('"') for fields in (line.split("\t") for line in
                                                        trace.splitlines())
            if len(fields) > 4 and fields[1] == "F" and fields[3] == "Query"]


def test_a_transaction_sends_its_begin_and_bounds_in_one_message(store: Store,
                                                                  tmp_path: Path) -> None:
    """One round trip opens a settle: BEGIN, the bounds (with the database's day) and the
    claim's savepoint go out together, never a BEGIN or a SAVEPOINT of its own."""
    with (tmp_path / "trace").open("w+") as trace:
        # The pool's one connection: the one the transaction is given next.
        with store.connection() as conn:
            conn.pgconn.trace(trace.fileno())
        try:
            with store.transaction() as tx:
                assert tx.claim([("a", "stored")]) == {"a"}
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        queries = [q for q in _sent(trace.read()) if q]
    assert queries[0].startswith("BEGIN; SELECT ")
    assert "set_config('statement_timeout', '30000', true)" in queries[0]
    # The claim's savepoint with them, released by COMMIT.
    assert queries[0].endswith("; SAVEPOINT login_etl_claim")
    assert not [q for q in queries[1:] if "BEGIN" in q or "SAVEPOINT" in q]
    assert queries[-1] == "COMMIT"
    assert store.today == ledger.today()


def test_a_failed_transaction_is_rolled_back_and_its_bounds_end_with_it(store: Store) -> None:
    """Bounds hold inside a transaction only (no session state for a pooler to carry over);
    an error rolls everything back and gives the connection back as the pool lent it."""
    with pytest.raises(RuntimeError), store.transaction() as tx:
        assert tx.claim([("a", "stored")]) == {"a"}
        assert tx.conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        raise RuntimeError("work failed")
    with store.connection() as conn:
        assert not conn.autocommit
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
        assert conn.execute("SELECT count(*) FROM login_etl_ledger").fetchone() == (0,)
        conn.rollback()
    with store.transaction() as tx:
        assert tx.claim([("a", "stored")]) == {"a"}


def test_an_error_swallowed_inside_the_transaction_is_never_taken_for_a_commit(
        store: Store) -> None:
    """COMMIT of an aborted transaction answers ROLLBACK without an error: the store must see
    it, or the batch's messages would be deleted with no row behind them."""
    def work(tx: Transaction) -> None:
        assert tx.claim([("a", "stored")]) == {"a"}
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            tx.conn.execute("SELECT 1 / 0")

    with pytest.raises(StoreError):
        store.write(work)
    with store.connection() as conn:
        assert conn.execute("SELECT count(*) FROM login_etl_ledger").fetchone() == (0,)
        conn.rollback()


def test_a_known_id_undoes_the_claim_alone_after_other_work(store: Store) -> None:
    """The savepoint set with BEGIN serves the first statement only: a claim after other
    work in the transaction (an unclaim here) rolls back to a savepoint of its own."""
    with store.transaction() as tx:
        assert tx.claim([("a", "stored", 20000), ("b", "stored", 20000)]) == {"a", "b"}
    with store.transaction() as tx:
        tx.unclaim([("b", 20000)])
        assert tx.claim([("a", "stored", 20000), ("c", "stored", 20000)]) == {"c"}
    with store.connection() as conn:
        ids = conn.execute("SELECT text_id FROM login_etl_ledger ORDER BY 1").fetchall()
    assert ids == [("a",), ("c",)]


def test_an_id_holding_two_uuids_on_two_lines_is_one_text_id(store: Store) -> None:
    """The batch's ids are matched as UUIDs in one pass: an id spanning two UUID-shaped
    lines is still one id, escaped into text_id, not two uuid rows."""
    first, second = "0" * 8 + "-0000-4000-8000-" + "0" * 12, "1" * 8 + "-1111-4111-8111-" + "1" * 12
    odd = f"{first}\n{second}"
    with store.transaction() as tx:
        assert tx.claim([(odd, "stored"), (first, "stored")]) == {odd, first}
    with store.connection() as conn:
        rows = conn.execute("SELECT id::text, text_id FROM login_etl_ledger"
                            " ORDER BY 2 NULLS FIRST").fetchall()
    assert rows == [(first, None), (None, odd)]
