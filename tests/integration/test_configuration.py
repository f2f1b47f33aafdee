"""Bad configuration: one clear line on stderr, exit 2, no traceback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.stack import Stack


@pytest.mark.parametrize(("env", "fragment"), [
    ({"LOGIN_ETL_MASKING_KEY": ""}, "LOGIN_ETL_MASKING_KEY"),
    ({"LOGIN_ETL_MASKING_KEY": "abc"}, "LOGIN_ETL_MASKING_KEY must be hex"),
    ({"LOGIN_ETL_BATCH_SIZE": "lots"}, "LOGIN_ETL_BATCH_SIZE must be an integer"),
    ({"LOGIN_ETL_QUEUE_URL": "http://127.0.0.1:4566/000000000000/no-such-queue"},
     "queue does not exist"),
    ({"LOGIN_ETL_MASKING_MODE": "plain"}, "LOGIN_ETL_MASKING_MODE"),
    ({"LOGIN_ETL_LOG_LEVEL": "loud"}, "LOGIN_ETL_LOG_LEVEL must be one of"),
    *[({"AWS_CA_BUNDLE": "/nonexistent/ca.pem", "LOGIN_ETL_SQS_CLIENT": client,
        "LOGIN_ETL_QUEUE_URL": "https://127.0.0.1:1/000000000000/q"}, "CA bundle not found")
      for client in ("lean", "boto3")],
])
def test_bad_configuration_exits_2_with_one_line(stack: Stack, env: dict[str, str],
                                                 fragment: str) -> None:
    result = stack.cli("run", "--until-empty", env=stack.env(**env), check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_unreachable_database_is_one_line_not_a_traceback(stack: Stack) -> None:
    env = stack.env(LOGIN_ETL_DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres")
    result = stack.cli("run", "--until-empty", env=env, check=False, timeout=60)
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_command(stack: Stack) -> None:
    out = stack.cli("--help").stdout
    for command in ("run", "count", "status", "load", "init-db", "clear-db", "keygen", "unmask"):
        assert command in out


def test_a_queue_without_redrive_policy_uses_its_dash_dlq(stack: Stack) -> None:
    """SQS leaves "Attributes" out of the answer when a queue has no RedrivePolicy: the
    README's fallback (<queue>-dlq) must follow, not a KeyError."""
    plain = stack.sqs.create_queue(QueueName=f"plain-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    dlq = stack.sqs.create_queue(QueueName=plain.rsplit("/", 1)[1] + "-dlq")["QueueUrl"]
    try:
        queue_url = stack.queue_url.rsplit("/", 1)[0] + "/" + plain.rsplit("/", 1)[1]
        result = stack.cli("count", "--json", env=stack.env(LOGIN_ETL_QUEUE_URL=queue_url),
                           check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        for url in (plain, dlq):
            stack.sqs.delete_queue(QueueUrl=url)


def test_queue_url_flag_decides_the_endpoint_too(stack: Stack) -> None:
    """The environment's queue URL points at a port where nothing listens; --queue-url at
    LocalStack: the SQS endpoint must follow the flag."""
    env = stack.env(LOGIN_ETL_QUEUE_URL="http://127.0.0.1:9/000000000000/nowhere",
                    LOGIN_ETL_DLQ_URL=stack.dlq_url)
    result = stack.cli("--queue-url", stack.queue_url, "count", "--json", env=env, check=False,
                       timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("env", "fragment"), [
    ({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": ""}, "AWS credentials"),
    ({"AWS_ENDPOINT_URL": "notaurl", "LOGIN_ETL_SQS_CLIENT": "boto3"}, "SQS endpoint"),
    ({"LOGIN_ETL_DATABASE_URL": "garbage:://s3cret"}, "LOGIN_ETL_DATABASE_URL is not"),
])
def test_bad_aws_or_database_settings_are_configuration_errors(stack: Stack, env: dict[str, str],
                                                                fragment: str) -> None:
    result = stack.cli("count", env=stack.env(**env), check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql://postgres@127.0.0.1:5432/no_such_db_x", "the database does not exist"),
    ("postgresql://no_such_role_x@127.0.0.1:5432/postgres", "the role does not exist"),
    ("postgresql://postgres@127.0.0.1:1/postgres", "connection refused"),
    # an unencoded "@" in the password: libpq would quote the rest of it as the host name
    ("postgresql://app:Tr0ub@dor99@127.0.0.1:5432/app", "host name not found"),
])
def test_database_start_up_failures_say_why_without_the_url(stack: Stack, url: str,
                                                             reason: str) -> None:
    result = stack.cli("init-db", env=stack.env(LOGIN_ETL_DATABASE_URL=url), check=False,
                       timeout=60)
    assert result.returncode == 1
    assert reason in result.stderr and "PoolClosed" not in result.stderr
    assert "Tr0ub" not in result.stderr and "dor99" not in result.stderr


@pytest.mark.parametrize("content", [b"\x00\xff\xfe garbage", b"\x1f\x8b\x08\x00broken", b"  \n"])
def test_load_of_a_bad_file_is_one_line(stack: Stack, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(content)
    result = stack.cli("load", str(path), check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_and_keygen_work_while_the_environment_is_wrong(stack: Stack) -> None:
    """Settings are read when a command needs them: help must still help, and keygen is how
    one replaces a bad key."""
    env = stack.env(LOGIN_ETL_BATCH_SIZE="lots", LOGIN_ETL_MASKING_KEY="abc")
    helped = stack.cli("run", "--help", env=env, check=False)
    assert helped.returncode == 0 and "--until-empty" in helped.stdout
    key = stack.cli("keygen", env=env, check=False)
    assert key.returncode == 0 and len(key.stdout.strip()) == 64
    bad = stack.cli("count", env=env, check=False)
    assert bad.returncode == 2 and "LOGIN_ETL_" in bad.stderr and "Traceback" not in bad.stderr
