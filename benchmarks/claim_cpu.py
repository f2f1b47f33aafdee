"""Client CPU of one settle transaction (bounds, ledger claim, COPY of the rows, COMMIT), the
current tree against a baseline revision, alternating in one run.

    python benchmarks/claim_cpu.py [--baseline REV] [--rounds 6] [--transactions 1000]
                                   [--batch 10]

Each round runs each version in a fresh process on a fresh database: --transactions settles of
--batch new SQS-style ids and their rows through Store.write, timed after a warm-up; the
figure is the process's CPU (user + system) per transaction, and the Postgres backend's. The
round trips a transaction makes are counted from the connection's protocol trace.
--claim-only: ledger.claim alone, on a connection that sends nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledger import backend_cpu, events, fresh_database, store_backend_pid

ROOT = Path(__file__).resolve().parents[1]


def child(transactions: int, batch: int) -> dict[str, float]:
    """One version's figures: CPU per transaction of this process and of its backend."""
    from login_etl.store import Store

    day = int(time.time() * 1000) // 86_400_000
    parsed = events((transactions + 50) * batch)
    with fresh_database(old_ledger=False) as url:
        store = Store(url, pool_size=1)
        store.open()
        try:
            pid = store_backend_pid(store)

            def settle(chunk: list) -> None:  # type: ignore[type-arg]
                def work(tx):  # type: ignore[no-untyped-def]
                    new = tx.claim([(p.message_id, "stored", day) for p in chunk])
                    tx.insert([p for p in chunk if p.message_id in new])
                store.write(work)

            chunks = [parsed[i:i + batch] for i in range(0, len(parsed), batch)]
            for chunk in chunks[:50]:
                settle(chunk)
            trips = _round_trips(store, settle, chunks[50])
            cpu0, db0 = time.process_time(), backend_cpu(pid)
            for chunk in chunks[51:]:
                settle(chunk)
            n = len(chunks) - 51
            return {"client_us": (time.process_time() - cpu0) / n * 1e6,
                    "server_us": (backend_cpu(pid) - db0) / n * 1e6, "round_trips": trips}
        finally:
            store.close()


class _NoServer:
    """A connection whose COPY takes the payload and sends nothing: the claim's own Python."""

    def cursor(self) -> _NoServer:
        return self

    def transaction(self) -> _NoServer:
        return self

    def copy(self, _statement: str) -> _NoServer:
        return self

    def __enter__(self) -> _NoServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def write(self, _payload: str) -> None:
        return None


def claim_only(transactions: int, batch: int) -> dict[str, float]:
    """CPU of ledger.claim alone for batches of new SQS-style ids, no server."""
    import uuid

    from login_etl import ledger

    class Today:
        legacy, today, redriven = False, ledger.today(), True

    claims = [(str(uuid.uuid4()), "stored", Today.today, False) for _ in range(batch)]
    conn, store = _NoServer(), Today()
    for _ in range(200):
        ledger.claim(conn, claims, store)  # type: ignore[arg-type]
    cpu0 = time.process_time()
    for _ in range(transactions):
        ledger.claim(conn, claims, store)  # type: ignore[arg-type]
    return {"client_us": (time.process_time() - cpu0) / transactions * 1e6,
            "server_us": 0.0, "round_trips": 0.0}


def _round_trips(store, settle, chunk) -> float:  # type: ignore[no-untyped-def]
    """The messages after which the client waits for the server (a simple Query, Sync,
    CopyDone) in one settle, the pool's check of the connection included, from libpq's
    trace."""
    with tempfile.TemporaryFile("w+") as trace:
        # The pool holds one connection: the one settle() is given next.
        with store.connection() as conn:
            conn.pgconn.trace(trace.fileno())
        try:
            settle(chunk)
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        # libpq's lines: time, F (sent) or B (received), length, message type, contents.
        sent = [fields[3] for fields in (line.split("\t") for line in trace.read().splitlines())
                if len(fields) > 3 and fields[1] == "F"]
    return float(sum(1 for kind in sent if kind in ("Sync", "Query", "CopyDone")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", metavar="REV", default="HEAD")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--claim-only", action="store_true",
                        help="ledger.claim's own CPU on a connection that sends nothing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = claim_only if args.claim_only else child
        print(json.dumps(run(args.transactions, args.batch)))
        return 0
    from run import _checkout

    with tempfile.TemporaryDirectory() as work:
        versions = {"baseline": str(_checkout(args.baseline, Path(work))),
                    "current": str(ROOT / "service")}
        figures: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
        for n in range(args.rounds):
            order = list(versions.items())
            for name, path in order if n % 2 == 0 else order[::-1]:
                env = dict(os.environ, PYTHONPATH=path)
                out = subprocess.run(
                    [sys.executable, __file__, "--child", "--transactions",
                     str(args.transactions), "--batch", str(args.batch)]
                    + (["--claim-only"] if args.claim_only else []),
                    env=env, check=True, capture_output=True, text=True).stdout
                figures[name].append(json.loads(out.splitlines()[-1]))
                print(f"round {n + 1} {name:8} {figures[name][-1]}", flush=True)
    print(f"\n{args.baseline} against the current tree, {args.rounds} alternating rounds of"
          f" {args.transactions} transactions of {args.batch} ids (medians; load average"
          f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for name, runs in figures.items():
        print(f"{name:8} client {statistics.median(r['client_us'] for r in runs):7.1f} µs,"
              f" server {statistics.median(r['server_us'] for r in runs):7.1f} µs,"
              f" round trips {statistics.median(r['round_trips'] for r in runs):.0f}"
              " per transaction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
