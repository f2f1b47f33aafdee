"""login-etl measured side by side with the queue's own limit, in one run on one stack.

    python benchmarks/run.py [--messages 20000] [--rounds 2] [--quick]

What it measures (issue 7), each on fresh queues and a fresh database, cleaned up after:

  ceiling   plain boto3 receive(10) + delete_message_batch loops, 4 threads, no processing, in
            a child process so its own CPU (user+sys, from wait4) is measured
  login-etl `login-etl run --until-empty` as a child process on the same number of messages,
            timed from spawn to exit; CPU and peak RSS from the child's resource usage
            (ceiling and login-etl alternate, `--rounds` times each: noise on a shared machine
            must not decide the ratio; the median of the rounds is compared)
  seed      a seed-style worker: receive 1, insert 1, commit, delete 1, per message (plain
            boto3, in this process), once per round after the pair above; the median is used
  db stage  validate + mask, then ledger claim + COPY + COMMIT of in-memory events, with the
            package's own parse / Masker / Store / Transaction: one thread parses the next
            batch while another writes this one (the worker's poller/settler split; one GIL,
            so one core of Python)
  latency   a paced sender at a steady rate while `login-etl run` (the daemon) is running;
            latency = ledger.processed_at - the sender's clock just before the SendMessageBatch
            call of that message. The sender's clock reading precedes SQS's SentTimestamp
            (same host, same clock) by at most the send round trip, and processed_at (now(),
            the transaction start) precedes COMMIT by the transaction time, which the worker
            logs per batch as commit_ms; the p99 of that is printed next to the latency.

Both the ceiling and login-etl are timed from process spawn to exit, so both pay their
interpreter start and imports. Exit status: 0 when every run completed and was correct (every
message stored once, queues empty), 1 otherwise; a missed target is reported, not an error
(unless --strict).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import psycopg
from botocore.config import Config

ENDPOINT = os.environ.get("LOGIN_ETL_BENCH_SQS", "http://127.0.0.1:4566")
ADMIN_DSN = os.environ.get("LOGIN_ETL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
CEILING_THREADS = 4

# -- the stack ------------------------------------------------------------------------------


def sqs_client(pool: int = 16, *, keep_alive: bool = False) -> Any:
    """Plain boto3. keep_alive (for the untimed helpers: fill, the paced sender) asks LocalStack
    to keep connections open, which it otherwise closes after every call (localstack#6557)."""
    client = boto3.client("sqs", endpoint_url=ENDPOINT, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test",
                          config=Config(max_pool_connections=pool, retries={"max_attempts": 5}))
    if keep_alive:
        def ask_keep_alive(request: Any, **_: Any) -> None:
            request.headers["Connection"] = "keep-alive"

        client.meta.events.register("before-send.sqs", ask_keep_alive)
    return client


def _local(url: str) -> str:
    """LocalStack answers with a *.localstack.cloud host; address it on ENDPOINT instead."""
    return ENDPOINT + urlsplit(url).path


@contextlib.contextmanager
def queues(sqs: Any) -> Iterator[tuple[str, str]]:
    """A fresh source queue with a RedrivePolicy to a fresh DLQ, deleted afterwards."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    dlq = _local(sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    source = _local(sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": "60",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "10"}),
    })["QueueUrl"])
    try:
        yield source, dlq
    finally:
        for url in (source, dlq):
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=url)


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh database with the schema, dropped afterwards."""
    from login_etl.store import SCHEMA

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SCHEMA)
        yield url
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def depth(sqs: Any, url: str) -> int:
    """Visible + in flight + delayed."""
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return sum(int(v) for v in a.values())


def _localstack_pid() -> int | None:
    """LocalStack's process, if it runs on this machine (only read, for its CPU time)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"localstack.runtime.main" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


LOCALSTACK_PID = _localstack_pid()


def localstack_cpu() -> float:
    """user+sys seconds LocalStack has used so far (NaN when it is not visible from here)."""
    if LOCALSTACK_PID is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{LOCALSTACK_PID}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the events -----------------------------------------------------------------------------


def event_bodies(n: int, seed: int = 7) -> list[str]:
    """Valid login events shaped like the take-home's sample (ipv4 and a few ipv6, null locales)."""
    rng = random.Random(seed)
    locales = ["RU", "PH", "US", "BR", "DE", "IN", None]
    bodies = []
    for _ in range(n):
        if rng.random() < 0.05:
            ip = ":".join(f"{rng.randrange(65536):x}" for _ in range(8))
        else:
            ip = ".".join(str(rng.randrange(256)) for _ in range(4))
        bodies.append(json.dumps({
            "user_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "app_version": f"{rng.randrange(4)}.{rng.randrange(20)}.{rng.randrange(10)}",
            "device_type": rng.choice(("android", "ios")),
            "ip": ip,
            "locale": rng.choice(locales),
            "device_id": f"{rng.randrange(1000):03}-{rng.randrange(100):02}-"
                         f"{rng.randrange(10000):04}",
        }))
    return bodies


