"""Capacity figures for the scaling model (docs/scaling.md), measured in one run.

    python benchmarks/capacity.py [--seconds 6] [--messages 8000]

  postgres   1, 2 and 4 writer processes, each doing what a settler does per batch of 500:
             BEGIN, bounds, ledger claim (COPY in a savepoint), COPY of the rows, COMMIT, with
             the package's own Store; directly and through PgBouncer (Debian's, transaction
             mode, default pool). Reported: aggregate rows/s; rows per CPU-second of the
             writers' Postgres backends (their own utime+stime from /proc); the same with the
             server's background processes (WAL writer, checkpointer, background writer,
             autovacuum) added, which other loads on a shared machine also feed; WAL bytes
             per row; PgBouncer's own CPU per row.
  worker     `login-etl run --until-empty` on --messages messages through LocalStack: messages
             per CPU-second of the worker process (receive, parse, mask, write, delete), at
             the rate the queue allows here.

Bounded in time: 6 writer configurations of --seconds each plus one worker run, about a
minute and a half in all. Prints a table and, with --json, the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from harness import database, event_bodies, sqs_client

ROOT = Path(__file__).resolve().parents[1]
BATCH = 500
TICKS = os.sysconf("SC_CLK_TCK")
BACKGROUND = ("walwriter", "checkpointer", "background writer", "autovacuum")


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _background_pids() -> list[int]:
    """The server's background processes (by their process title), on this machine."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if title.startswith("postgres: ") and any(b in title for b in BACKGROUND):
            pids.append(int(entry.name))
    return pids


def _wal_lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def _writer(url: str, ready: Any, go: Any, deadline: Any, results: Any, finish: Any) -> None:
    """One settler's database work, batch after batch, until the shared deadline."""
    from datetime import date

    from login_etl import ledger
    from login_etl.messages import login_event
    from login_etl.store import Store

    rows = [login_event("x", f"user-{i:06d}", "android" if i % 2 else "ios",
                        f"h1.bench.{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}",
                        f"h1.bench.{uuid.uuid4().hex}{uuid.uuid4().hex[:11]}",
                        None if i % 3 == 0 else "DE", 2_003_001, date.today())
            for i in range(BATCH)]
    day = ledger.today()
    store = Store(url, pool_size=1)
    store.open()
    try:
        with store.transaction() as tx:
            tx.claim([(str(uuid.uuid4()), "stored", day) for _ in range(BATCH)])
            tx.insert(rows)
        ready.set()
        go.wait()
        started, done, cpu0 = time.monotonic(), 0, time.process_time()
        while time.monotonic() < deadline.value:
            with store.transaction() as tx:
                tx.claim([(str(uuid.uuid4()), "stored", day) for _ in range(BATCH)])
                tx.insert(rows)
            done += BATCH
        results.put((done, time.monotonic() - started, time.process_time() - cpu0))
        # The backend stays until its CPU has been read.
        finish.wait(60)
    finally:
        store.close()


def _backends(conn: psycopg.Connection[Any], db: str) -> list[int]:
    own = conn.info.backend_pid
    return [int(r[0]) for r in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s", (db, own))]


def measure_writers(url: str, direct: str, writers: int, seconds: float,
                    bouncer_pid: int | None = None) -> dict[str, float]:
    """Aggregate figures for `writers` processes writing for `seconds` through url (direct:
    the same database without a pooler, for the measuring connection)."""
    ctx = mp.get_context("spawn")
    ready = [ctx.Event() for _ in range(writers)]
    go, finish, results = ctx.Event(), ctx.Event(), ctx.Queue()
    deadline = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_writer, args=(url, ready[i], go, deadline, results, finish))
             for i in range(writers)]
    db = direct.rsplit("/", 1)[1]
    for p in procs:
        p.start()
    try:
        for event in ready:
            if not event.wait(60):
                raise RuntimeError("a writer did not start")
        with psycopg.connect(direct, autocommit=True) as conn:
            backends = _backends(conn, db)
            background = _background_pids()
            cpu_backends = {p: _cpu(p) for p in backends}
            cpu_background = sum(_cpu(p) for p in background)
            cpu_bouncer = _cpu(bouncer_pid) if bouncer_pid else 0.0
            wal0 = _wal_lsn(conn)
            deadline.value = time.monotonic() + seconds
            go.set()
            got = [results.get(timeout=seconds + 60) for _ in procs]
            wal = _wal_lsn(conn) - wal0
            backends_after = _backends(conn, db)
            used_backends = sum(_cpu(p) - cpu_backends.get(p, 0.0)
                                for p in set(backends) | set(backends_after))
            used_background = sum(_cpu(p) for p in background) - cpu_background
            used_bouncer = (_cpu(bouncer_pid) - cpu_bouncer) if bouncer_pid else 0.0
    finally:
        go.set()
        finish.set()
        for p in procs:
            p.join(30)
    rows = sum(g[0] for g in got)
    elapsed = max(g[1] for g in got)
    return {
        "writers": writers, "rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed,
        "backend_cpu": used_backends, "background_cpu": used_background,
        "rows_per_backend_cpu_s": rows / used_backends if used_backends else 0.0,
        "rows_per_server_cpu_s": (rows / (used_backends + used_background)
                                  if used_backends else 0.0),
        "us_per_row": used_backends / rows * 1e6,
        "us_per_row_with_background": (used_backends + used_background) / rows * 1e6,
        "wal_bytes_per_row": wal / rows,
        "writer_python_us_per_row": sum(g[2] for g in got) / rows * 1e6,
        "bouncer_us_per_row": used_bouncer / rows * 1e6,
    }


