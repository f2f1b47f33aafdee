"""The day-partitioned ledger on real PostgreSQL: compact rows, days made and dropped, the
unpartitioned ledger of before migrated by init-db, redeliveries across a day boundary."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from login_etl import ledger
from login_etl.messages import Received
from login_etl.store import Store
from tests.integration.stack import (
    Stack,
    log_events,
    query,
    unique_bodies,
    wait_until,
)

# The schema of the ledger before it was partitioned, as init-db created it then.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS user_logins(
  user_id varchar(128), device_type varchar(32), masked_ip varchar(256),
  masked_device_id varchar(256), locale varchar(32), app_version integer,
  create_date date);
CREATE TABLE IF NOT EXISTS login_etl_ledger(
  message_id text PRIMARY KEY,
  outcome text NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS login_etl_ledger_processed_at ON login_etl_ledger (processed_at);
"""


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    store = Store(database, pool_size=2)
    try:
        store.open()
        store.init_schema(keep_days=3)
        yield store
    finally:
        store.close()


def _where(url: str) -> dict[str, tuple[str, str]]:
    """message id -> (partition, day) for every ledger row."""
    rows = query(url, "SELECT coalesce(id::text, text_id), tableoid::regclass::text, day::text"
                       " FROM login_etl_ledger")
    return {r[0]: (r[1], r[2]) for r in rows}


def _packed(url: str) -> dict[str, int]:
    """id -> day for every packed id."""
    rows = query(url, "SELECT unnest(ids)::text, day FROM login_etl_ledger_packed")
    return {r[0]: ledger.epoch_day(r[1]) for r in rows}


def test_partitions_from_the_retention_back_to_days_ahead(store: Store, database: str) -> None:
    today = ledger.today()
    assert query(database, "SELECT relkind::text FROM pg_class WHERE relname ="
                            " 'login_etl_ledger'") == [("p",)]
    with store.bounded() as conn:
        assert ledger.partitions(conn) == set(range(today - 3, today + ledger.AHEAD_DAYS + 1))
    # No time index: each partition has exactly its two unique id indexes.
    indexes = query(database, "SELECT indexdef FROM pg_indexes WHERE tablename = %s",
                     (ledger.partition_name(today),))
    assert len(indexes) == 2 and all("UNIQUE" in i[0] for i in indexes)


def test_uuid_ids_are_stored_as_uuid_others_as_text(store: Store, database: str) -> None:
    sqs_id = str(uuid.uuid4())
    upper = str(uuid.uuid4()).upper()
    others = ["redrive:" + sqs_id, upper, "id\twith\\tab"]
    today = ledger.today()
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", today) for i in [sqs_id, *others]]) == {sqs_id, *others}
    rows = query(database, "SELECT id::text, text_id FROM login_etl_ledger")
    assert (sqs_id, None) in rows
    assert sorted(t for _, t in rows if t) == sorted(others), "read back exactly as given"
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", today) for i in [sqs_id, *others]]) == set()
        fresh = str(uuid.uuid4())
        assert tx.claim([(sqs_id, "stored", today), (fresh, "stored", today)]) == {fresh}


def test_a_redelivery_is_a_duplicate_across_a_day_boundary(store: Store, database: str) -> None:
    """Sent at 23:59:59.999 UTC, first settled then; redelivered the next day: the day comes
    from SentTimestamp, so both claims meet in the same partition."""
    today = ledger.today()
    sent_ms = today * 86_400_000 - 1
    message = Received(str(uuid.uuid4()), "rh", "{}", sent_ms)
    assert message.day == today - 1
    with store.transaction() as tx:
        assert tx.claim([(message.message_id, "stored", message.day)]) == {message.message_id}
    # The redelivery, processed "tomorrow": same message, same SentTimestamp, a new receipt.
    again = Received(message.message_id, "rh2", "{}", sent_ms, receive_count=2)
    with store.transaction() as tx:
        assert tx.claim([(again.message_id, "stored", again.day)]) == set()
    assert _where(database)[message.message_id] == (
        ledger.partition_name(today - 1), ledger.from_epoch_day(today - 1).isoformat())