def fill(sqs: Any, url: str, bodies: Sequence[str], threads: int = 4) -> None:
    """SendMessageBatch from a few threads; untimed, before the run it feeds."""
    chunks = [bodies[i:i + 10] for i in range(0, len(bodies), 10)]

    def send(chunk: Sequence[str]) -> None:
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
        failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(f"fill: {len(failed)} entries failed")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, chunks))


# -- child processes ------------------------------------------------------------------------


@dataclass
class ChildRun:
    seconds: float
    cpu_seconds: float
    max_rss_mb: float
    returncode: int
    stderr_path: Path

    def lines(self) -> list[dict[str, Any]]:
        events = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events


def run_child(argv: Sequence[str], env: dict[str, str], stderr_path: Path,
              stdout_path: Path | None = None, timeout: float = 900) -> ChildRun:
    """Spawn, wait with wait4 for the child's own rusage; wall time from spawn to exit."""
    out = open(stdout_path, "w") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
    with open(stderr_path, "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - started
    if stdout_path:
        out.close()  # type: ignore[union-attr]
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
                    proc.returncode, stderr_path)


def ceiling_child(queue_url: str, messages: int, threads: int) -> None:
    """The bare loop (runs in the child): receive(10) + delete_message_batch, no processing."""
    sqs = boto3.client("sqs", endpoint_url=ENDPOINT, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test",
                       config=Config(max_pool_connections=threads + 2))
    deleted = 0
    lock = threading.Lock()
    started = time.perf_counter()

    def loop() -> None:
        nonlocal deleted
        while deleted < messages:
            got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=1, VisibilityTimeout=60).get("Messages", [])
            if not got:
                continue
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                       for i, m in enumerate(got)]
            response = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
            with lock:
                deleted += len(entries) - len(response.get("Failed", ()))

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    print(json.dumps({"deleted": deleted, "loop_seconds": time.perf_counter() - started}))


# -- the measurements -----------------------------------------------------------------------


@dataclass
class Throughput:
    messages: int
    seconds: float
    cpu_seconds: float
    max_rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.messages / self.cpu_seconds


def measure_ceiling(sqs: Any, bodies: Sequence[str], work: Path) -> Throughput:
    with queues(sqs) as (source, _dlq):
        fill(sqs, source, bodies)
        out = work / "ceiling.out"
        ls_before = localstack_cpu()
        run = run_child([sys.executable, __file__, "_ceiling", source, str(len(bodies)),
                         str(CEILING_THREADS)], {**os.environ, **AWS_ENV},
                        work / "ceiling.err", out)
        if run.returncode != 0:
            raise RuntimeError(f"ceiling loop exited {run.returncode}: "
                               f"{run.stderr_path.read_text()[-2000:]}")
        report = json.loads(out.read_text())
        if report["deleted"] != len(bodies):
            raise RuntimeError(f"ceiling loop deleted {report['deleted']} of {len(bodies)}")
        return Throughput(len(bodies), run.seconds, run.cpu_seconds, run.max_rss_mb,
                          {"loop_rate": len(bodies) / report["loop_seconds"],
                           "localstack_cpu": localstack_cpu() - ls_before})


