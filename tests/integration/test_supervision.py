"""No thread dies silently, on the real stack: the worker runs as a process whose roles a
test-side wrapper breaks (the product has no fault hooks): a poller's bug costs one log line
and a redelivery, a role thread that is gone makes /healthz fail and the process exit 1 at once,
and nothing is lost or stored twice either way."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.stack import Stack, free_port, log_events, unique_bodies, wait_until

pytestmark = pytest.mark.slow
FAST = {"LOGIN_ETL_VISIBILITY_TIMEOUT": "5", "LOGIN_ETL_BATCH_WINDOW_MS": "50"}

# Run `login-etl run` with a fault patched in. FAULT=parse: the first 3 parses raise (the
# exception's text carries a value that must not reach the log). FAULT=gone: once the file
# named by FLAG exists, the heartbeat's thread ends with SystemExit, which no `except
# Exception` sees and threading does not report.
WRAPPER = """
import json, os, sys, time
from login_etl import roles
from login_etl.cli import main

fault, flag = sys.argv[1], sys.argv[2]
if fault == "parse":
    real, calls = roles.parse, [0]
    def parse(message, masker, *rest):
        calls[0] += 1
        if calls[0] <= 3:
            raise ValueError("a bug about 10.0.0.1")
        return real(message, masker, *rest)
    roles.parse = parse
elif fault == "gone":
    real_turn = roles.Heartbeat.turn
    def turn(self):
        if os.path.exists(flag):
            print(json.dumps({"event": "test_thread_ended", "at": time.time()}),
                  file=sys.stderr, flush=True)
            raise SystemExit
        real_turn(self)
    roles.Heartbeat.turn = turn
sys.argv = ["login-etl", "run"]
main()
"""


def start(stack: Stack, fault: str, flag: Path, log: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRAPPER, fault, str(flag)], env=stack.env(**FAST, **env),
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), text=True,
        stdin=subprocess.DEVNULL)


def healthz(port: int) -> int | None:
    """The status, or None when nothing answers (the process is gone)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def drained_exactly_once(stack: Stack, expected: int) -> None:
    end = time.monotonic() + 90
    while stack.count_rows() < expected and time.monotonic() < end:
        stack.cli("run", "--until-empty", env=stack.env(**FAST))
        time.sleep(0.5)
    assert (stack.count_rows(), stack.duplicate_rows()) == (expected, 0)


def test_a_poller_bug_costs_a_log_line_and_a_redelivery(stack: Stack, tmp_path: Path) -> None:
    stack.send(unique_bodies(500))
    log = tmp_path / "w.log"
    worker = start(stack, "parse", tmp_path / "unused", log)
    try:
        wait_until(lambda: stack.count_rows() == 500, 60, what="all rows")
        assert worker.poll() is None, "the worker carries on"
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    text = log.read_text()
    failed = [e for e in log_events(log) if e["event"] == "role_failed"]
    released = sum(e["messages"] for e in log_events(log)
                   if e["event"] == "messages_released" and e["reason"] == "role_failed")
    print(f"  {len(failed)} poller failures logged, {released} messages released and "
          f"redelivered, rows={stack.count_rows()} duplicates={stack.duplicate_rows()}")
    assert code == 0
    assert len(failed) == 3 and {e["role"] for e in failed} <= {f"poller-{i}" for i in range(4)}
    assert all(e["error"] == "ValueError" for e in failed)
    assert released == sum(e["messages"] for e in failed) > 0
    assert "10.0.0.1" not in text and "Traceback" not in text
    assert (stack.count_rows(), stack.duplicate_rows()) == (500, 0)


def test_a_role_thread_gone_fails_healthz_and_exits_1_at_once(stack: Stack,
                                                              tmp_path: Path) -> None:
    stack.send(unique_bodies(2000))
    port = free_port()
    log, flag = tmp_path / "w.log", tmp_path / "end-the-heartbeat"
    worker = start(stack, "gone", flag, log, LOGIN_ETL_HTTP_PORT=str(port),
                   LOGIN_ETL_BATCH_SIZE="50")
    try:
        wait_until(lambda: stack.count_rows() > 0, 60, what="first rows")
        assert healthz(port) == 200
        flag.touch()
        seen: list[tuple[float, int | None]] = []
        while worker.poll() is None and time.time() - flag.stat().st_mtime < 30:
            seen.append((time.time(), healthz(port)))
            time.sleep(0.05)
        code = worker.wait(timeout=30)
        exited_at = time.time()
    finally:
        if worker.poll() is None:
            worker.kill()
    ended_at = next(e["at"] for e in log_events(log) if e["event"] == "test_thread_ended")
    unhealthy_at = next(at for at, status in seen if at >= ended_at and status != 200)
    statuses = sorted({str(status) for at, status in seen if at >= ended_at})
    halted = [e for e in log_events(log) if e["event"] == "worker_halted"]
    print(f"  heartbeat gone: /healthz {statuses} from {unhealthy_at - ended_at:.2f}s after, "
          f"exit {code} {exited_at - ended_at:.2f}s after, rows {stack.count_rows()}")
    assert code == 1
    assert unhealthy_at - ended_at < 5 and exited_at - ended_at < 5
    assert halted and halted[0]["reason"] == "thread ended unexpectedly: heartbeat"
    assert "Traceback" not in log.read_text()
    wait_until(lambda: stack.depth()["in_flight"] == 0, 10, what="held messages released")
    drained_exactly_once(stack, 2000)
