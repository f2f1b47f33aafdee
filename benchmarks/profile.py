"""Where the worker's CPU goes, per message and by stage: a sampling profile under load.

    python benchmarks/profile.py [--messages 20000] [--rate 500] [--out build/profile]

`login-etl run --until-empty` runs three times through LocalStack, each on a fresh queue and
database: on --messages messages alone, for its CPU (user and system, from wait4); on an
empty queue, for the CPU of start-up and shutdown; on the same messages under py-spy
(`record --gil`: only the thread holding the GIL is sampled, so a sample is Python running),
for the proportions. Each sample is put in one stage (STAGES: the first pattern that matches
a frame, from the innermost frame outwards); the start-up's samples are left out, since the
empty-queue run measures it whole. A stage's share of the remaining samples times the run's
user CPU less the start-up's, over the messages, is its microseconds per message; the
kernel's time (system calls) is its own row.

Limits: a sample is a moment of wall time with the GIL held, so on a loaded machine a thread
that holds the GIL while the scheduler has it off the CPU (often right after it woke another
thread: Condition.notify) counts as busy; the hand-off row is then an upper bound. At 500
samples a second a 20,000-message run yields about a thousand samples of Python after
start-up, so a row under ~2 % is within its noise. The raw stacks stay in --out
(worker.txt, one `frame;frame;... count` line per stack: flamegraph.pl reads them).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import ETL, ChildRun, database, etl_env, event_bodies, fill, queues, run_child, sqs_client

IMPORTS = "start-up: imports"
STARTING = "start-up and shutdown (cli, settings, connect)"
BACKGROUND = "idle polls, depth checks, heartbeat, housekeeping"
# (stage, pattern over "function (file)" frames), decided by context first: a stack with any
# frame matching a CONTEXT pattern is that stage (an import is start-up whatever it runs).
CONTEXT: list[tuple[str, str]] = [
    (IMPORTS, r"_find_and_load|<frozen importlib"),
    (STARTING, r"Store\.(open|close)|Worker\.stop\b|\brun \(.*login_etl/cli\.py"),
    (BACKGROUND, r"Heartbeat|Housekeeping|drained"),
    ("ledger claim", r"Transaction\.claim"),
    ("COPY lines and rows", r"Transaction\.insert|login_event"),
]
# Else the first stage whose pattern matches a frame, looking from the innermost frame
# outwards; ROLE_STAGES decides from the thread's role when nothing below matched.
STAGES: list[tuple[str, str]] = [
    ("logs and metrics", r"structlog|prometheus_client|\(.*login_etl/logs\.py"),
    ("signing (SigV4)", r"login_etl/sqs/sigv4\.py"),
    ("masking (HMAC, sealing)", r"login_etl/masking\.py"),
    ("commit and transaction", r"login_etl/(store\.py|ledger|pgerrors\.py)|psycopg"),
    ("delete: entries and their grouping", r"\bdelete\b.*\(.*login_etl/queue\.py"),
    ("receive: Received built from the answer", r"\breceive\b.*\(.*login_etl/queue\.py|"
                                                r"\bReceived\b|_received"),
    ("validation (parse, JSON)", r"login_etl/messages\.py|orjson"),
    ("thread hand-offs (queues, locks, in-flight book)",
     r"login_etl/inflight\.py|\((/usr|.*python3\.\d+)/(lib/)?python3\.\d+/(queue|threading)\.py"),
    (BACKGROUND, r"\bdepth\b|BatchWindow"),
    ("HTTP status server", r"login_etl/(http|health)\.py|statuspage|socketserver"),
    ("SQS calls: HTTP, JSON, answer checks, retry wrapper",
     r"login_etl/(sqs|queue|retrying)"),
    ("settle (pipeline)", r"login_etl/pipeline\.py"),
    (STARTING, r"login_etl/(cli|invocation|settings|worker)\.py|click"),
]
# Stages of the start-up; their CPU is measured whole by a run on an empty queue.
START_UP = (IMPORTS, STARTING)
ROLE_STAGES: list[tuple[str, str]] = [
    ("thread hand-offs (queues, locks, in-flight book)", r"\b(Poller|Batcher|Settler)\b"),
]
# Innermost frames where a thread waits (a socket read, a condition, libpq's poll, a sleep):
# py-spy samples them when it cannot tell the thread is idle. They are counted apart, not as
# CPU: the kernel's share of a socket read is in the CPU total, spread over the other stages.
WAITS = re.compile(r"^(SocketIO\.readinto|Condition\.wait|Event\.wait|Thread\.join|"
                   r"Thread\._wait_for_tstate_lock|wait|select|poll|sleep|_sleep|"
                   r"Connection\.wait|BaseSelector\.select|EpollSelector\.select|"
                   r"SelectSelector\.select|accept|serve_forever) \((socket|threading|"
                   r"selectors|psycopg/\S+|psycopg_pool/\S+|socketserver|time)\.py\)$")
WAITING = "(waiting: socket reads, conditions, libpq polls)"
LINE = re.compile(r":\d+\)$")


def stages(raw: Path) -> collections.Counter[str]:
    """py-spy's raw output (`frame;frame;... count` per line, outermost first) -> samples by
    stage."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [LINE.sub(")", f) for f in stack.split(";")]
        if frames and WAITS.match(frames[-1]):
            counts[WAITING] += int(n)
            continue
        # Innermost first, so the first match is the most specific.
        counts[_first_stage(list(reversed(frames)))] += int(n)
    return counts