def etl_env(source: str, dlq: str, db: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIN_ETL_")}
    env.update(AWS_ENV)
    env.update({"LOGIN_ETL_QUEUE_URL": source, "LOGIN_ETL_DLQ_URL": dlq,
                "LOGIN_ETL_DATABASE_URL": db, "LOGIN_ETL_MASKING_KEY": secrets.token_hex(32),
                "LOGIN_ETL_HTTP_PORT": "0", "LOGIN_ETL_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


ETL = [sys.executable, "-m", "login_etl.cli", "run"]


def measure_etl(sqs: Any, bodies: Sequence[str], work: Path, extra: dict[str, str]) -> Throughput:
    with queues(sqs) as (source, dlq), database() as db:
        fill(sqs, source, bodies)
        ls_before = localstack_cpu()
        run = run_child([*ETL, "--until-empty"], etl_env(source, dlq, db, extra),
                        work / "etl.err")
        ls_cpu = localstack_cpu() - ls_before
        if run.returncode != 0:
            raise RuntimeError(f"login-etl exited {run.returncode}: "
                               f"{run.stderr_path.read_text()[-2000:]}")
        rows = query(db, "SELECT count(*) FROM user_logins")[0][0]
        ledger = query(db, "SELECT count(*) FROM login_etl_ledger")[0][0]
        left = depth(sqs, source)
        if rows != len(bodies) or ledger != len(bodies) or left:
            raise RuntimeError(f"login-etl: {rows} rows, {ledger} ledger ids for {len(bodies)} "
                               f"messages, {left} left in the queue")
        settled = [e for e in run.lines() if e.get("event") == "batch_settled"]
        return Throughput(len(bodies), run.seconds, run.cpu_seconds, run.max_rss_mb,
                          {"batches": len(settled), "localstack_cpu": ls_cpu})


def measure_seed(sqs: Any, bodies: Sequence[str]) -> Throughput:
    """The take-home's shape, fixed only where it lost data: one message per call and commit."""
    from login_etl.masking import Masker
    from login_etl.messages import LoginEvent, Received, parse
    from login_etl.settings import MaskingKey

    masker = Masker([MaskingKey("bench", secrets.token_bytes(32))])
    with queues(sqs) as (source, _dlq), database() as db:
        fill(sqs, source, bodies)
        client = sqs_client()
        done = 0
        ls_before = localstack_cpu()
        cpu0, started = time.process_time(), time.perf_counter()
        with psycopg.connect(db) as conn:
            while done < len(bodies):
                got = client.receive_message(
                    QueueUrl=source, MaxNumberOfMessages=1, WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["SentTimestamp"]).get("Messages", [])
                for m in got:
                    parsed = parse(Received(m["MessageId"], m["ReceiptHandle"], m["Body"],
                                            int(m["Attributes"]["SentTimestamp"])), masker)
                    if isinstance(parsed, LoginEvent):
                        conn.execute("INSERT INTO user_logins VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                     parsed.row())
                    conn.commit()
                    client.delete_message(QueueUrl=source, ReceiptHandle=m["ReceiptHandle"])
                    done += 1
        return Throughput(done, time.perf_counter() - started, time.process_time() - cpu0,
                          extra={"localstack_cpu": localstack_cpu() - ls_before})


def measure_db_stage(events: int, batch_size: int) -> Throughput:
    """parse (validate + mask), then ledger claim + COPY + COMMIT, as the worker splits them.

    One thread parses batch after batch (a poller's share), another writes them (a settler's
    share), so parsing the next batch overlaps Postgres working on this one. Both are Python
    threads under one GIL: the Python side runs on one core, Postgres on the other. CPU is
    the whole process's.
    """
    import queue as stdlib_queue

    from login_etl.masking import Masker
    from login_etl.messages import LoginEvent, Received, parse
    from login_etl.settings import MaskingKey
    from login_etl.store import Store
    from login_etl.worker import GIL_SWITCH_SECONDS

    sys.setswitchinterval(GIL_SWITCH_SECONDS)  # as the worker sets it
    masker = Masker([MaskingKey("bench", secrets.token_bytes(32))])
    sent_ms = int(time.time() * 1000)
    template = event_bodies(min(events, 10_000), seed=11)
    received = [Received(f"{uuid.uuid4()}", "rh", template[i % len(template)], sent_ms)
                for i in range(events)]
    handoff: stdlib_queue.Queue[list[Any] | None] = stdlib_queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            for start in range(0, events, batch_size):
                handoff.put([parse(m, masker) for m in received[start:start + batch_size]])
        finally:
            handoff.put(None)

    with database() as db:
        store = Store(db, pool_size=1)
        store.open()
        try:
            cpu0, started = time.process_time(), time.perf_counter()
            parser = threading.Thread(target=produce, name="parse", daemon=True)
            parser.start()
            while (parsed := handoff.get()) is not None:
                with store.transaction() as tx:
                    new = tx.claim([(p.message_id, "stored") for p in parsed])
                    tx.insert([p for p in parsed if isinstance(p, LoginEvent)
                               and p.message_id in new])
            parser.join()
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        finally:
            store.close()
        rows = query(db, "SELECT count(*) FROM user_logins")[0][0]
        if rows != events:
            raise RuntimeError(f"db stage: {rows} rows for {events} events")
        return Throughput(events, seconds, cpu)


def measure_latency(sqs: Any, rate: int, seconds: float, work: Path,
                    extra: dict[str, str]) -> dict[str, float]:
    """A steady sender against the running daemon; see the module docstring for the clock."""
    total = int(rate * seconds)
    bodies = event_bodies(total, seed=13)
    with queues(sqs) as (source, dlq), database() as db:
        log = work / "latency.err"
        with open(log, "w") as err:
            proc = subprocess.Popen([*ETL], env=etl_env(source, dlq, db, extra),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
        try:
            _wait_for(lambda: '"worker_started"' in log.read_text(), 30, "worker start")
            ls_before = localstack_cpu()
            sent_at = paced_send(sqs_client(keep_alive=True), source, bodies, rate)
            _wait_for(lambda: query(db, "SELECT count(*) FROM login_etl_ledger")[0][0] >= total,
                      60, "every message committed")
            ls_cpu = localstack_cpu() - ls_before
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        committed = dict(query(db, "SELECT message_id, extract(epoch from processed_at) "
                                   "FROM login_etl_ledger"))
    latencies = sorted(float(committed[i]) - t for i, t in sent_at.items())
    commit_ms = sorted(float(e["commit_ms"]) for e in _json_lines(log)
                       if e.get("event") == "batch_settled")
    achieved = total / (max(sent_at.values()) - min(sent_at.values()) or 1)
    return {"p50": _quantile(latencies, 0.50), "p99": _quantile(latencies, 0.99),
            "max": latencies[-1], "rate": achieved,
            "commit_p99": _quantile(commit_ms, 0.99) / 1000 if commit_ms else 0.0,
            "localstack_cpu": ls_cpu / (total / achieved)}


def paced_send(client: Any, url: str, bodies: Sequence[str], rate: int,
               threads: int = 4) -> dict[str, float]:
    """SendMessageBatch of 10 on a fixed schedule (rate/10 calls a second); id -> clock before.

    Each call has its own slot on the schedule and a few threads take the slots in turn, so one
    slow call delays only itself, not every call after it.
    """
    sent_at: dict[str, float] = {}
    interval = 10 / rate
    started = time.perf_counter() + 0.1

    def send(slot: int) -> None:
        delay = started + slot * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        chunk = bodies[slot * 10:slot * 10 + 10]
        at = time.time()
        response = client.send_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)])
        if response.get("Failed"):
            raise RuntimeError("latency sender: entries failed")
        for ok in response["Successful"]:
            sent_at[ok["MessageId"]] = at

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, range((len(bodies) + 9) // 10)))
    return sent_at


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# -- the report ----------------------------------------------------------------------------


def median(runs: Sequence[Throughput], key: Callable[[Throughput], float]) -> float:
    return statistics.median(key(r) for r in runs)


def report(args: argparse.Namespace, ceilings: list[Throughput], etls: list[Throughput],
           seeds: list[Throughput], db: Throughput, latency: dict[str, float]) -> bool:
    ceiling_rate = median(ceilings, lambda r: r.rate)
    etl_rate = median(etls, lambda r: r.rate)
    bare_cpu = median(ceilings, lambda r: r.per_cpu)
    etl_cpu = median(etls, lambda r: r.per_cpu)
    rss = max(r.max_rss_mb for r in etls)
    seed_rate = median(seeds, lambda r: r.rate)
    print()
    print("rounds (each on a fresh queue; ceiling and login-etl alternate)")
    print(f"  {'run':<22}{'msg/s':>9}{'seconds':>9}{'CPU s':>8}{'msg/CPU-s':>11}{'RSS MB':>8}"
          f"{'LocalStack CPU s':>18}")
    for i, (c, e) in enumerate(zip(ceilings, etls, strict=True), start=1):
        for name, r in ((f"{i}: ceiling", c), (f"{i}: login-etl", e)):
            print(f"  {name:<22}{r.rate:>9,.0f}{r.seconds:>9.2f}{r.cpu_seconds:>8.2f}"
                  f"{r.per_cpu:>11,.0f}{r.max_rss_mb:>8.1f}{r.extra['localstack_cpu']:>18.1f}")
    print()
    rows: list[tuple[str, str, str, bool | None]] = [
        (f"raw ceiling: boto3 receive(10)+delete_batch, {CEILING_THREADS} threads "
         f"({args.messages:,} msgs)", f"{ceiling_rate:,.0f} msg/s", "", None),
        (f"seed-style worker: 1 per receive/insert/commit/delete ({args.seed_messages:,} msgs)",
         f"{seed_rate:,.1f} msg/s", "", None),
        (f"login-etl run --until-empty ({args.messages:,} msgs, spawn to exit)",
         f"{etl_rate:,.0f} msg/s", "", None),
        ("login-etl / ceiling (c/a)", f"{etl_rate / ceiling_rate:.2f}x", ">= 0.95x",
         etl_rate / ceiling_rate >= 0.95),
        ("login-etl / seed-style (c/b)", f"{etl_rate / seed_rate:,.1f}x", ">= 20x",
         etl_rate / seed_rate >= 20),
        ("bare loop: messages per CPU-second", f"{bare_cpu:,.0f}", "", None),
        ("login-etl: messages per CPU-second", f"{etl_cpu:,.0f}", "", None),
        ("login-etl / bare loop, messages per CPU-s", f"{etl_cpu / bare_cpu:.2f}x", ">= 0.8x",
         etl_cpu / bare_cpu >= 0.8),
        (f"DB stage: validate+mask+ledger+COPY, 1 Python core ({db.messages:,} events)",
         f"{db.rate:,.0f} rows/s", ">= 50,000", db.rate >= 50_000),
        (f"login-etl peak RSS ({args.messages:,} msgs)", f"{rss:.0f} MB", "<= 100 MB",
         rss <= 100),
        (f"latency SentTimestamp->commit p50 at {args.rate} msg/s", f"{latency['p50'] * 1000:.0f} ms",
         "", None),
        (f"latency SentTimestamp->commit p99 at {args.rate} msg/s", f"{latency['p99'] * 1000:.0f} ms",
         "<= 1000 ms", latency["p99"] <= 1.0),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'value':>14}  {'target':<11} result")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<{width}}  {value:>14}  {target:<11} {verdict}".rstrip())
    print()
    print(f"DB stage CPU: {db.per_cpu:,.0f} rows per CPU-second of the benchmark process; "
          f"latency run: {latency['rate']:,.0f} msg/s sent, max {latency['max'] * 1000:.0f} ms, "
          f"transaction p99 {latency['commit_p99'] * 1000:.0f} ms (not in processed_at)")
    print(f"ceiling loop alone (without process start): "
          f"{median(ceilings, lambda r: r.extra['loop_rate']):,.0f} msg/s; "
          f"machine: {os.cpu_count()} cores, shared with LocalStack and Postgres")
    # LocalStack is one Python process (one GIL): about one core is all it can give. Its CPU
    # per message in each run says which run it limited and how far login-etl could go.
    ls = {name: (median(runs, lambda r: r.extra["localstack_cpu"] / r.messages * 1000),
                 median(runs, lambda r: r.extra["localstack_cpu"] / r.seconds))
          for name, runs in (("ceiling", ceilings), ("login-etl", etls), ("seed", seeds))}
    ms = ls["login-etl"][0]
    full_core = 1000 / ms if ms > 0 else math.nan  # nan: LocalStack's CPU not visible here
    print("LocalStack CPU per message / busy: " + ", ".join(
        f"{name} {ms:.2f} ms / {busy:.0%}" for name, (ms, busy) in ls.items())
        + f"; login-etl with LocalStack on a full core: {full_core:,.0f} msg/s"
          f" = {full_core / seed_rate:.1f}x the seed")
    return all(ok for *_, ok in rows if ok is not None)


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
        etls: list[Throughput] = []
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
                etls.append(measure_etl(sqs, bodies, work, extra))
                _progress(f"round {i}: login-etl {etls[-1].rate:,.0f} msg/s, "
                          f"{etls[-1].per_cpu:,.0f} msg/CPU-s, {etls[-1].max_rss_mb:.0f} MB")
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
        if args.only:
            return 0
        met = report(args, ceilings, etls, seeds, db, latency)
    return 1 if args.strict and not met else 0


def _default_batch_size() -> int:
    from login_etl.settings import Settings

    return Settings.batch_size


def _progress(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        ceiling_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
