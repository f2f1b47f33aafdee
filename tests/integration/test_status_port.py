"""The daemon's HTTP port under idle-connection pressure: the probes answer, the thread count
stays put, the pipeline keeps committing, and the held connections are closed by the server."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

from tests.integration.stack import Stack, end, free_port, http_get, unique_bodies, wait_until

HELD = 300


def answers(port: int) -> bool:
    try:
        return http_get(port, "/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_300_idle_connections_leave_probes_threads_and_commits_alone(stack: Stack,
                                                                     tmp_path: Path) -> None:
    port = free_port()
    env = stack.env(LOGIN_ETL_HTTP_PORT=str(port), LOGIN_ETL_POLLERS="2",
                    LOGIN_ETL_WAIT_TIME_SECONDS="1", LOGIN_ETL_BATCH_SIZE="50")
    log = tmp_path / "worker.log"
    worker = stack.start(env=env, log=log)
    stop_sending = threading.Event()
    sent = [0]

    def keep_sending() -> None:
        bodies = unique_bodies(20_000, prefix="p")
        while not stop_sending.is_set() and sent[0] < len(bodies):
            stack.send(bodies[sent[0]:sent[0] + 100], threads=2)
            sent[0] += 100
            stop_sending.wait(0.2)

    sender = threading.Thread(target=keep_sending, daemon=True)
    held: list[socket.socket] = []
    try:
        wait_until(lambda: worker.poll() is not None or answers(port),
                   30, what="the worker's HTTP port")
        assert worker.poll() is None, log.read_text()[-3000:]
        sender.start()
        wait_until(lambda: stack.count_rows() > 0, 30, what="first rows")
        threads_before = threads_of(worker.pid)
        for i in range(HELD):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            # half of them stop inside a request head, the others never send a byte
            if i % 2:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        rows_at_hold = stack.count_rows()
        held_at = time.monotonic()
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            status, _ = http_get(port, "/healthz", timeout=5)
            latencies.append(time.monotonic() - started)
            assert status == 200
            time.sleep(0.2)
        ready, _ = http_get(port, "/readyz")
        threads_held = threads_of(worker.pid)
        wait_until(lambda: stack.count_rows() >= rows_at_hold + 500, 30,
                   what="rows committed while the connections are held")
        rows_grown = stack.count_rows() - rows_at_hold
        # the server closes what stays idle past its read timeout
        closed = 0
        for sock in held:
            sock.settimeout(max(0.1, held_at + 15 - time.monotonic()))
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        threads_after = threads_of(worker.pid)
        print(f"  {HELD} held: /healthz max {max(latencies) * 1000:.1f} ms, threads "
              f"{threads_before} -> {threads_held} -> {threads_after}, rows +{rows_grown} "
              f"while held, {closed}/{HELD} closed by the server")
        assert max(latencies) < 1.0
        assert ready == 200
        assert threads_held <= threads_before + 2 and threads_after <= threads_before + 2
        assert closed == HELD
    finally:
        stop_sending.set()
        for sock in held:
            sock.close()
        end(worker, 30)
    assert worker.returncode == 0, log.read_text()[-3000:]


def test_a_client_pipelining_metrics_leaves_the_probes_and_the_pipeline_alone(
        stack: Stack, tmp_path: Path) -> None:
    """One client pipelining GET /metrics as fast as it reads its answers: /healthz within the
    kubelet's 1 s in at least 11 of 12 probes, and rows keep being committed."""
    port = free_port()
    env = stack.env(LOGIN_ETL_HTTP_PORT=str(port), LOGIN_ETL_POLLERS="2",
                    LOGIN_ETL_WAIT_TIME_SECONDS="1", LOGIN_ETL_BATCH_SIZE="50")
    log = tmp_path / "worker.log"
    stack.send(unique_bodies(6000, prefix="m"))
    worker = stack.start(env=env, log=log)
    stop = threading.Event()
    answered = [0]
    sock: socket.socket | None = None
    try:
        wait_until(lambda: worker.poll() is not None or answers(port),
                   30, what="the worker's HTTP port")
        assert worker.poll() is None, log.read_text()[-3000:]
        wait_until(lambda: stack.count_rows() > 0, 30, what="first rows")
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        client = sock

        def pipeline() -> None:
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)

        def read() -> None:
            with contextlib.suppress(OSError):
                while not stop.is_set() and (chunk := client.recv(1 << 20)):
                    answered[0] += chunk.count(b"HTTP/1.1 200")

        for target in (pipeline, read):
            threading.Thread(target=target, daemon=True).start()
        time.sleep(1)
        rows_before = stack.count_rows()
        latencies = []
        for _ in range(12):
            started = time.monotonic()
            try:
                ok = http_get(port, "/healthz", timeout=1)[0] == 200
            except OSError:
                ok = False
            latencies.append(time.monotonic() - started if ok else float("inf"))
            time.sleep(0.25)
        rows_grown = stack.count_rows() - rows_before
        within = sum(latency < 1.0 for latency in latencies)
        print(f"  pipelining /metrics ({answered[0]} answered): /healthz within 1 s "
              f"{within}/12, max {max(latencies) * 1000:.1f} ms, rows +{rows_grown}")
        assert within >= 11
        assert rows_grown > 0
        assert answered[0] > 100
    finally:
        stop.set()
        if sock is not None:
            sock.close()
        end(worker, 30)
    assert worker.returncode == 0, log.read_text()[-3000:]
