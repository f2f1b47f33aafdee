"""Bad configuration: one clear line on stderr, exit 2, no traceback."""

from __future__ import annotations

import pytest

from tests.integration.stack import Stack


@pytest.mark.parametrize(("env", "fragment"), [
    ({"LOGIN_ETL_MASKING_KEY": ""}, "LOGIN_ETL_MASKING_KEY"),
    ({"LOGIN_ETL_MASKING_KEY": "abc"}, "LOGIN_ETL_MASKING_KEY must be hex"),
    ({"LOGIN_ETL_BATCH_SIZE": "lots"}, "LOGIN_ETL_BATCH_SIZE must be an integer"),
    ({"LOGIN_ETL_QUEUE_URL": "http://127.0.0.1:4566/000000000000/no-such-queue"},
     "queue does not exist"),
    ({"LOGIN_ETL_MASKING_MODE": "plain"}, "LOGIN_ETL_MASKING_MODE"),
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
