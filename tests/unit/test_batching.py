"""The batch window cuts by size or by time window, whichever comes first."""

from __future__ import annotations

from login_etl.handoff import BatchWindow
from login_etl.messages import Received, Rejection
from login_etl.pipeline import Item


def items(n: int, start: int = 0) -> list[Item]:
    return [(Received(f"m{i}", f"r{i}", "{}", 0), Rejection(f"m{i}", "x"))
            for i in range(start, start + n)]


def test_cuts_when_full() -> None:
    b = BatchWindow(size=25, window=10.0)
    b.add(items(10), now=0.0)
    assert not b.ready(0.0)
    b.add(items(10, 10), now=0.1)
    assert not b.ready(0.1)
    b.add(items(10, 20), now=0.2)
    assert b.ready(0.2)
    assert [r.message_id for r, _ in b.cut()] == [f"m{i}" for i in range(30)]
    assert not b.items and not b.ready(100.0)


def test_cuts_when_the_window_of_the_first_message_closes() -> None:
    b = BatchWindow(size=500, window=0.2)
    b.add(items(3), now=1.0)
    b.add(items(3, 3), now=1.15)  # a later arrival does not extend the window
    assert not b.ready(1.19)
    assert abs(b.timeout(1.1) - 0.1) < 1e-9
    assert b.ready(1.2)
    assert len(b.cut()) == 6


def test_idle_batcher_waits_the_idle_timeout() -> None:
    b = BatchWindow(size=10, window=0.05)
    assert b.timeout(0.0) == BatchWindow.IDLE_TIMEOUT
    b.add(items(1), now=0.0)
    assert b.timeout(1.0) == 0.0
