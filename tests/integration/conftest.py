"""Fixtures for the real stack. LocalStack or Postgres missing is a failure, never a skip."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
    sqs_client,
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
    queue_url, dlq_url = create_queues(sqs)
    database_url = create_database()
    extra = {"LOGIN_ETL_SQS_CLIENT": sqs_client_kind} if sqs_client_kind else {}
    yield Stack(sqs, queue_url, dlq_url, database_url, extra_env=extra)
    for url in (queue_url, dlq_url):
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=url)
    drop_database(database_url)