def _first_stage(inner_first: Sequence[str]) -> str:
    for stage, pattern in CONTEXT:
        rx = re.compile(pattern)
        if any(rx.search(frame) for frame in inner_first):
            return stage
    compiled = [(stage, re.compile(p)) for stage, p in STAGES]
    for frame in inner_first:
        for stage, rx in compiled:
            if rx.search(frame):
                return stage
    joined = ";".join(inner_first)
    for stage, pattern in ROLE_STAGES:
        if re.search(pattern, joined):
            return stage
    return "other (interpreter, threads starting)"


def drain(bodies: Sequence[str], work: Path, name: str, wrap: Sequence[str] = (),
          ) -> ChildRun:
    """One --until-empty run on a fresh queue and database."""
    sqs = sqs_client(keep_alive=True)
    with queues(sqs) as (source, dlq), database() as db:
        fill(sqs, source, bodies)
        run = run_child([*wrap, *ETL, "--until-empty"], etl_env(source, dlq, db, {}),
                        work / f"{name}.err")
        if run.returncode != 0:
            raise RuntimeError(f"{name}: exited {run.returncode}: "
                               f"{run.stderr_path.read_text()[-2000:]}")
        return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path("build/profile"))
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is needed: pip install py-spy", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "worker.txt"
    bodies = event_bodies(args.messages, seed=29)
    with tempfile.TemporaryDirectory(prefix="login-etl-profile-") as tmp:
        work = Path(tmp)
        plain = drain(bodies, work, "plain")
        idle = drain([], work, "idle")
        drain(bodies, work, "profiled", [spy, "record", "--gil", "--nonblocking", "--rate",
                                         str(args.rate), "--format", "raw", "--output",
                                         str(raw), "--"])
    counts = stages(raw)
    waiting = counts.pop(WAITING, 0)
    started = sum(counts.pop(stage, 0) for stage in START_UP)
    sampled = sum(counts.values())
    n = args.messages
    steady_user = plain.user_seconds - idle.user_seconds
    steady_system = plain.system_seconds - idle.system_seconds
    print(f"login-etl run --until-empty, {n:,} messages: {plain.cpu_seconds:.2f} CPU-s "
          f"(user {plain.user_seconds:.2f}, system {plain.system_seconds:.2f}) in "
          f"{plain.seconds:.1f} s; on an empty queue {idle.cpu_seconds:.2f} CPU-s (user "
          f"{idle.user_seconds:.2f}, system {idle.system_seconds:.2f}); {sampled:,} samples "
          f"holding the GIL after start-up at {args.rate}/s ({started:,} in start-up and shutdown "
          f"and {waiting:,} in waits left out); "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print()
    print("| stage | share of the Python samples | µs per message |")
    print("|---|---:|---:|")
    for stage, k in counts.most_common():
        print(f"| {stage} | {k / sampled:.1%} | {k / sampled * steady_user / n * 1e6:.1f} |")
    print(f"| kernel: system calls (sockets, futexes of thread wake-ups), memory | | "
          f"{steady_system / n * 1e6:.1f} |")
    print(f"| start-up and shutdown (the empty-queue run's CPU, spread over {n:,}) | | "
          f"{idle.cpu_seconds / n * 1e6:.1f} |")
    print(f"| total | | {plain.cpu_seconds / n * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
