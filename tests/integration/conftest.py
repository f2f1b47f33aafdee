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


@pytest.fixture
def stack(sqs: Any, postgres: str) -> Iterator[Stack]:
    """A fresh queue pair and a fresh database for one test."""
    queue_url, dlq_url = create_queues(sqs)
    database_url = create_database()
    yield Stack(sqs, queue_url, dlq_url, database_url)
    for url in (queue_url, dlq_url):
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=url)
    drop_database(database_url)
