"""The benchmark's harness: fresh queues and databases, event bodies, child processes timed
with their own CPU and memory, and LocalStack's CPU, read from /proc when it runs here.

Nothing here measures anything by itself; scenarios.py does, with these parts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import secrets
import subprocess
import sys
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
ETL = [sys.executable, "-m", "login_etl.cli", "run"]
# Compiled bytecode for the measured workers: an installed package (the image's wheel, pip)
# is compiled at install time, so a start does not compile it again. A checkout under
# PYTHONDONTWRITEBYTECODE would compile every module of login_etl at every start; the
# benchmark compiles each tree once (compileall writes __pycache__ beside the sources, which
# git ignores) and the children read it.
_compiled: set[str] = set()

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
    from login_etl.store import Store

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        store = Store(url, pool_size=1)
        store.open()
        try:
            store.init_schema()
        finally:
            store.close()
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
    # cpu_seconds split: in the process itself (user) and in the kernel on its behalf (system).
    user_seconds: float = 0.0
    system_seconds: float = 0.0

    def lines(self) -> list[dict[str, Any]]:
        return list(json_lines(self.stderr_path))


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
                    proc.returncode, stderr_path, usage.ru_utime, usage.ru_stime)


def compiled(tree: str) -> None:
    """Compile a tree holding login_etl/, once per benchmark process."""
    if tree in _compiled:
        return
    subprocess.run([sys.executable, "-m", "compileall", "-q", tree], check=True,
                   stdout=subprocess.DEVNULL)
    _compiled.add(tree)


def etl_env(source: str, dlq: str, db: str, extra: dict[str, str]) -> dict[str, str]:
    """login-etl's environment for one run: these queues and database, a fresh key, JSON logs,
    the package's bytecode compiled beforehand (as an installed package's is)."""
    import login_etl

    tree = extra.get("PYTHONPATH") or str(Path(login_etl.__file__).parents[1])
    compiled(tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIN_ETL_")}
    env.update(AWS_ENV)
    env.update({"LOGIN_ETL_QUEUE_URL": source, "LOGIN_ETL_DLQ_URL": dlq,
                "LOGIN_ETL_DATABASE_URL": db, "LOGIN_ETL_MASKING_KEY": secrets.token_hex(32),
                "LOGIN_ETL_HTTP_PORT": "0", "LOGIN_ETL_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


# -- results and waiting --------------------------------------------------------------------


@dataclass
class Throughput:
    """One measured run: how many messages in how long, at what CPU and memory cost."""

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


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON log events of a file, skipping any line that is not one."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
