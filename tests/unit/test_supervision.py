"""No thread dies silently: a role's unexpected exception is logged once (its type, never its
text), the messages it had in hand are released and the role carries on; a role failing again
and again halts the worker (exit non-zero); a thread that is gone turns /healthz 503 at once
and halts the worker too. Faults are injected by monkeypatching, with fakes for SQS and the
pipeline (tests/integration/test_supervision.py does it on the real stack)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from login_etl import roles
from login_etl.health import Health
from login_etl.http import routes
from login_etl.messages import Received
from login_etl.pipeline import Item, Outcome
from tests.unit.fakes import SlowSource, hold, received, worker

# A value that must never reach a log line, carried by every injected exception.
SECRET = "10.0.0.1"


@pytest.fixture(autouse=True)
def short_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roles, "FAILURE_PAUSE_SECONDS", 0.05)


def fail_once(real: Callable[..., Any]) -> Callable[..., Any]:
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise ValueError(f"a bug about {SECRET}")
        return real(*args, **kwargs)

    return wrapped


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert SECRET not in json.dumps(logs, default=str), "no value may reach the log"
    return [e for e in logs if e["event"] == "role_failed"]


class CountingSource(SlowSource):
    def __init__(self, messages: list[Received]) -> None:
        super().__init__(messages, slow_seconds=0)
        self.receives = 0

    def receive(self, wait: int, visibility: int) -> list[Received]:
        self.receives += 1
        return super().receive(wait, visibility)


def test_a_poller_failure_releases_what_it_received_and_the_poller_carries_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = CountingSource([received(i) for i in range(3)])
    w, _ = worker(source)
    monkeypatch.setattr(roles, "parse", fail_once(roles.parse))
    poller = w.pollers[0]
    with capture_logs() as logs:
        poller.start()
        wait_for(lambda: len(source.released) == 3)
        receives = source.receives
        wait_for(lambda: source.receives > receives + 2)
    assert poller.alive(), "the poller carries on"
    assert sorted(source.released) == ["rh0", "rh1", "rh2"] and len(w.inflight) == 0
    assert [(e["role"], e["error"], e["messages"]) for e in failures(logs)] == [
        ("poller-0", "ValueError", 3)]
    w.shutdown.begin(5.0)
    poller.join(time.monotonic() + 5)


def test_a_batcher_failure_releases_its_window_and_the_batcher_carries_on() -> None:
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source)
    batcher = w.batcher
    batcher.window.ready = fail_once(batcher.window.ready)  # type: ignore[method-assign]
    first, second = [received(1), received(2)], [received(3)]
    hold(w, *first, *second)
    with capture_logs() as logs:
        batcher.start()
        w.inbox.put([(m, None) for m in first])
        wait_for(lambda: len(source.released) == 2)
        w.inbox.put([(m, None) for m in second])
        # The next list is batched and handed to a settler as usual.
        wait_for(lambda: w.handoff.busy == 1)
    assert batcher.alive()
    assert sorted(source.released) == ["rh1", "rh2"]
    assert [m.receipt_handle for m in w.inflight.all_held()] == ["rh3"]
    assert [(e["role"], e["messages"]) for e in failures(logs)] == [("batcher", 2)]


def test_a_settler_failure_releases_its_batch_and_the_next_batch_settles() -> None:
    source = SlowSource([], slow_seconds=0)
    w, settled = worker(source)
    w.pipeline.settle = fail_once(w.pipeline.settle)  # type: ignore[method-assign]
    first, second = received(1), received(2)
    hold(w, first, second)
    with capture_logs() as logs:
        w.settlers[0].start()
        w.handoff.submit([(first, None)], lambda: None)  # type: ignore[list-item]
        w.handoff.submit([(second, None)], lambda: None)  # type: ignore[list-item]
        wait_for(lambda: w.handoff.busy == 0 and len(w.inflight) == 0)
    assert w.settlers[0].alive()
    assert source.released == ["rh1"]
    assert [m.receipt_handle for batch in settled for m, _ in batch] == ["rh2"]
    assert w.totals.stored == 1
    assert [(e["role"], e["messages"]) for e in failures(logs)] == [("settler-0", 1)]


def test_a_heartbeat_failure_is_logged_and_the_next_beat_extends() -> None:
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source, visibility=3)
    source.change_visibility = fail_once(source.change_visibility)  # type: ignore[method-assign]
    hold(w, received(1), age=10)
    with capture_logs() as logs:
        w.heartbeat.start()
        wait_for(lambda: source.extended == [["rh1"]])
    assert w.heartbeat.alive()
    # Held messages are the heartbeat's to extend, not to release.
    assert source.released == [] and len(w.inflight) == 1
    assert [(e["role"], e["messages"]) for e in failures(logs)] == [("heartbeat", 0)]
    w.shutdown.begin(5.0)


def test_a_role_that_keeps_failing_halts_the_worker() -> None:
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source)

    def broken(batch: Sequence[Item]) -> Outcome:
        raise KeyError(SECRET)

    w.pipeline.settle = broken  # type: ignore[method-assign]
    messages = [received(i) for i in range(roles.FAILURE_LIMIT)]
    hold(w, *messages)
    settler = w.settlers[0]
    with capture_logs() as logs:
        settler.start()
        for m in messages:
            w.handoff.submit([(m, None)], lambda: None)  # type: ignore[list-item]
        settler.join(time.monotonic() + 5)
    assert not settler.alive()
    assert w.fatal == f"settler-0 failed {roles.FAILURE_LIMIT} times within 60 s"
    assert len(failures(logs)) == roles.FAILURE_LIMIT
    assert sorted(source.released) == sorted(m.receipt_handle for m in messages)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_gone_turns_healthz_503_at_once_and_halts_the_worker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SystemExit is not an Exception: the heartbeat's thread ends without a word, as a
    thread killed by a bug outside any turn would."""
    def dies(self: roles.Heartbeat) -> None:
        time.sleep(0.3)
        raise SystemExit

    monkeypatch.setattr(roles.Heartbeat, "turn", dies)
    source = SlowSource([], slow_seconds=0)
    w, _ = worker(source)
    healthz = routes(w.health)["/healthz"]
    done = threading.Event()
    threading.Thread(target=lambda: (w.run(threading.Event()), done.set()), daemon=True).start()
    wait_for(lambda: w.heartbeat.thread.ident is not None)
    assert healthz()[0] == 200
    wait_for(lambda: not w.heartbeat.alive())
    gone_at = time.monotonic()
    wait_for(lambda: healthz()[0] == 503)
    unhealthy_after = time.monotonic() - gone_at
    assert json.loads(healthz()[2])["stalled"][0] == "heartbeat"
    assert done.wait(5), "the worker stops"
    stopped_after = time.monotonic() - gone_at
    print(f"  heartbeat gone: /healthz 503 after {unhealthy_after:.3f}s, "
          f"worker stopped after {stopped_after:.3f}s")
    assert unhealthy_after < 5 and stopped_after < 5
    assert w.fatal == "thread ended unexpectedly: heartbeat"


def test_a_watched_thread_that_ended_is_stalled_before_its_tick_is_old() -> None:
    health = Health()
    thread = threading.Thread(target=lambda: None, name="poller-0")
    thread.start()
    thread.join()
    health.tick("poller-0")
    health.watch([thread])
    assert health.stalled(60.0) == ["poller-0"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_gone_lets_the_batch_being_settled_finish_before_the_exit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The halt's release leaves a live settler's batch alone (it may be deleting); the
    process must not exit under it, or its messages stay hidden for a visibility timeout."""
    settling = threading.Event()

    def dies(self: roles.Heartbeat) -> None:
        settling.wait(5)
        raise SystemExit

    monkeypatch.setattr(roles.Heartbeat, "turn", dies)
    source = SlowSource([received(i) for i in range(3)], slow_seconds=0)
    w, _ = worker(source)
    finished: list[int] = []

    def slow_settle(batch: list[Item]) -> Outcome:
        settling.set()
        time.sleep(0.4)
        finished.append(len(batch))
        return Outcome(stored=len(batch))

    w.pipeline.settle = slow_settle  # type: ignore[method-assign]
    w.run(threading.Event())
    assert w.fatal == "thread ended unexpectedly: heartbeat"
    assert finished == [3] and source.released == []
