"""The ledger under clocks, locks and concurrent claimers, on real PostgreSQL: a replica whose
clock is days off (libfaketime), schema creation meeting held locks, overlapping claimers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from login_etl import ledger
from login_etl.store import Bounds, Store
from tests.integration.stack import query

FAKETIME = shutil.which("faketime")
# The days a test keeps: the days it files stay in the window whatever midnight passes.
KEEP = 5
# One replica's work, run under a shifted clock: housekeeping, then one claim.
_REPLICA = """
import json, sys
from login_etl.store import Bounds, Store
url, keep, claims, maintain = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
store = Store(url, pool_size=1)
store.open()
done = store.maintain_ledger(keep_days=keep) if maintain == "yes" else None
with store.transaction() as tx:
    new = tx.claim([tuple(c) for c in claims])
store.close()
print(json.dumps({"dropped": done.days_dropped if done else 0,
                  "packed": done.days_packed if done else 0, "new": sorted(new)}))
"""


@pytest.fixture
def store(database: str) -> Iterator[Store]:
    store = Store(database, pool_size=2)
    try:
        store.open()
        store.init_schema(keep_days=KEEP)
        yield store
    finally:
        store.close()


def _replica(url: str, shift: str, claims: list[tuple[Any, ...]], *, maintain: bool) -> Any:
    """A replica process whose clock is `shift` off (faketime's offset, e.g. "+3d")."""
    if FAKETIME is None:
        pytest.fail("faketime is not installed (run scripts/debian-package.sh faketime faketime libfaketime)")
    done = subprocess.run(
        [FAKETIME, "-f", shift, sys.executable, "-c", _REPLICA, url, str(KEEP),
         json.dumps(claims), "yes" if maintain else "no"],
        capture_output=True, text=True, timeout=120, env={**os.environ}, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_replica_days_fast_drops_and_packs_nothing_still_redeliverable(
        store: Store, database: str) -> None:
    """A replica three days fast runs housekeeping: the days still redeliverable stay, today
    is not packed, and every id filed before is a duplicate to it and to a right clock."""
    today = ledger.today()
    claims = [(str(uuid.uuid4()), "stored", day) for day in (today, today - 1, today - 4)]
    with store.transaction() as tx:
        assert tx.claim(claims) == {c[0] for c in claims}
    fast = _replica(database, "+3d", claims, maintain=True)
    # Only the day four days back may be packed (it ended over a day ago).
    assert fast["dropped"] == 0 and fast["packed"] <= 1 and fast["new"] == []
    with store.bounded() as conn:
        assert today - 4 in ledger.partitions(conn)
    assert query(database, "SELECT count(*) FROM login_etl_ledger_packed WHERE day >= %s",
                  (ledger.from_epoch_day(today - 1),)) == [(0,)]
    with store.transaction() as tx:
        assert tx.claim(claims) == set()


def test_a_replica_days_slow_finds_the_ids_of_a_packed_day(store: Store, database: str) -> None:
    """Three days packed by a right clock; a replica three days slow (to which that day is
    today) still finds its ids in the packed rows, and files an id without a day under the
    database's today."""
    today = ledger.today()
    claims = [(str(uuid.uuid4()), "stored", today - 3) for _ in range(5)]
    with store.transaction() as tx:
        assert tx.claim(claims) == {c[0] for c in claims}
    assert store.maintain_ledger(keep_days=KEEP).days_packed == 1
    undated = str(uuid.uuid4())
    slow = _replica(database, "-3d", [*claims, (undated, "stored")], maintain=True)
    assert slow == {"dropped": 0, "packed": 0, "new": [undated]}
    assert query(database, "SELECT day FROM login_etl_ledger WHERE id = %s",
                  (undated,)) == [(ledger.from_epoch_day(today),)]
    with store.transaction() as tx:
        assert tx.claim(claims) == set()


def test_unclaim_takes_out_only_the_given_id_and_day_pairs(store: Store, database: str) -> None:
    today = ledger.today()
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    with store.transaction() as tx:
        tx.claim([(a, "stored", today - 1), (b, "stored", today)])
    with store.transaction() as tx:
        # Neither pair was filed: a is filed under yesterday, b under today.
        tx.unclaim([(a, today), (b, today - 1)])
    assert len(query(database, "SELECT 1 FROM login_etl_ledger")) == 2
    with store.transaction() as tx:
        tx.unclaim([(a, today - 1)])
    assert query(database, "SELECT id::text FROM login_etl_ledger") == [(b,)]


def test_overlapping_claimers_never_deadlock(store: Store) -> None:
    """Two claimers file the same ids in opposite orders at once, round after round: each
    waits for the other at the first shared id, neither is chosen as a deadlock victim."""
    today = ledger.today()
    deadlocks: list[str] = []
    rounds = 8
    batches = [[str(uuid.uuid4()) for _ in range(4000)] for _ in range(rounds)]
    barrier = threading.Barrier(2)
    claimed: list[set[str]] = [set(), set()]

    def claimer(n: int) -> None:
        for ids in batches:
            ordered = ids if n == 0 else ids[::-1]
            barrier.wait()
            try:
                with store.transaction() as tx:
                    claimed[n] |= tx.claim([(i, "stored", today) for i in ordered])
            except psycopg.errors.DeadlockDetected:
                deadlocks.append("deadlock")

    threads = [threading.Thread(target=claimer, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert deadlocks == []
    assert claimed[0] | claimed[1] == {i for ids in batches for i in ids}
    assert not claimed[0] & claimed[1], "each id claimed once"


def test_start_waits_for_a_lock_instead_of_exiting(database: str) -> None:
    """A day ahead is missing and a claim holds the default partition for three seconds:
    creating the day meets 55P03 after a second; start waits and then creates it."""
    first = Store(database, pool_size=1)
    first.open()
    first.init_schema(keep_days=KEEP)
    first.close()
    ahead = ledger.today() + ledger.AHEAD_DAYS
    query(database, f"DROP TABLE {ledger.partition_name(ahead)}")
    errors: list[BaseException] = []
    with psycopg.connect(database) as holder:
        holder.execute("INSERT INTO login_etl_ledger (text_id, day) VALUES ('held', %s)",
                       (ledger.from_epoch_day(ahead),))
        store = Store(database, pool_size=1)
        store.open()

        def start() -> None:
            try:
                store.init_schema(keep_days=KEEP)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=start)
        thread.start()
        time.sleep(3)
        holder.commit()
        thread.join(60)
        store.close()
    assert errors == []
    with psycopg.connect(database) as conn:
        assert ahead in ledger.partitions(conn)


def test_creating_the_schema_takes_the_ddl_lock(database: str) -> None:
    """While housekeeping holds the partition DDL lock, init-db waits for it (so the two never
    race a CREATE TABLE .. PARTITION OF), then completes."""
    store = Store(database, pool_size=1)
    store.open()
    finished = threading.Event()
    errors: list[BaseException] = []

    def init() -> None:
        try:
            store.init_schema(keep_days=KEEP)
            finished.set()
        except BaseException as exc:
            errors.append(exc)

    try:
        with psycopg.connect(database) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (0x10_61_E7_2,))
            thread = threading.Thread(target=init)
            thread.start()
            time.sleep(2.5)
            assert not finished.is_set(), "init-db went on while the DDL lock was held"
            holder.commit()
        thread.join(60)
        assert errors == [] and finished.is_set()
    finally:
        store.close()


def test_a_redriven_copy_stays_a_duplicate_past_its_days_retention(store: Store) -> None:
    """Redriven copies filed under an origin day older than the retention (the default
    partition) or under a day dropped since: housekeeping keeps them known for as long as a
    copy can come back (the DLQ's retention and then the source's)."""
    today = ledger.today()
    copies = [("redrive:" + str(uuid.uuid4()), "stored", today - 10, True),
              ("redrive:" + str(uuid.uuid4()), "stored", today - 4, True),
              (str(uuid.uuid4()), "stored", today - 4, True)]
    with store.transaction() as tx:
        assert tx.claim(copies) == {c[0] for c in copies}
    with store.transaction() as tx:
        assert tx.claim(copies) == set()
    # Housekeeping as days pass: the retention shrinks past both origin days.
    store.maintain_ledger(keep_days=2)
    with store.transaction() as tx:
        assert tx.claim(copies) == set()


def test_an_unclaimed_redriven_copy_is_new_again(store: Store) -> None:
    """A redriven copy left unsettled (its DLQ hand-off refused) is taken out of the day-less
    ids too, so its next delivery is stored."""
    copy = ("redrive:" + str(uuid.uuid4()), "rejected", ledger.today() - 1, True)
    with store.transaction() as tx:
        assert tx.claim([copy]) == {copy[0]}
        tx.unclaim([(copy[0], copy[2])])
    with store.transaction() as tx:
        assert tx.claim([copy]) == {copy[0]}


def test_missed_days_are_created_and_a_failing_step_stops_no_other(database: str) -> None:
    """Two days of the kept window were never created (their ids went to the default
    partition): housekeeping creates them. A step that fails (the default partition locked
    by someone else) is left for the next run while packing still runs."""
    store = Store(database, pool_size=2, bounds=Bounds(lock_ms=500))
    store.open()
    try:
        store.init_schema(keep_days=KEEP)
        today = ledger.today()
        for day in (today - 1, today - 2):
            query(database, f"DROP TABLE {ledger.partition_name(day)}")
        missed = [(str(uuid.uuid4()), "stored", day) for day in (today - 1, today - 2)]
        packable = [(str(uuid.uuid4()), "stored", today - 3) for _ in range(5)]
        with store.transaction() as tx:
            assert tx.claim(missed + packable) == {c[0] for c in missed + packable}
        with psycopg.connect(database) as holder:
            holder.execute("LOCK TABLE login_etl_ledger_default IN SHARE MODE")
            done = store.maintain_ledger(keep_days=KEEP)
            assert done.days_packed == 1
            holder.rollback()
        done = store.maintain_ledger(keep_days=KEEP)
        with store.bounded() as conn:
            assert {today - 1, today - 2} <= ledger.partitions(conn)
        where = dict(query(database, "SELECT id::text, tableoid::regclass::text"
                                      " FROM login_etl_ledger"))
        # Yesterday's id moved into its day (the day before may be packed by now).
        assert where[missed[0][0]] == ledger.partition_name(today - 1)
        with store.transaction() as tx:
            assert tx.claim(missed + packable) == set()
    finally:
        store.close()


def test_packing_a_big_day_never_holds_its_claims(store: Store, database: str) -> None:
    """400,000 ids packed, then 40,000 late ones merged into them, while claims of that day go
    on: none waits more than a fraction of a second, every id stays known, and no packed row
    grows past PACK_IDS."""
    day = ledger.today() - 3
    when = ledger.from_epoch_day(day)
    query(database, f"INSERT INTO {ledger.partition_name(day)} (id, day)"
                     " SELECT gen_random_uuid(), %s FROM generate_series(1, 400000)", (when,))
    store.maintain_ledger(keep_days=KEEP)
    # The packed day's rows gave their space back (about 36 MB before).
    assert query(database, "SELECT pg_total_relation_size(%s)",
                  (ledger.partition_name(day),))[0][0] < 1_000_000
    query(database, f"INSERT INTO {ledger.partition_name(day)} (id, day)"
                     " SELECT gen_random_uuid(), %s FROM generate_series(1, 40000)", (when,))
    late = [r[0] for r in query(database, "SELECT id::text FROM login_etl_ledger"
                                           " WHERE day = %s LIMIT 500", (when,))]
    waits: list[float] = []
    stop = threading.Event()

    def claimer() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            with store.transaction() as tx:
                tx.claim([(str(uuid.uuid4()), "stored", day) for _ in range(10)])
            waits.append(time.perf_counter() - started)

    thread = threading.Thread(target=claimer)
    thread.start()
    try:
        time.sleep(0.2)
        done = store.maintain_ledger(keep_days=KEEP)
    finally:
        stop.set()
        thread.join(30)
    print(f"merge of 40,000 late ids into 400,000: {done.ids_packed} ids, longest claim"
          f" {max(waits) * 1000:.0f} ms of {len(waits)}; longest step"
          f" {getattr(done, 'longest_step', 0) * 1000:.0f} ms")
    assert done.ids_packed >= 40_000
    assert max(waits) < 0.3, f"a claim of the day waited {max(waits):.2f} s"
    sizes = [r[0] for r in query(database, "SELECT cardinality(ids) FROM"
                                            " login_etl_ledger_packed WHERE day = %s", (when,))]
    assert max(sizes) <= ledger.PACK_IDS and sum(sizes) >= 440_000
    with store.transaction() as tx:
        assert tx.claim([(i, "stored", day) for i in late]) == set()


# The release before the replicas' registry, run as a replica: claims read from stdin.
_OLD_REPLICA = """
import json, sys
from login_etl.store import Store
store = Store(sys.argv[1], pool_size=1)
store.open()
for line in sys.stdin:
    with store.transaction() as tx:
        new = tx.claim([tuple(c) for c in json.loads(line)])
    print(json.dumps(sorted(new)), flush=True)
store.close()
"""
PREVIOUS_RELEASE = "fac1814"


@pytest.fixture
def previous_release(tmp_path: Any) -> str:
    """The previous release's package, from this repository's history."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    archive = subprocess.run(["git", "-C", root, "archive", PREVIOUS_RELEASE, "service"],
                             capture_output=True, timeout=60, check=False)
    if archive.returncode != 0:
        pytest.skip(f"no git history with {PREVIOUS_RELEASE} here")
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    return str(tmp_path / "service")


class _OldReplica:
    def __init__(self, package: str, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _OLD_REPLICA, url], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": package})

    def claim(self, claims: list[tuple[Any, ...]]) -> set[str]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(claims) + "\n")
        self.process.stdin.flush()
        return set(json.loads(self.process.stdout.readline()))

    def stop(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait(30)


def test_a_rolling_upgrade_beside_the_previous_release(store: Store, database: str,
                                                       previous_release: str) -> None:
    """The previous release and this one on one database, as a rolling update runs them:
    while an old replica is connected, packing (which it may not understand) waits and
    neither stores an id twice; once it is gone the day is packed, and an old replica
    started again still finds the packed ids."""
    day = ledger.today() - 3
    filed = [(str(uuid.uuid4()), "stored", day) for _ in range(20)]
    with store.transaction() as tx:
        assert tx.claim(filed) == {c[0] for c in filed}
    old = _OldReplica(previous_release, database)
    try:
        assert old.claim(filed) == set()
        done = store.maintain_ledger(keep_days=KEEP)
        assert done.days_packed == 0 and done.packing_waits
        later = [(str(uuid.uuid4()), "stored", day) for _ in range(5)]
        assert old.claim(later) == {c[0] for c in later}
        with store.transaction() as tx:
            assert tx.claim(later + filed) == set()
    finally:
        old.stop()
    done = store.maintain_ledger(keep_days=KEEP)
    assert not done.packing_waits and done.days_packed == 1
    old = _OldReplica(previous_release, database)
    try:
        assert old.claim(filed + later) == set()
    finally:
        old.stop()
    # A replica registered with an older protocol holds packing back too.
    query(database, "INSERT INTO login_etl_ledger_replicas (name, version) VALUES ('b', 1)")
    assert store.maintain_ledger(keep_days=KEEP).packing_waits


def test_housekeeping_is_left_to_a_newer_replica_while_one_is_seen(store: Store,
                                                                    database: str) -> None:
    """A replica of a newer protocol registered: this one leaves housekeeping to it; once
    that replica is no longer seen (a rollback), this one takes it up again."""
    ahead = ledger.today() + ledger.AHEAD_DAYS
    query(database, f"DROP TABLE {ledger.partition_name(ahead)}")
    query(database, "INSERT INTO login_etl_ledger_replicas (name, version) VALUES ('new', %s)",
           (ledger.replicas.PROTOCOL + 1,))
    store.maintain_ledger(keep_days=KEEP)
    with store.bounded() as conn:
        assert ahead not in ledger.partitions(conn)
    query(database, "UPDATE login_etl_ledger_replicas SET seen = now() - interval '3 hours'"
                     " WHERE name = 'new'")
    assert store.maintain_ledger(keep_days=KEEP).days_created == 1
    with store.bounded() as conn:
        assert ahead in ledger.partitions(conn)
