"""--until-empty's end check on an endpoint as slow as the pollers' pause between receives:
some receive is always in progress, and the end must still be seen (moto's server is such an
endpoint; a check that needed a moment with no receive in progress never ended there)."""

from __future__ import annotations

import threading
import time
from typing import Any

from login_etl.inflight import InFlight
from login_etl.messages import Received


class SlowSource:
    """receive() takes `seconds`; answers `batches` in order, then empty lists."""

    def __init__(self, seconds: float, batches: list[list[Received]] | None = None) -> None:
        self.seconds = seconds
        self.batches = batches or []

    def receive(self, *_args: Any) -> list[Received]:
        time.sleep(self.seconds)
        return self.batches.pop(0) if self.batches else []


def pollers(inflight: InFlight, stop: threading.Event, count: int = 4) -> list[threading.Thread]:
    def loop() -> None:
        while not stop.is_set():
            inflight.receive(0, 30)
            time.sleep(0.001)

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_the_end_is_seen_while_receives_keep_starting() -> None:
    inflight = InFlight(SlowSource(0.02))  # type: ignore[arg-type]
    stop = threading.Event()
    threads = pollers(inflight, stop)
    try:
        deadline = time.monotonic() + 5
        seen = False
        while not seen and time.monotonic() < deadline:
            mark = inflight.quiet(4)
            seen = mark is not None and inflight.still_quiet(mark, 1.0)
        assert seen, "the queue was empty for 5 s and the end was never seen"
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def quiet_after_empty_receives() -> tuple[SlowSource, InFlight, int]:
    """Four pollers' receives came back empty: the end check's first half is met."""
    source = SlowSource(0.0)
    inflight = InFlight(source)  # type: ignore[arg-type]
    for _ in range(4):
        inflight.receive(0, 30)
    mark = inflight.quiet(4)
    assert mark is not None
    return source, inflight, mark


def test_a_receive_in_progress_that_brings_messages_is_not_the_end() -> None:
    message = Received("m-1", "rh-1", "{}", 0)
    source, inflight, mark = quiet_after_empty_receives()
    source.seconds, source.batches = 0.2, [[message]]
    late = threading.Thread(target=inflight.receive, args=(0, 30))
    late.start()
    time.sleep(0.05)
    assert not inflight.still_quiet(mark, 1.0)
    late.join()
    assert len(inflight) == 1


def test_a_receive_that_outlasts_the_wait_is_not_the_end() -> None:
    source, inflight, mark = quiet_after_empty_receives()
    source.seconds = 0.5
    slow = threading.Thread(target=inflight.receive, args=(0, 30))
    slow.start()
    time.sleep(0.05)
    assert not inflight.still_quiet(mark, 0.1)
    slow.join()
    assert inflight.still_quiet(mark, 0.1)
