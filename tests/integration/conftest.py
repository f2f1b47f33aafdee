"""Fixtures for the real stack. LocalStack or Postgres missing is a failure, never a skip."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.stack import (
    ADMIN_DSN,
    ENDPOINT,
    Stack,
    create_database,
    create_queues,
    drop_database,
    end,
    free_port,
    fresh_stack,
    sqs_client,
    wait_until,
)


@pytest.fixture(scope="session")
def sqs() -> Any:
    client = sqs_client()
    try:
        client.list_queues()
    except Exception as exc:
        pytest.fail(f"LocalStack is not reachable at {ENDPOINT} (run scripts/localstack.sh): {exc}")
    return client


@pytest.fixture(scope="session")
def postgres() -> str:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_DSN} (run scripts/postgres.sh): {exc}")
    return ADMIN_DSN


@pytest.fixture
def database(postgres: str) -> Iterator[str]:
    """A fresh empty database for one test, dropped afterwards."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


# Runs a test with each SQS client the product has: `@both_clients` on the test (its `stack`
# then runs `login-etl` with LOGIN_ETL_SQS_CLIENT set to each in turn).
CLIENTS = ("lean", "boto3")
both_clients = pytest.mark.parametrize("sqs_client_kind", CLIENTS, indirect=True)


@pytest.fixture
def sqs_client_kind(request: pytest.FixtureRequest) -> str | None:
    """The LOGIN_ETL_SQS_CLIENT a test runs with; None: the product's default."""
    return getattr(request, "param", None)


@pytest.fixture
def stack(sqs: Any, postgres: str, sqs_client_kind: str | None) -> Iterator[Stack]:
    """A fresh queue pair and a fresh database for one test."""
    yield from fresh_stack(sqs, create_queues(sqs), sqs_client_kind)


@pytest.fixture(scope="session")
def moto_sqs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second SQS implementation: moto's server in its own process on a free port, stopped
    at the end of the session. A boto3 client on it; its endpoint is `.meta.endpoint_url`."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    client = sqs_client(f"http://127.0.0.1:{port}")

    def answers() -> bool:
        if process.poll() is not None:
            return True
        try:
            client.list_queues()
            return True
        except Exception:
            return False

    try:
        wait_until(answers, 60, interval=0.3, what="moto's server")
        if process.poll() is not None:
            pytest.fail(f"moto's server exited {process.returncode}: {_tail(log)}")
        yield client
    finally:
        end(process)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


@pytest.fixture
def moto_stack(moto_sqs: Any, postgres: str, sqs_client_kind: str | None) -> Iterator[Stack]:
    """The `stack` fixture on moto instead of LocalStack."""
    yield from fresh_stack(
        moto_sqs, create_queues(moto_sqs, endpoint=moto_sqs.meta.endpoint_url), sqs_client_kind)