@contextmanager
def pgbouncer() -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    from tests.integration.pgbouncer import PgBouncer

    with PgBouncer() as running:
        yield running


def ledger_bytes(url: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT sum(pg_total_relation_size(c.oid)), (SELECT count(*) FROM login_etl_ledger)"
            " FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'login_etl_ledger%'"
        ).fetchone()
        return float(row[0]) / float(row[1]) if row and row[1] else 0.0


def measure_worker(messages: int) -> dict[str, float]:
    """The real worker on LocalStack: messages per worker CPU-second at the queue's rate.

    A daemon starts once: the CPU of a run on an empty queue (interpreter, imports, connect,
    shutdown) is taken off.
    """
    from scenarios import measure_etl

    with tempfile.TemporaryDirectory() as work:
        idle = measure_etl(sqs_client(), [], Path(work), {})
        run = measure_etl(sqs_client(), event_bodies(messages, seed=23), Path(work), {})
    working = max(run.cpu_seconds - idle.cpu_seconds, 1e-9)
    return {"messages": run.messages, "seconds": run.seconds, "rate": run.rate,
            "cpu_seconds": run.cpu_seconds, "startup_cpu_seconds": idle.cpu_seconds,
            "per_cpu": run.messages / working, "per_cpu_with_startup": run.per_cpu,
            "max_rss_mb": run.max_rss_mb}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="how long each writer configuration writes (default 6)")
    parser.add_argument("--messages", type=int, default=8000,
                        help="messages for the worker run (default 8,000)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    figures: dict[str, Any] = {"postgres": [], "cpus": os.cpu_count()}
    with pgbouncer() as bouncer, database() as url:
        pooled = bouncer.url(url)
        bouncer_pid = bouncer.process.pid if bouncer.process else None
        for path, target in (("direct", url), ("pgbouncer", pooled)):
            for writers in (1, 2, 4):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute("TRUNCATE user_logins, login_etl_ledger")
                result = measure_writers(target, url, writers, args.seconds,
                                         bouncer_pid if path == "pgbouncer" else None)
                result["path"] = path
                figures["postgres"].append(result)
                print(f"  {path:9} {writers} writer(s): {result['rows_per_s']:>9,.0f} rows/s, "
                      f"{result['rows_per_backend_cpu_s']:>9,.0f} rows per backend CPU-s",
                      file=sys.stderr)
        figures["ledger_bytes_per_message"] = ledger_bytes(url)
    print(f"  worker: login-etl on {args.messages:,} messages ...", file=sys.stderr)
    figures["worker"] = measure_worker(args.messages)
    report(figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    return 0


def report(figures: dict[str, Any]) -> None:
    print(f"\nPostgres side: batches of {BATCH} (ledger claim + COPY + COMMIT), "
          f"{figures['cpus']} CPUs shared by writers and server")
    print(f"{'path':<10}{'writers':>8}{'rows/s':>10}{'rows/backend CPU-s':>20}"
          f"{'µs/row':>8}{'+background':>13}{'WAL B/row':>11}{'writer µs/row':>15}"
          f"{'bouncer µs/row':>16}")
    for r in figures["postgres"]:
        print(f"{r['path']:<10}{r['writers']:>8}{r['rows_per_s']:>10,.0f}"
              f"{r['rows_per_backend_cpu_s']:>20,.0f}{r['us_per_row']:>8.2f}"
              f"{r['us_per_row_with_background']:>13.2f}{r['wal_bytes_per_row']:>11.0f}"
              f"{r['writer_python_us_per_row']:>15.2f}{r['bouncer_us_per_row']:>16.2f}")
    print(f"ledger on disk: {figures['ledger_bytes_per_message']:.1f} bytes per message")
    w = figures["worker"]
    print(f"\nWorker side: login-etl run --until-empty, {w['messages']:,} messages through "
          f"LocalStack: {w['rate']:,.0f} msg/s, {w['per_cpu']:,.0f} messages per worker "
          f"CPU-second ({w['per_cpu_with_startup']:,.0f} with the start-up's "
          f"{w['startup_cpu_seconds']:.2f} CPU-s), peak RSS {w['max_rss_mb']:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
