"""--until-empty's choice of long or short poll (UntilEmpty.wait_after): long polls while the
queue shows more than the pollers can take in one round, short polls near the end, so a drain
does not end with every poller sitting out a 1 s long poll on an empty queue."""

from __future__ import annotations

import time

import pytest

from login_etl import draining
from login_etl.draining import RECEIVE_WAIT_SECONDS, UntilEmpty
from login_etl.queue import Depth, QueueError
from tests.unit.fakes import SlowSource, worker

FULL = 10


class DepthSource(SlowSource):
    """Answers each depth call with the next visible count; None raises as SQS failing."""

    def __init__(self, visible: list[int | None]) -> None:
        super().__init__([], slow_seconds=0)
        self.visible = visible
        self.looks = 0

    def depth(self) -> Depth:
        self.looks += 1
        shown = self.visible[min(self.looks, len(self.visible)) - 1]
        if shown is None:
            raise QueueError("get_queue_attributes failed")
        return Depth(shown, 0, 0)


def drain(visible: list[int | None]) -> tuple[UntilEmpty, DepthSource]:
    source = DepthSource(visible)
    w, _ = worker(source, until_empty=True)
    assert w.until_empty is not None and w.until_empty.pollers == 3
    return w.until_empty, source


def test_a_deep_queue_is_long_polled_and_asked_once_until_near_its_end() -> None:
    rules, source = drain([1000])
    waits = [rules.wait_after(FULL) for _ in range(97)]
    # 1,000 shown at the first receive: the next 96 full receives stay more than three
    # pollers' receives (30) short of it, without asking again
    assert waits == [RECEIVE_WAIT_SECONDS] * 97 and source.looks == 1


def test_near_the_end_it_asks_again_and_short_polls_when_little_is_left() -> None:
    rules, source = drain([100, 25])
    assert rules.wait_after(FULL) == RECEIVE_WAIT_SECONDS
    # received 10, 100 more shown: long polls at 20..70 received, a look at 80 (30 from 110)
    assert [rules.wait_after(FULL) for _ in range(6)] == [RECEIVE_WAIT_SECONDS] * 6
    assert source.looks == 1
    assert rules.wait_after(FULL) == 0
    assert source.looks == 2


def test_more_sent_meanwhile_brings_the_long_polls_back() -> None:
    rules, source = drain([30, 500])
    assert rules.wait_after(FULL) == 0
    # the next look comes LOOK_SECONDS later: short polls until then
    assert rules.wait_after(FULL) == 0 and source.looks == 1
    time.sleep(draining.LOOK_SECONDS)
    assert rules.wait_after(FULL) == RECEIVE_WAIT_SECONDS and source.looks == 2


def test_not_knowing_the_depth_keeps_the_long_poll() -> None:
    rules, source = drain([None])
    assert rules.wait_after(FULL) == RECEIVE_WAIT_SECONDS and source.looks == 1


@pytest.mark.parametrize("got", [0, 1, FULL - 1])
def test_a_short_receive_short_polls_without_asking(got: int) -> None:
    rules, source = drain([1000])
    assert rules.wait_after(got) == 0 and source.looks == 0


def test_short_receives_count_towards_what_was_shown() -> None:
    rules, source = drain([60, 5])
    assert rules.wait_after(FULL) == RECEIVE_WAIT_SECONDS
    # 70 expected in all: 19, 29 and 39 received stay more than 30 short of it, 49 does not
    waits = [rules.wait_after(n) for n in (FULL - 1, FULL, FULL, FULL)]
    assert waits == [0, RECEIVE_WAIT_SECONDS, RECEIVE_WAIT_SECONDS, 0] and source.looks == 2


def test_failing_looks_are_made_at_most_every_look_seconds() -> None:
    rules, source = drain([5, None, 500])
    assert rules.wait_after(FULL) == 0
    time.sleep(draining.LOOK_SECONDS)
    assert [rules.wait_after(FULL) for _ in range(3)] == [RECEIVE_WAIT_SECONDS, 0, 0]
    assert source.looks == 2


def test_a_look_that_breaks_unexpectedly_does_not_stop_the_later_looks() -> None:
    rules, source = drain([5])
    real = source.depth

    def broken() -> Depth:
        source.depth = real  # type: ignore[method-assign]
        raise RuntimeError("a bug")

    source.depth = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        rules.wait_after(FULL)
    time.sleep(draining.LOOK_SECONDS)
    assert rules.wait_after(FULL) == 0 and source.looks == 1