def test_days_past_the_retention_are_dropped_whole(store: Store, database: str) -> None:
    today = ledger.today()
    old, kept = str(uuid.uuid4()), str(uuid.uuid4())
    ancient = str(uuid.uuid4())
    with store.transaction() as tx:
        tx.claim([(old, "stored", today - 3), (kept, "stored", today - 2),
                  (ancient, "rejected", today - 40)])
    where = _where(database)
    assert where[ancient][0] == ledger.DEFAULT, "a day without a partition goes to the default"
    done = store.maintain_ledger(keep_days=2)
    assert (done.days_dropped, done.ids_deleted) == (1, 1)
    # Kept: as a row, or packed when the day ended more than a day and an hour ago.
    assert set(_where(database)) | set(_packed(database)) == {kept}
    with store.bounded() as conn:
        assert min(ledger.partitions(conn)) == today - 2
    with store.transaction() as tx:
        assert tx.claim([(kept, "stored", today - 2)]) == set(), "a kept day still dedupes"
    done = store.maintain_ledger(keep_days=2)
    assert (done.days_dropped, done.ids_deleted) == (0, 0)


def test_missing_days_ahead_are_created_and_the_default_is_emptied_into_them(
        store: Store, database: str) -> None:
    today = ledger.today()
    ahead = today + ledger.AHEAD_DAYS
    query(database, f"DROP TABLE {ledger.partition_name(ahead)}")
    early = str(uuid.uuid4())
    with store.transaction() as tx:
        tx.claim([(early, "stored", ahead)])
    assert _where(database)[early][0] == ledger.DEFAULT
    store.maintain_ledger(keep_days=3)
    assert _where(database)[early][0] == ledger.partition_name(ahead)
    with store.transaction() as tx:
        assert tx.claim([(early, "stored", ahead)]) == set()


def test_init_db_migrates_the_unpartitioned_ledger_without_losing_an_id(stack: Stack) -> None:
    """Today's schema with ids in it; init-db; every id is still a duplicate, new ids are
    stored, and the old table goes once its newest id is past the retention."""
    stack.query(OLD_SCHEMA)
    old_ids = [str(uuid.uuid4()) for _ in range(2000)] + ["redrive:" + str(uuid.uuid4())]
    with psycopg.connect(stack.database_url) as conn, conn.cursor().copy(
            "COPY login_etl_ledger (message_id, outcome, processed_at) FROM STDIN") as copy:
        for i, message_id in enumerate(old_ids):
            copy.write_row((message_id, "stored", f"2026-01-01 00:00:{i % 60:02d}+00"))
    # One of them is still in the queue (committed, not yet deleted): it must not be stored
    # again when it is redelivered after the upgrade.
    stack.send(unique_bodies(3, prefix="after"))
    first = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=1,
                                      VisibilityTimeout=0)["Messages"][0]
    stack.query("INSERT INTO login_etl_ledger (message_id, outcome) VALUES (%s, 'stored')",
                (first["MessageId"],))
    stack.cli("init-db")
    assert stack.query("SELECT relkind::text FROM pg_class WHERE relname = 'login_etl_ledger'"
                       ) == [("p",)]
    legacy = {r[0] for r in stack.query("SELECT message_id FROM login_etl_ledger_legacy")}
    assert legacy == {*old_ids, first["MessageId"]}
    stack.cli("run", "--until-empty")
    assert stack.count_rows() == 2, "the message already in the old ledger is a duplicate"
    store = Store(stack.database_url)
    store.open()
    try:
        store.init_schema()
        with store.transaction() as tx:
            assert tx.claim([(i, "stored", ledger.today()) for i in old_ids]) == set()
        fresh = str(uuid.uuid4())
        with store.transaction() as tx:
            assert tx.claim([(fresh, "stored", ledger.today()), (old_ids[0], "stored")]) == {
                fresh}
        stack.query("UPDATE login_etl_ledger_legacy SET processed_at = now() - interval"
                    " '20 days'")
        store.maintain_ledger(keep_days=15)
        assert not store.legacy
        assert stack.query("SELECT to_regclass('login_etl_ledger_legacy')") == [(None,)]
        with store.transaction() as tx:
            assert tx.claim([(str(uuid.uuid4()), "stored")]) != set()
    finally:
        store.close()


