"""What the benchmark measures, one function per scenario, each on fresh queues and a fresh
database, cleaned up after:

  ceiling   plain boto3 receive(10) + delete_message_batch loops, 4 threads, no processing, in
            a child process (ceiling.py, boto3 alone) so its own CPU (user+sys, from wait4) is
            measured; the lean loop is the same with login-etl's own kept-alive SQS client
            (the queue's own limit here)
  login-etl `login-etl run --until-empty` as a child process on the same number of messages,
            timed from spawn to exit; CPU and peak RSS from the child's resource usage; its
            bytecode compiled beforehand, as an installed package's is
  seed      a seed-style worker: receive 1, insert 1, commit, delete 1, per message (plain
            boto3, in this process)
  db stage  validate + mask, then ledger claim + COPY + COMMIT of in-memory events, with the
            package's own parse / Masker / Store / Transaction: one thread parses the next
            batch while another writes this one (the worker's poller/settler split; one GIL,
            so one core of Python)
  latency   a paced sender at a steady rate while `login-etl run` (the daemon) is running;
            latency = the settling transaction's now() (recorded per ledger id by a trigger
            the benchmark adds) - the sender's clock just before the SendMessageBatch
            call of that message. The sender's clock reading precedes SQS's SentTimestamp
            (same host, same clock) by at most the send round trip, and now() (the
            transaction start) precedes COMMIT by the transaction time, which the worker
            logs per batch as commit_ms; the p99 of that is reported next to the latency.

Both the ceiling and login-etl are timed from process spawn to exit, so both pay their
interpreter start and imports. Each scenario checks its result (every message stored once,
queues empty) and raises when it is wrong.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from harness import (
    AWS_ENV,
    ETL,
    Throughput,
    compiled,
    database,
    depth,
    etl_env,
    event_bodies,
    fill,
    json_lines,
    localstack_cpu,
    quantile,
    query,
    queues,
    run_child,
    sqs_client,
    wait_for,
)

CEILING_THREADS = 4
# The bare loop, a script of its own (it imports boto3 and nothing of the benchmark).
ENTRY = Path(__file__).with_name("ceiling.py")


def measure_ceiling(sqs: Any, bodies: Sequence[str], work: Path, client: str = "boto3",
                    ) -> Throughput:
    """The bare loop with plain boto3, or (client="lean") with login-etl's own SQS client."""
    import login_etl

    compiled(str(Path(login_etl.__file__).parents[1]))
    with queues(sqs) as (source, _dlq):
        fill(sqs, source, bodies)
        out = work / "ceiling.out"
        ls_before = localstack_cpu()
        run = run_child([sys.executable, str(ENTRY), source, str(len(bodies)),
                         str(CEILING_THREADS), client], {**os.environ, **AWS_ENV},
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

    # The same GIL switch interval as the worker's.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
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
        _record_settle_times(db)
        log = work / "latency.err"
        with open(log, "w") as err:
            proc = subprocess.Popen([*ETL], env=etl_env(source, dlq, db, extra),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
        try:
            wait_for(lambda: '"worker_started"' in log.read_text(), 30, "worker start")
            ls_before = localstack_cpu()
            sent_at = paced_send(sqs_client(keep_alive=True), source, bodies, rate)
            wait_for(lambda: query(db, "SELECT count(*) FROM login_etl_ledger")[0][0] >= total,
                      60, "every message committed")
            ls_cpu = localstack_cpu() - ls_before
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        committed = dict(query(db, "SELECT message_id, extract(epoch from at) "
                                   "FROM bench_settled"))
    latencies = sorted(float(committed[i]) - t for i, t in sent_at.items())
    commit_ms = sorted(float(e["commit_ms"]) for e in json_lines(log)
                       if e.get("event") == "batch_settled")
    achieved = total / (max(sent_at.values()) - min(sent_at.values()) or 1)
    return {"p50": quantile(latencies, 0.50), "p99": quantile(latencies, 0.99),
            "max": latencies[-1], "rate": achieved,
            "commit_p99": quantile(commit_ms, 0.99) / 1000 if commit_ms else 0.0,
            "localstack_cpu": ls_cpu / (total / achieved)}


def _record_settle_times(db: str) -> None:
    """The ledger keeps no time (its day partitions are the time): for the latency run a
    statement trigger records each ledger id with its transaction's now()."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE bench_settled (message_id text, at timestamptz NOT NULL DEFAULT now());
            CREATE FUNCTION bench_settled() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO bench_settled (message_id) SELECT coalesce(id::text, text_id)
              FROM new_rows;
              RETURN NULL;
            END $$;
            CREATE TRIGGER bench_settled AFTER INSERT ON login_etl_ledger
              REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
              EXECUTE FUNCTION bench_settled();
        """)


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

