"""The ledger before (one text-keyed table with a processed_at index, pruned by chunked DELETE)
and after (day partitions, uuid ids, pruned by dropping a day), side by side in one run.

    python benchmarks/ledger.py [--rows 300000] [--prune 1000000,10000000]

  size       bytes on disk per message (ledger heap + indexes, after VACUUM) once --rows ids are
             written through the claim path in batches of 500, random ids as SQS makes them
  cpu        Postgres CPU per stored row including its ledger id: one writer, batches of 500,
             ledger claim + COPY of the rows + COMMIT; the backend's own utime+stime from /proc
             (this machine's server), divided by the rows
  prune      time to forget N ids past the retention: before, the chunked DELETE of 50,000 at a
             time the worker ran hourly; after, the worker's maintain_ledger detaching and
             dropping the day partition holding them, while a thread keeps claiming ids (the
             longest of those claims is how long the prune held writers up).
             The ids are made with generate_series in SQL (fast at 10 million)

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
TICKS = os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fresh_database(old_ledger: bool) -> Iterator[str]:
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
            store.init_schema(keep_days=3)
            store.close()
        yield url
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one Postgres backend on this machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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
        with store.connection() as conn:
            pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            conn.rollback()
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


def size_and_cpu(rows: int) -> dict[str, dict[str, float]]:
    parsed = events(rows)
    results: dict[str, dict[str, float]] = {}
    for label, old in (("before", True), ("after", False)):
        with fresh_database(old) as url:
            cpu, seconds = (write_old if old else write_new)(url, parsed)
            results[label] = {"bytes_per_message": ledger_bytes(url) / rows,
                              "row_bytes": user_logins_bytes(url) / rows,
                              "us_per_row": cpu / rows * 1e6, "rows_per_s": rows / seconds}
        print(f"  {label}: {results[label]['bytes_per_message']:.1f} B/message in the ledger, "
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


def prune_after(n: int) -> float:
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
            """A settler claiming today's ids meanwhile: how long can the prune hold it up?"""
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
            dropped, _ = store.maintain_ledger(keep_days=2)
            seconds = time.perf_counter() - started
            time.sleep(0.2)
        finally:
            done.set()
            thread.join(10)
            store.close()
            writer.close()
        if dropped != 1:
            raise RuntimeError(f"after: {dropped} days dropped, expected 1")
        LONGEST_CLAIM[n] = max(waits)
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
        before, after = prune_before(n), prune_after(n)
        prunes.append((n, before, after))
        print(f"  {n:>12,} ids: before {before:8.2f} s   after {after:6.3f} s (longest claim"
              f" meanwhile {LONGEST_CLAIM[n] * 1000:.0f} ms)", file=sys.stderr)
    b, a = figures["before"], figures["after"]
    print()
    print(f"{'':<44}{'before':>12}{'after':>12}{'target':>10}")
    print(f"{'ledger bytes on disk per message':<44}{b['bytes_per_message']:>12.1f}"
          f"{a['bytes_per_message']:>12.1f}{'<= 60':>10}")
    print(f"{'Postgres CPU µs per stored row (+ ledger)':<44}{b['us_per_row']:>12.2f}"
          f"{a['us_per_row']:>12.2f}{'<= 12':>10}")
    print(f"{'rows/s, one writer':<44}{b['rows_per_s']:>12,.0f}{a['rows_per_s']:>12,.0f}")
    print(f"{'user_logins bytes per row (for scale)':<44}{b['row_bytes']:>12.1f}"
          f"{a['row_bytes']:>12.1f}")
    for n, before, after in prunes:
        print(f"{f'prune {n:,} ids (s)':<44}{before:>12.2f}{after:>12.3f}")
        print(f"{'  longest claim during it, after (ms)':<44}{'':>12}"
              f"{LONGEST_CLAIM[n] * 1000:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
