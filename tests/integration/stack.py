"""The real test stack: LocalStack SQS on 127.0.0.1:4566 and PostgreSQL on 127.0.0.1:5432.

Each test gets its own queue pair (with a RedrivePolicy, as in production) and its own
database, so tests never see each other's messages or rows. Nothing here is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
from botocore.config import Config

ENDPOINT = os.environ.get("LOGIN_ETL_TEST_SQS", "http://127.0.0.1:4566")
ADMIN_DSN = os.environ.get("LOGIN_ETL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "sample_data.json"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}


def sqs_client(endpoint: str = ENDPOINT) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(max_pool_connections=16, retries={"max_attempts": 5}))


def sample_bodies() -> list[str]:
    return [json.dumps(event) for event in json.loads(SAMPLE.read_text())]


def sample_events() -> list[dict[str, Any]]:
    return json.loads(SAMPLE.read_text())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    sqs: Any
    queue_url: str
    dlq_url: str
    database_url: str
    key: str = field(default_factory=lambda: secrets.token_hex(32))
    extra_env: dict[str, str] = field(default_factory=dict)

    # -- running the product ----------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIN_ETL_")}
        env.update(AWS_ENV)
        env.update({
            "LOGIN_ETL_QUEUE_URL": self.queue_url,
            "LOGIN_ETL_DATABASE_URL": self.database_url,
            "LOGIN_ETL_MASKING_KEY": self.key,
            "LOGIN_ETL_HTTP_PORT": "0",
            "LOGIN_ETL_LOG_FORMAT": "json",
            "LOGIN_ETL_BATCH_WINDOW_MS": "50",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = 120, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "login_etl.cli", *args], env=env or self.env(),
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"login-etl {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stderr[-3000:]}")
        return result

    def start(self, *args: str, env: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen[str]:
        """Start `login-etl run ...` in the background (stderr to `log` or a pipe)."""
        stderr: Any = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115
        return subprocess.Popen(
            [sys.executable, "-m", "login_etl.cli", "run", *args], env=env or self.env(),
            stdout=subprocess.DEVNULL, stderr=stderr, text=True, stdin=subprocess.DEVNULL,
        )

    # -- the queue ----------------------------------------------------------------------------

    def send(self, bodies: Sequence[str], queue_url: str | None = None, threads: int = 4) -> None:
        from concurrent.futures import ThreadPoolExecutor

        url = queue_url or self.queue_url
        chunks = [bodies[i:i + 10] for i in range(0, len(bodies), 10)]

        def send_chunk(chunk: Sequence[str]) -> None:
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)]
            response = self.sqs.send_message_batch(QueueUrl=url, Entries=entries)
            assert not response.get("Failed"), response.get("Failed")

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send_chunk, chunks))

    def depth(self, dlq: bool = False) -> dict[str, int]:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.dlq_url if dlq else self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                            "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return {"visible": int(attributes["ApproximateNumberOfMessages"]),
                "in_flight": int(attributes["ApproximateNumberOfMessagesNotVisible"]),
                "delayed": int(attributes["ApproximateNumberOfMessagesDelayed"])}

    def receive_all(self, dlq: bool = True, wait: float = 2.0) -> list[dict[str, Any]]:
        """Drain a queue for inspection (the messages become invisible for 60 s)."""
        url = self.dlq_url if dlq else self.queue_url
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            response = self.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60,
                MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
            messages = response.get("Messages", [])
            got += messages
            if not messages:
                time.sleep(0.1)
        return got

    # -- the database --------------------------------------------------------------------------

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        return query(self.database_url, sql, params)

    def connect(self) -> psycopg.Connection[Any]:
        """A connection of the test's own (in a transaction until commit/rollback)."""
        return psycopg.connect(self.database_url)

    def count_rows(self) -> int:
        try:
            return int(self.query("SELECT count(*) FROM user_logins")[0][0])
        except psycopg.errors.UndefinedTable:
            return 0

    def duplicate_rows(self) -> int:
        """Rows beyond the first for each (user_id, masked_device_id, masked_ip, app_version)."""
        return int(self.query(
            "SELECT count(*) - count(DISTINCT (user_id, device_type, masked_ip, masked_device_id,"
            " locale, app_version)) FROM user_logins")[0][0])


def fresh_stack(sqs: Any, queues: tuple[str, str], sqs_client_kind: str | None
                ) -> Iterator[Stack]:
    """A Stack on that queue pair (source, DLQ) and a fresh database; the queues and the
    database are dropped afterwards."""
    queue_url, dlq_url = queues
    database_url = create_database()
    extra = {"LOGIN_ETL_SQS_CLIENT": sqs_client_kind} if sqs_client_kind else {}
    yield Stack(sqs, queue_url, dlq_url, database_url, extra_env=extra)
    for url in (queue_url, dlq_url):
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=url)
    drop_database(database_url)


def create_queues(sqs: Any, visibility_timeout: int = 30,
                  endpoint: str = ENDPOINT) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": str(visibility_timeout),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "10"}),
    })["QueueUrl"]
    return _local(source, endpoint), _local(dlq, endpoint)


def _local(url: str, endpoint: str = ENDPOINT) -> str:
    """LocalStack answers with a *.localstack.cloud host; address it on 127.0.0.1 instead."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path
    return f"{endpoint}{path}"


def create_database() -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(url: str, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own autocommit connection; its rows, [] if it returns none."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, tuple(params) or None)
        return cur.fetchall() if cur.description else []


def end(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, and SIGKILL if it has not exited within timeout: a process a test started
    never outlives it."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait_until(predicate: Any, timeout: float, interval: float = 0.2, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


def unique_bodies(n: int, prefix: str = "u") -> list[str]:
    """n valid events, each with its own user_id, so duplicates are countable by user_id."""
    return [json.dumps({"user_id": f"{prefix}-{i:07d}", "app_version": f"{i % 10}.{i % 1000}.1",
                        "device_type": "android" if i % 2 else "ios",
                        "ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
                        "locale": None if i % 3 == 0 else "DE",
                        "device_id": f"dev-{i:09d}"}) for i in range(n)]


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of one metric whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events
