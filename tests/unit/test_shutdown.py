"""The shutdown's clock and the handoff's idle wait, on their own."""

from __future__ import annotations

import threading
import time

from login_etl.handoff import Handoff
from login_etl.shutdown import RELEASE_SECONDS, Shutdown


def test_settling_ends_where_the_release_window_begins() -> None:
    shutdown = Shutdown()
    assert not shutdown.stopping() and not shutdown.past_settling()
    shutdown.begin(RELEASE_SECONDS + 0.2)
    assert shutdown.stopping() and not shutdown.past_settling()
    assert abs(shutdown.deadline - shutdown.settle_by - RELEASE_SECONDS) < 1e-9
    time.sleep(0.3)
    assert shutdown.past_settling()


def test_a_pause_once_stopping_never_runs_into_the_release_window() -> None:
    shutdown = Shutdown()
    shutdown.begin(RELEASE_SECONDS + 0.2)
    started = time.monotonic()
    shutdown.pause(5.0)
    assert time.monotonic() - started < 0.5


def test_only_the_first_halt_reason_is_kept() -> None:
    shutdown = Shutdown()
    shutdown.halt("queue gone")
    shutdown.halt("thread ended unexpectedly: poller-0")
    assert shutdown.fatal == "queue gone"


def test_waiting_for_idle_settlers_wakes_when_the_last_batch_is_done() -> None:
    """A condition, not a poll: the wait ends as the last settler finishes."""
    handoff = Handoff(2)
    handoff.submit([], lambda: None)
    handoff.submit([], lambda: None)
    done_at: list[float] = []

    def settle() -> None:
        time.sleep(0.2)
        handoff.done()
        time.sleep(0.2)
        done_at.append(time.monotonic())
        handoff.done()

    threading.Thread(target=settle).start()
    assert handoff.wait_idle(time.monotonic() + 5)
    assert time.monotonic() - done_at[0] < 0.02 and handoff.busy == 0


def test_waiting_for_idle_settlers_gives_up_at_its_bound() -> None:
    handoff = Handoff(1)
    handoff.submit([], lambda: None)
    started = time.monotonic()
    assert not handoff.wait_idle(started + 0.2)
    assert 0.15 < time.monotonic() - started < 1.0
