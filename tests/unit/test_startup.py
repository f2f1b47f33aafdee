"""startup.until_reachable: what a starting daemon waits out, and how loudly."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import structlog

from login_etl import startup
from login_etl.queue import QueueError
from login_etl.store import StoreError


class Clock:
    """time.monotonic and stop.wait on one fake clock: the waits take no real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class FakeStop(threading.Event):
    def __init__(self, clock: Clock, after: float = float("inf")) -> None:
        super().__init__()
        self.clock = clock
        self.after = after
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.clock.now += timeout or 0.0
        return self.clock.now >= self.after


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(startup.time, "monotonic", fake.monotonic)
    return fake


def failing(errors: list[BaseException], result: Any = "ok") -> Any:
    def attempt() -> Any:
        if errors:
            raise errors.pop(0)
        return result
    return attempt


def not_healable_queue_error() -> QueueError:
    return QueueError("access denied", retryable=False)


def test_an_unreachable_dependency_is_waited_for_with_one_line_per_interval(
        clock: Clock) -> None:
    # 60 failed attempts, RETRY_SECONDS apart: 30 s of waiting.
    errors: list[BaseException] = [StoreError("cannot connect: connection refused")] * 60
    stop = FakeStop(clock)
    with structlog.testing.capture_logs() as logged:
        assert startup.until_reachable("postgres", failing(errors), stop) == "ok"
    assert stop.waits == [startup.RETRY_SECONDS] * 60
    lines = [e for e in logged if e["event"] == "waiting_for_dependency"]
    assert len(lines) == 3 and [e["waited_seconds"] for e in lines] == [0.0, 10.0, 20.0]
    assert {e["dependency"] for e in lines} == {"postgres"}


@pytest.mark.parametrize("error", [StoreError("wrong password", retryable=False),
                                   not_healable_queue_error(), ValueError("a bug")],
                         ids=["refused", "denied", "other"])
def test_what_no_wait_heals_is_raised_at_once(clock: Clock, error: BaseException) -> None:
    stop = FakeStop(clock)
    with pytest.raises(type(error)):
        startup.until_reachable("sqs", failing([error]), stop)
    assert stop.waits == []


def test_a_retryable_queue_error_is_waited_for(clock: Clock) -> None:
    stop = FakeStop(clock)
    assert startup.until_reachable("sqs", failing([QueueError("unreachable")] * 3), stop) == "ok"
    assert len(stop.waits) == 3


def test_a_signal_while_waiting_stops_the_start(clock: Clock) -> None:
    stop = FakeStop(clock, after=2.0)
    with pytest.raises(startup.Stopped):
        startup.until_reachable("postgres", failing([StoreError("down")] * 100), stop)
    assert len(stop.waits) == 4
