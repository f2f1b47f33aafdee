"""`run` closes the store once: the worker closes it as the last step of its shutdown, and the
command does not close it again."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from login_etl import invocation
from login_etl.cli import cli
from tests.unit.fakes import SlowSource


class EmptySource(SlowSource):
    def retention_seconds(self) -> int:
        return 4 * 86400


class CountingStore:
    def __init__(self) -> None:
        self.closed = 0

    def init_schema(self, keep_days: int) -> None:
        pass

    def ping(self) -> bool:
        return True

    def close(self, timeout: float = 1.0) -> None:
        self.closed += 1


def test_run_until_empty_closes_the_store_once(monkeypatch: pytest.MonkeyPatch) -> None:
    store = CountingStore()
    source, dlq = EmptySource([], 0), EmptySource([], 0)

    def queues(self: Any, sealer: Any = None) -> tuple[Any, Any]:
        return source, dlq

    monkeypatch.setattr(invocation.Context, "checked_queues", queues)
    monkeypatch.setattr(invocation.Context, "store", lambda self: store)
    result = CliRunner().invoke(cli, ["run", "--until-empty", "--http-port", "0"],
                                env={"LOGIN_ETL_LOG_FORMAT": "json",
                                     "LOGIN_ETL_MASKING_KEY": "ab" * 32})
    assert result.exit_code == 0, result.output
    assert store.closed == 1
