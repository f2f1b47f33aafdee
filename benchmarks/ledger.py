"""The ledger before (one text-keyed table with a processed_at index, pruned by chunked DELETE)
and after (day partitions, uuid ids, days that ended packed into arrays, pruned by dropping a
day), side by side in one run.

    python benchmarks/ledger.py [--rows 300000] [--prune 1000000,10000000]

  size       bytes on disk per message (ledger heap + indexes, after VACUUM) once --rows ids are
             written through the claim path in batches of 500, random ids as SQS makes them;
             after: as rows (today, before its packing) and packed (the same ids filed under a
             day that ended, packed by maintain_ledger); then a retention's worth of days,
             each day's ids written and the housekeeping run as it runs at the end of a day:
             what the whole ledger holds per message kept, for SQS's default retention (4 days)
             and its longest (14 days)
  cpu        Postgres CPU per stored row including its ledger id: one writer, batches of 500,
             ledger claim + COPY of the rows + COMMIT; the backend's own utime+stime from /proc
             (this machine's server), divided by the rows
  prune      time to forget N ids past the retention: before, the chunked DELETE of 50,000 at a
             time the worker ran hourly; after, the worker's maintain_ledger detaching and
             dropping the day partition holding them, while a thread keeps claiming ids (the
             longest of those claims is how long the prune held writers up).
             The ids are made with generate_series in SQL (fast at 10 million).
  pack       the same N ids in a day that ended: maintain_ledger packing them, the same
             thread claiming today's ids meanwhile

Each scenario runs on its own fresh database, dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from harness import ADMIN_DSN, event_bodies

OLD_LEDGER = """
CREATE TABLE login_etl_ledger(
  message_id text PRIMARY KEY,
  outcome text NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX login_etl_ledger_processed_at ON login_etl_ledger (processed_at);
"""
OLD_PRUNE = ("DELETE FROM login_etl_ledger WHERE ctid = ANY(ARRAY("
             " SELECT ctid FROM login_etl_ledger"
             " WHERE processed_at < now() - make_interval(days => %s) LIMIT %s))")
BATCH = 500
# Longest single claim while the prune of n ids ran (after), by n.
LONGEST_CLAIM: dict[int, float] = {}
PACK_CLAIM: dict[int, float] = {}
TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fresh_database(old_ledger: bool, keep_days: int = 3) -> Iterator[str]:
    """A database with user_logins and either ledger."""
    from login_etl.store import SCHEMA, Store

    name = f"bench_ledger_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        if old_ledger:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(SCHEMA)
                conn.execute(OLD_LEDGER)
        else:
            store = Store(url, pool_size=1)
            store.open()
            store.init_schema(keep_days=keep_days)
            store.close()
        yield url
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one Postgres backend on this machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def store_backend_pid(store: Any) -> int:
    """The backend of a one-connection Store's pool, whose CPU the benchmark reads."""
    with store.connection() as conn:
        pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        conn.rollback()
    return pid


def events(n: int) -> list[Any]:
    """n parsed, masked events with SQS-style ids, made before any timing."""
    from login_etl.masking import Masker
    from login_etl.messages import Received, parse
    from login_etl.settings import MaskingKey

    masker = Masker([MaskingKey("bench", secrets.token_bytes(32))])
    sent_ms = int(time.time() * 1000)
    template = event_bodies(min(n, 10_000), seed=17)
    return [parse(Received(str(uuid.uuid4()), "rh", template[i % len(template)], sent_ms),
                  masker) for i in range(n)]


def write_new(url: str, parsed: list[Any]) -> tuple[float, float]:
    """The product's own path: Store.transaction, claim (COPY in a savepoint), insert (COPY)."""
    from login_etl.store import Store

    day = int(time.time() * 1000) // 86_400_000
    store = Store(url, pool_size=1)
    store.open()
    try:
        pid = store_backend_pid(store)
        cpu0, started = backend_cpu(pid), time.perf_counter()
        for start in range(0, len(parsed), BATCH):
            batch = parsed[start:start + BATCH]
            with store.transaction() as tx:
                new = tx.claim([(p.message_id, "stored", day) for p in batch])
                tx.insert([p for p in batch if p.message_id in new])
        return backend_cpu(pid) - cpu0, time.perf_counter() - started
    finally:
        store.close()


def write_old(url: str, parsed: list[Any]) -> tuple[float, float]:
    """The same transaction shape on the ledger of before: text id + outcome COPY in a
    savepoint, COPY of the rows, COMMIT."""
    from login_etl.store import _COPY, Bounds

    bounds = Bounds().sql()
    with psycopg.connect(url, prepare_threshold=None) as conn:
        pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        conn.commit()
        cpu0, started = backend_cpu(pid), time.perf_counter()
        for start in range(0, len(parsed), BATCH):
            batch = parsed[start:start + BATCH]
            with conn.transaction():
                conn.execute(bounds)
                with conn.transaction(), conn.cursor().copy(
                        "COPY login_etl_ledger (message_id, outcome) FROM STDIN") as copy:
                    copy.write("".join(f"{p.message_id}\tstored\n" for p in batch))
                with conn.cursor().copy(_COPY) as copy:
                    copy.write("".join(p.line for p in batch))
        return backend_cpu(pid) - cpu0, time.perf_counter() - started


def ledger_bytes(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM login_etl_ledger")
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " WHERE c.relkind = 'r' AND c.relname LIKE 'login_etl_ledger%'").fetchone()
        return int(row[0]) if row and row[0] else 0


def user_logins_bytes(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_total_relation_size('user_logins')").fetchone()
        return int(row[0]) if row else 0


def claim_all(url: str, parsed: list[Any], day: int) -> None:
    """The ids of `parsed` claimed on `day` through the product's claim, batches of 500."""
    from login_etl.store import Store

    store = Store(url, pool_size=1)
    store.open()
    try:
        for start in range(0, len(parsed), BATCH):
            with store.transaction() as tx:
                tx.claim([(p.message_id, "stored", day) for p in parsed[start:start + BATCH]])
    finally:
        store.close()


def maintain(url: str, keep_days: int) -> tuple[Any, float]:
    from login_etl.store import Store

    store = Store(url, pool_size=1)
    store.open()
    try:
        started = time.perf_counter()
        done = store.maintain_ledger(keep_days)
        return done, time.perf_counter() - started
    finally:
        store.close()


def packed_figures(parsed: list[Any]) -> dict[str, float]:
    """The ids of the size run filed under a day that ended two days ago, then packed."""
    from login_etl import ledger

    with fresh_database(old_ledger=False) as url:
        claim_all(url, parsed, ledger.today() - 3)
        done, seconds = maintain(url, keep_days=3)
        if done.ids_packed != len(parsed):
            raise RuntimeError(f"packed {done.ids_packed} of {len(parsed)} ids")
        return {"bytes_per_message": ledger_bytes(url) / len(parsed), "pack_seconds": seconds}


def retention_figures(per_day: int, retention_days: int) -> dict[str, float]:
    """A retention's worth of days (kept days + today), `per_day` ids each, then the
    housekeeping run: the ledger's bytes per message it keeps."""
    from login_etl import ledger

    keep = ledger.keep_days(retention_days * 86_400)
    today = ledger.today()
    parsed = events(per_day * (keep + 1))
    with fresh_database(old_ledger=False, keep_days=keep) as url:
        for n, day in enumerate(range(today - keep, today + 1)):
            claim_all(url, parsed[n * per_day:(n + 1) * per_day], day)
        done, _ = maintain(url, keep_days=keep)
        if done.days_dropped:
            raise RuntimeError(f"{done.days_dropped} days dropped")
        return {"bytes_per_message": ledger_bytes(url) / len(parsed),
                "days_packed": done.days_packed, "days": keep + 1}


def size_and_cpu(rows: int) -> dict[str, dict[str, float]]:
    parsed = events(rows)
    results: dict[str, dict[str, float]] = {}
    for label, old in (("before", True), ("after", False)):
        with fresh_database(old) as url:
            cpu, seconds = (write_old if old else write_new)(url, parsed)
            results[label] = {"bytes_rows": ledger_bytes(url) / rows,
                              "row_bytes": user_logins_bytes(url) / rows,
                              "us_per_row": cpu / rows * 1e6, "rows_per_s": rows / seconds}
        if not old:
            results[label].update(packed_figures(parsed))
            for days in (4, 14):
                results[f"retention {days}"] = retention_figures(rows // 10, days)
        print(f"  {label}: {results[label]['bytes_rows']:.1f} B/message in the ledger as rows, "
              f"{results[label]['us_per_row']:.2f} µs Postgres CPU per row, "
              f"{results[label]['rows_per_s']:,.0f} rows/s", file=sys.stderr)
    return results


def prune_before(n: int) -> float:
    with fresh_database(old_ledger=True) as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO login_etl_ledger (message_id, outcome, processed_at)"
                     " SELECT gen_random_uuid()::text, 'stored',"
                     " now() - interval '20 days' + i * interval '1 ms'"
                     " FROM generate_series(1, %s) i", (n,))
        conn.execute("VACUUM ANALYZE login_etl_ledger")
        started = time.perf_counter()
        while conn.execute(OLD_PRUNE, (15, 50_000)).rowcount == 50_000:
            pass
        seconds = time.perf_counter() - started
        left = conn.execute("SELECT count(*) FROM login_etl_ledger").fetchone()
        if not left or left[0]:
            raise RuntimeError(f"before: {left} ids left after pruning")
        return seconds


def after(n: int, pack: bool = False) -> float:
    """The worker's maintain_ledger over a day of n ids: dropping it (past the retention) or,
    with pack, packing it (a day that ended); its time, and the longest claim of today's ids
    meanwhile in LONGEST_CLAIM (or PACK_CLAIM)."""
    from login_etl import ledger
    from login_etl.store import Store

    with fresh_database(old_ledger=False) as url:
        day = ledger.today() - 3
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"INSERT INTO {ledger.partition_name(day)} (id, day)"
                         " SELECT gen_random_uuid(), %s FROM generate_series(1, %s)",
                         (ledger.from_epoch_day(day), n))
            conn.execute("VACUUM ANALYZE login_etl_ledger")
        store = Store(url, pool_size=1)
        writer = Store(url, pool_size=1)
        store.open()
        writer.open()
        waits: list[float] = []
        done = threading.Event()

        def claims() -> None:
            """A settler claiming today's ids meanwhile: how long is it held up?"""
            while not done.is_set():
                began = time.perf_counter()
                with writer.transaction() as tx:
                    tx.claim([(str(uuid.uuid4()), "stored", ledger.today())])
                waits.append(time.perf_counter() - began)

        thread = threading.Thread(target=claims, daemon=True)
        thread.start()
        try:
            time.sleep(0.5)
            started = time.perf_counter()
            result = store.maintain_ledger(keep_days=3 if pack else 2)
            seconds = time.perf_counter() - started
            time.sleep(0.2)
        finally:
            done.set()
            thread.join(10)
            store.close()
            writer.close()
        if (result.ids_packed if pack else result.days_dropped) != (n if pack else 1):
            raise RuntimeError(f"after: {result}")
        (PACK_CLAIM if pack else LONGEST_CLAIM)[n] = max(waits)
        return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300_000,
                        help="ids written for the size and CPU figures (default 300,000)")
    parser.add_argument("--prune", default="1000000,10000000",
                        help="comma-separated ledger sizes to prune (default 1M and 10M)")
    args = parser.parse_args()
    print(f"ledger size and CPU, {args.rows:,} messages in batches of {BATCH}:", file=sys.stderr)
    figures = size_and_cpu(args.rows)
    prunes = []
    for n in (int(x) for x in args.prune.split(",") if x):
        print(f"pruning {n:,} ids ...", file=sys.stderr)
        before, dropped, packed = prune_before(n), after(n), after(n, pack=True)
        prunes.append((n, before, dropped, packed))
        print(f"  {n:>12,} ids: before {before:8.2f} s   after {dropped:6.3f} s (longest claim"
              f" meanwhile {LONGEST_CLAIM[n] * 1000:.0f} ms); packing them {packed:.2f} s"
              f" (longest claim {PACK_CLAIM[n] * 1000:.0f} ms)", file=sys.stderr)
    b, a = figures["before"], figures["after"]
    print()
    print(f"{'':<44}{'before':>12}{'after':>12}{'target':>10}")
    print(f"{'ledger bytes on disk per message, as rows':<44}{b['bytes_rows']:>12.1f}"
          f"{a['bytes_rows']:>12.1f}")
    print(f"{'  packed (a day that ended)':<44}{'':>12}{a['bytes_per_message']:>12.1f}")
    for days in (4, 14):
        r = figures[f"retention {days}"]
        label = f"  whole ledger, {days}-day queue retention"
        print(f"{label:<44}{b['bytes_rows']:>12.1f}{r['bytes_per_message']:>12.1f}"
              f"{'<= 60':>10}")
        print(f"{'    (days kept, of them packed)':<44}{'':>12}"
              f"{int(r['days']):>8} / {int(r['days_packed'])}")
    print(f"{f'packing {args.rows:,} ids (s)':<44}{'':>12}{a['pack_seconds']:>12.2f}")
    print(f"{'Postgres CPU µs per stored row (+ ledger)':<44}{b['us_per_row']:>12.2f}"
          f"{a['us_per_row']:>12.2f}{'<= 12':>10}")
    print(f"{'rows/s, one writer':<44}{b['rows_per_s']:>12,.0f}{a['rows_per_s']:>12,.0f}")
    print(f"{'user_logins bytes per row (for scale)':<44}{b['row_bytes']:>12.1f}"
          f"{a['row_bytes']:>12.1f}")
    for n, before, dropped, packed in prunes:
        print(f"{f'prune {n:,} ids (s)':<44}{before:>12.2f}{dropped:>12.3f}")
        print(f"{'  longest claim during it, after (ms)':<44}{'':>12}"
              f"{LONGEST_CLAIM[n] * 1000:>12.0f}")
        print(f"{f'pack {n:,} ids of a day that ended (s)':<44}{'':>12}{packed:>12.2f}")
        print(f"{'  longest claim of today during it (ms)':<44}{'':>12}"
              f"{PACK_CLAIM[n] * 1000:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
