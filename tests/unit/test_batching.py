"""The batch window cuts by size or by time window, whichever comes first; the inbox wakes the
batcher only when it has something to do."""

from __future__ import annotations

import queue as stdqueue
import threading
import time
from typing import Any

import pytest

from login_etl.handoff import STOP, BatchWindow, Inbox
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


def _lists(*sizes: int) -> list[list[Any]]:
    return [[(f"m{n}-{i}", None) for i in range(n)] for n in sizes]


def _take_in_thread(box: Inbox, wanted: int, timeout: float) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append((box.take(wanted, timeout),
                                                         time.monotonic())))
    thread.start()
    return thread, out


def test_a_put_short_of_the_batch_wakes_nobody_and_enough_does() -> None:
    box = Inbox(16)
    first, second, third = _lists(10, 10, 10)
    thread, out = _take_in_thread(box, wanted=25, timeout=5.0)
    time.sleep(0.05)
    box.put(first)
    box.put(second)
    time.sleep(0.2)
    assert not out, "20 of 25 messages woke the batcher"
    box.put(third)
    thread.join(2.0)
    assert out and out[0][0] == [first, second, third]
    assert box.empty()


def test_the_first_list_of_a_window_and_a_full_inbox_wake_the_batcher() -> None:
    box = Inbox(2)
    thread, out = _take_in_thread(box, wanted=1, timeout=5.0)
    started = time.monotonic()
    box.put(_lists(1)[0])
    thread.join(2.0)
    assert out and out[0][1] - started < 1.0
    thread, out = _take_in_thread(box, wanted=500, timeout=5.0)
    box.put(_lists(10)[0])
    box.put(_lists(10)[0])
    thread.join(2.0)
    assert out and len(out[0][0]) == 2


def test_a_take_ends_at_stop_and_leaves_what_came_after() -> None:
    box = Inbox(8)
    before, after = _lists(3, 4)
    box.put(before)
    box.put(STOP)
    box.put(after)
    assert box.take(wanted=500, timeout=5.0) == [before, STOP]
    assert box.get_nowait() == after
    with pytest.raises(stdqueue.Empty):
        box.get_nowait()


def test_a_full_inbox_refuses_a_put_after_its_timeout() -> None:
    box = Inbox(1)
    box.put(_lists(1)[0])
    started = time.monotonic()
    with pytest.raises(stdqueue.Full):
        box.put(_lists(1)[0], timeout=0.1)
    assert 0.09 <= time.monotonic() - started < 1.0
    assert len(box.take(wanted=1, timeout=0)) == 1
    box.put(_lists(1)[0], timeout=0.1)


def test_a_take_with_too_little_returns_what_there_is_at_its_timeout() -> None:
    box = Inbox(8)
    waiting = _lists(3)[0]
    box.put(waiting)
    started = time.monotonic()
    assert box.take(wanted=10, timeout=0.1) == [waiting]
    assert time.monotonic() - started >= 0.09
    assert box.take(wanted=1, timeout=0.05) == []