def test_the_worker_keeps_days_for_the_queues_own_retention(stack: Stack, tmp_path: Any) -> None:
    """A queue keeping messages 2 days: ledger days older than 3 days are dropped by the
    running worker, the rest kept."""
    stack.sqs.set_queue_attributes(QueueUrl=stack.queue_url,
                                   Attributes={"MessageRetentionPeriod": str(2 * 86_400)})
    store = Store(stack.database_url)
    store.open()
    try:
        store.init_schema(keep_days=6)
    finally:
        store.close()
    today = ledger.today()
    worker = stack.start(log=tmp_path / "w.log")
    try:
        wait_until(lambda: any(e.get("event") == "ledger_pruned"
                               for e in log_events(tmp_path / "w.log")), 30, what="pruned")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    pruned = [e for e in log_events(tmp_path / "w.log") if e.get("event") == "ledger_pruned"]
    assert pruned[0]["keep_days"] == 3 and pruned[0]["days"] == 3
    names = {r[0] for r in stack.query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid")}
    assert ledger.partition_name(today - 3) in names
    assert ledger.partition_name(today - 4) not in names


def test_a_redriven_reject_is_filed_under_its_origins_day(stack: Stack) -> None:
    """A hand-off sealed with its origin's day (yesterday): the redriven copy is claimed on
    that day, whatever day the copy was sent, so every copy of it agrees."""
    from login_etl.masking import Masker
    from login_etl.settings import Settings

    masker = Masker(Settings.from_env(stack.env()).masking_keys)
    yesterday = ledger.today() - 1
    origin = masker.seal(f"an-origin-id|{yesterday}")
    body = unique_bodies(1, prefix="fixed")[0]
    for _ in range(2):
        stack.sqs.send_message(QueueUrl=stack.dlq_url, MessageBody=body, MessageAttributes={
            "reason": {"DataType": "String", "StringValue": "invalid_ip"},
            "login_etl_origin": {"DataType": "String", "StringValue": origin}})
    assert "moved 2 messages" in stack.cli("dlq", "redrive").stdout
    stack.cli("run", "--until-empty")
    assert stack.count_rows() == 1
    rows = stack.query("SELECT text_id, day FROM login_etl_ledger")
    assert [(r[0], str(r[1])) for r in rows] == [
        ("redrive:an-origin-id", ledger.from_epoch_day(yesterday).isoformat())]


def test_a_reject_handed_off_carries_its_day_to_the_dlq(stack: Stack) -> None:
    from login_etl.masking import Masker
    from login_etl.settings import Settings

    stack.send([json.dumps({"user_id": "x"})])
    stack.cli("run", "--until-empty")
    [copy] = stack.receive_all(dlq=True)
    masker = Masker(Settings.from_env(stack.env()).masking_keys)
    unsealed = masker.unseal(copy["MessageAttributes"]["login_etl_origin"]["StringValue"])
    assert unsealed is not None
    origin, _, day = unsealed.rpartition("|")
    assert origin == copy["MessageAttributes"]["source_message_id"]["StringValue"]
    filed = stack.query("SELECT day FROM login_etl_ledger WHERE id = %s AND rejected", (origin,))
    assert [str(r[0]) for r in filed] == [ledger.from_epoch_day(int(day)).isoformat()]


def test_a_day_detached_but_not_dropped_is_dropped_by_the_next_run(store: Store,
                                                                   database: str) -> None:
    """A day is detached, then dropped in a second transaction; a run that stopped between
    the two leaves a table the next run finishes."""
    today = ledger.today()
    name = ledger.partition_name(today - 3)
    query(database, f"ALTER TABLE login_etl_ledger DETACH PARTITION {name}")
    assert query(database, "SELECT to_regclass(%s)::text", (name,)) == [(name,)]
    store.maintain_ledger(keep_days=3)
    assert query(database, "SELECT to_regclass(%s)::text", (name,)) == [(None,)]
    with store.bounded() as conn:
        assert today - 2 in ledger.partitions(conn) and today in ledger.partitions(conn)


def test_a_role_without_create_runs_when_days_ahead_are_missing(stack: Stack) -> None:
    """The days ahead were not made (no worker with CREATE ran for days): the schema check
    lets a role without CREATE run, its ids go to the default partition, still deduplicated."""
    stack.cli("init-db")
    today = ledger.today()
    for day in range(today, today + ledger.AHEAD_DAYS + 1):
        stack.query(f"DROP TABLE {ledger.partition_name(day)}")
    stack.query("DROP ROLE IF EXISTS etl_nocreate_test; CREATE ROLE etl_nocreate_test LOGIN;"
                "GRANT SELECT, INSERT, DELETE ON user_logins, login_etl_ledger TO"
                " etl_nocreate_test; GRANT SELECT ON login_etl_ledger_packed TO"
                " etl_nocreate_test; REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    try:
        stack.send(unique_bodies(20, prefix="nocreate"))
        url = stack.database_url.replace("postgres@", "etl_nocreate_test@")
        env = stack.env(LOGIN_ETL_DATABASE_URL=url)
        stack.cli("run", "--keep-messages", "--until-empty", env=env)
        wait_until(lambda: stack.depth()["visible"] == 20, 10, what="kept messages released")
        stack.cli("run", "--until-empty", env=env)
        assert stack.count_rows() == 20 and stack.duplicate_rows() == 0
        where = _where(stack.database_url)
        assert {p for p, _ in where.values()} == {ledger.DEFAULT}
        # A message of yesterday (sent before midnight) is looked up in the packed ids too.
        restricted = Store(url, pool_size=1)
        restricted.open()
        try:
            late = str(uuid.uuid4())
            for expected in ({late}, set()):
                with restricted.transaction() as tx:
                    assert tx.claim([(late, "stored", today - 1)]) == expected
        finally:
            restricted.close()
    finally:
        stack.query("DROP OWNED BY etl_nocreate_test; DROP ROLE etl_nocreate_test")


def test_a_packed_day_still_knows_every_id(store: Store, database: str) -> None:
    """A day that ended over a day ago is packed into arrays; every id it held is still a
    duplicate, a new id of that day is stored once and packed by the next run, and however
    many come late no packed row grows past PACK_IDS."""
    day = ledger.today() - 3
    # Days kept: 5 (the day stays whatever midnight passes during the test).
    keep = 5
    ids = [str(uuid.uuid4()) for _ in range(1000)] + ["redrive:" + str(uuid.uuid4())]
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", day) for i in ids]) == set(ids)
    done = store.maintain_ledger(keep_days=keep)
    assert (done.days_packed, done.ids_packed) == (1, 1001)
    assert _where(database) == {}, "the day's partition is emptied"
    assert _sizes(database, day) == [ledger.PACK_IDS] * 8 + [41]
    # The text id is packed as the uuid of its md5.
    assert len(_packed(database)) == 1001
    fresh = [str(uuid.uuid4()) for _ in range(5)] + ["redrive:" + str(uuid.uuid4())]
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", day) for i in ids]) == set()
        assert tx.claim([(i, "stored", day) for i in ids[:10] + fresh]) == set(fresh)
    assert set(_where(database)) == set(fresh), "only the new ids are filed"
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", day) for i in fresh + ids[-3:]]) == set()
    done = store.maintain_ledger(keep_days=keep)
    assert (done.days_packed, done.ids_packed) == (1, 6)
    assert _where(database) == {} and len(_packed(database)) == 1007
    # A backlog of late ids, twice the day's first count: the rows they fall in are cut again.
    late = [str(uuid.uuid4()) for _ in range(2000)]
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", day) for i in late]) == set(late)
    assert store.maintain_ledger(keep_days=keep).ids_packed == 2000
    sizes = _sizes(database, day)
    assert max(sizes) <= ledger.PACK_IDS and sum(sizes) == 3007
    assert len(_packed(database)) == 3007
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", day) for i in ids + fresh + late]) == set()
    # Today and yesterday are never packed: their ids stay rows, found by the unique index.
    recent = [(str(uuid.uuid4()), "stored", ledger.today() - n) for n in (0, 1)]
    with store.transaction() as tx:
        tx.claim(recent)
    assert store.maintain_ledger(keep_days=keep).days_packed == 0
    assert set(_where(database)) == {i for i, _, _ in recent}


def _sizes(url: str, day: int) -> list[int]:
    """The number of ids in each packed row of a day, in the order of their ranges."""
    rows = query(url, "SELECT cardinality(ids) FROM login_etl_ledger_packed WHERE day = %s"
                       " ORDER BY lo", (ledger.from_epoch_day(day),))
    return [int(c) for (c,) in rows]


def test_claims_racing_packings_store_each_id_once(store: Store, database: str) -> None:
    """Two claimers take random ids of one old day, repeats included, while the day is packed
    again and again: every id is reported new exactly once."""
    day = ledger.today() - 3
    pool = [str(uuid.uuid4()) for _ in range(20_000)]
    new: list[str] = []
    sampled: set[str] = set()
    stop = threading.Event()
    errors: list[BaseException] = []
    packings = [0]
    # However fast the machine, the claims go on until the day has been packed three times
    # meanwhile (the race under test), within a bound.
    claim_until = time.monotonic() + 90

    def claimer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            rounds = 0
            while rounds < 120 or (packings[0] < 3 and time.monotonic() < claim_until):
                rounds += 1
                batch = rng.sample(pool, 60)
                sampled.update(batch)
                # The product's way in: a deadlock between the two claimers (the same ids in
                # another order) is retried as a whole transaction.
                new.extend(racing.write(lambda tx, b=batch: tx.claim(  # type: ignore[misc]
                    [(i, "stored", day) for i in b])))
        except BaseException as exc:
            errors.append(exc)

    def packer() -> None:
        while not stop.is_set():
            try:
                packings[0] += racing.maintain_ledger(keep_days=5).days_packed
            except BaseException as exc:
                errors.append(exc)
                return

    racing = Store(database, pool_size=3)
    racing.open()
    try:
        threads = [threading.Thread(target=claimer, args=(n,)) for n in range(2)]
        pack_thread = threading.Thread(target=packer)
        pack_thread.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        stop.set()
        pack_thread.join(60)
    finally:
        racing.close()
    assert not errors, errors
    assert packings[0] >= 3, "the day was packed while it was claimed"
    assert len(new) == len(set(new)), "an id reported new twice"
    assert set(new) == sampled, "an id never claimed before reported as a duplicate"
    assert set(_where(database)) | set(_packed(database)) == set(new)


def test_init_schema_adds_packed_ids_to_a_partitioned_ledger_without_them(
        store: Store, database: str) -> None:
    """A ledger partitioned by day but made before ids were packed: the next start creates
    the packed table and a partition for every day there is, and the days pack as usual."""
    day = ledger.today() - 3
    ids = [str(uuid.uuid4()) for _ in range(50)]
    with store.transaction() as tx:
        tx.claim([(i, "stored", day) for i in ids])
    query(database, "DROP TABLE login_etl_ledger_packed")
    upgraded = Store(database, pool_size=1)
    upgraded.open()
    try:
        upgraded.init_schema(keep_days=3)
        with upgraded.bounded() as conn:
            assert ledger.partitions(conn, ledger.PACKED) == ledger.partitions(conn)
        assert upgraded.maintain_ledger(keep_days=5).ids_packed == 50
        with upgraded.transaction() as tx:
            assert tx.claim([(i, "stored", day) for i in ids]) == set()
    finally:
        upgraded.close()
