"""login-etl measured side by side with the queue's own limit, in one run on one stack.

    python benchmarks/run.py [--messages 20000] [--rounds 2] [--quick]

The scenarios (scenarios.py) are the ceiling (a bare boto3 receive + delete loop), the lean
loop (the same with login-etl's own SQS client: the queue's limit), login-etl itself, a
seed-style worker (one message per receive, insert, commit and delete), the DB stage alone and
the latency of the running daemon at a steady rate; report.py prints the table. Ceiling, lean
loop and login-etl alternate, `--rounds` times each, and the medians of the rounds are
compared: noise on a shared machine must not decide a ratio. The seed-style worker runs once
per round after them.

The targets: login-etl's messages per CPU-second (start-up included) at least 3.0x the bare
boto3 loop's, end to end at least 0.95x the lean loop, peak RSS and p99 latency bounded; the
seed-style ratio is information (both sides are bound by LocalStack here).

Exit status: 0 when every run completed and was correct (every message stored once, queues
empty), 1 otherwise; a missed target is reported, not an error (unless --strict).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import Throughput, event_bodies, sqs_client
from report import report
from scenarios import (
    measure_ceiling,
    measure_db_stage,
    measure_etl,
    measure_latency,
    measure_seed,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000,
                        help="messages per ceiling and login-etl run (default 20,000)")
    parser.add_argument("--seed-messages", type=int, default=1_000)
    parser.add_argument("--db-events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2, help="ceiling/login-etl rounds (>= 2)")
    parser.add_argument("--rate", type=int, default=500, help="latency run: messages per second")
    parser.add_argument("--latency-seconds", type=float, default=20)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: a smoke run that prints every figure in ~1 minute")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for login-etl (e.g. LOGIN_ETL_BATCH_SIZE=200)")
    parser.add_argument("--only", choices=("throughput", "seed", "db", "latency"),
                        help="run one part (for tuning; the table needs all)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run login-etl as of git revision REV in every throughput "
                        "round (old and new alternate), and print both")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.seed_messages, args.db_events = 1_000, 100, 5_000
        args.rate, args.latency_seconds = 100, 3
    extra = dict(e.split("=", 1) for e in args.env)
    batch_size = int(extra.get("LOGIN_ETL_BATCH_SIZE", 0)) or _default_batch_size()

    sqs = sqs_client(keep_alive=True)
    sqs.list_queues()
    with tempfile.TemporaryDirectory(prefix="login-etl-bench-") as tmp:
        work = Path(tmp)
        ceilings: list[Throughput] = []
        leans: list[Throughput] = []
        etls: list[Throughput] = []
        olds: list[Throughput] = []
        old_env = dict(extra, PYTHONPATH=str(_checkout(args.baseline, work))) if args.baseline \
            else {}
        seeds: list[Throughput] = []
        db = Throughput(1, 1, 1)
        latency = {"p50": 0.0, "p99": 0.0, "max": 0.0, "rate": 0.0, "commit_p99": 0.0,
                   "localstack_cpu": 0.0}
        bodies = event_bodies(args.messages)
        seed_bodies = event_bodies(args.seed_messages, seed=3)
        for i in range(1, max(2, args.rounds) + 1):
            if args.only in (None, "throughput"):
                ceilings.append(measure_ceiling(sqs, bodies, work))
                _progress(f"round {i}: ceiling {ceilings[-1].rate:,.0f} msg/s, "
                          f"{ceilings[-1].per_cpu:,.0f} msg/CPU-s")
                leans.append(measure_ceiling(sqs, bodies, work, "lean"))
                _progress(f"round {i}: lean loop {leans[-1].rate:,.0f} msg/s, "
                          f"{leans[-1].per_cpu:,.0f} msg/CPU-s")
                order = [("login-etl", etls, extra), ("baseline", olds, old_env)]
                for name, runs, env in order[::1 if i % 2 else -1]:
                    if env is old_env and not args.baseline:
                        continue
                    runs.append(measure_etl(sqs, bodies, work, env))
                    _progress(f"round {i}: {name} {runs[-1].rate:,.0f} msg/s, "
                              f"{runs[-1].per_cpu:,.0f} msg/CPU-s, {runs[-1].max_rss_mb:.0f} MB")
            if args.only in (None, "seed"):
                seeds.append(measure_seed(sqs, seed_bodies))
                _progress(f"round {i}: seed-style {seeds[-1].rate:,.1f} msg/s")
        if args.only in (None, "db"):
            db = measure_db_stage(args.db_events, batch_size)
            _progress(f"db stage: {db.rate:,.0f} rows/s, {db.per_cpu:,.0f} rows/CPU-s")
        if args.only in (None, "latency"):
            latency = measure_latency(sqs, args.rate, args.latency_seconds, work, extra)
            _progress(f"latency: p50 {latency['p50'] * 1000:.0f} ms, "
                      f"p99 {latency['p99'] * 1000:.0f} ms at {latency['rate']:,.0f} msg/s sent; "
                      f"LocalStack busy {latency['localstack_cpu']:.0%} of a core")
        if olds:
            _compare(ceilings, etls, olds)
        if args.only:
            return 0
        met = report(args, ceilings, leans, etls, seeds, db, latency)
    return 1 if args.strict and not met else 0


def _checkout(rev: str, work: Path) -> Path:
    """The service/ tree of a git revision, unpacked under work: the baseline's import path
    (a directory holding login_etl/ is taken as it is)."""
    if (Path(rev) / "login_etl").is_dir():
        return Path(rev)
    root = Path(__file__).resolve().parents[1]
    target = work / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "service"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "service"


def _compare(ceilings: list[Throughput], etls: list[Throughput], olds: list[Throughput]) -> None:
    """Old and new side by side: medians of the alternating rounds, each against the bare
    loop's messages per CPU-second of the same rounds."""
    bare = statistics.median(r.per_cpu for r in ceilings)
    print("\nbaseline and login-etl, alternating (medians of the rounds)")
    print(f"  {'run':<12}{'msg/s':>9}{'CPU s':>8}{'msg/CPU-s':>11}{'/ bare loop':>13}{'RSS MB':>8}")
    for name, runs in (("baseline", olds), ("login-etl", etls)):
        per_cpu = statistics.median(r.per_cpu for r in runs)
        print(f"  {name:<12}{statistics.median(r.rate for r in runs):>9,.0f}"
              f"{statistics.median(r.cpu_seconds for r in runs):>8.2f}{per_cpu:>11,.0f}"
              f"{per_cpu / bare:>12.2f}x{max(r.max_rss_mb for r in runs):>8.1f}")


def _default_batch_size() -> int:
    from login_etl.settings import Settings

    return Settings.batch_size


def _progress(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
