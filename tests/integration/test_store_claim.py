"""The ledger claim on real PostgreSQL: COPY when every id is new, row by row when one is known."""

from __future__ import annotations

from login_etl.store import Store
from tests.integration.stack import create_database, drop_database


def test_claim_returns_only_new_ids_and_keeps_the_rest_of_the_transaction(postgres: str) -> None:
    url = create_database()
    store = Store(url, pool_size=1)
    try:
        store.open()
        store.init_schema()
        with store.transaction() as tx:
            assert tx.claim([("a", "stored"), ("b", "rejected")]) == {"a", "b"}
        with store.transaction() as tx:
            # "b" is known: the COPY fast path fails, only its savepoint is undone
            assert tx.claim([("b", "stored"), ("c", "stored")]) == {"c"}
            assert tx.claim([("d", "stored")]) == {"d"}
        with store.connection() as conn:
            rows = conn.execute("SELECT message_id, outcome FROM login_etl_ledger "
                                "ORDER BY message_id").fetchall()
        assert rows == [("a", "stored"), ("b", "rejected"), ("c", "stored"), ("d", "stored")]
    finally:
        store.close()
        drop_database(url)
