"""Alert rules proven end to end: a real Prometheus (Debian's) scraping a real worker while
the condition is created, each alert seen pending, then firing, then resolved.

The rules are config/alerts.yml with its durations shortened (QUICK below): `for:` 3 s and
windows of 20 s instead of minutes, so that each condition runs its course in well under a
minute. Every other part of each rule (selectors, aggregation, thresholds' shape) is the
shipped one, and each shortening must apply, so a changed rule fails here instead of being
tested in an old form.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration.faultproxy import FaultProxy
from tests.integration.stack import ROOT, Stack, end, free_port, unique_bodies, wait_until
from tests.integration.test_alert_signals import role_that_cannot_maintain
from tests.integration.test_prometheus_scrape import Prometheus, prometheus_starter

pytestmark = pytest.mark.integration

FOR = "3s"
# (shipped text, test text): windows of minutes -> 20 s; the 10-minute commit stall
# -> 15 s; the 5-minute freshness -> 5 s.
QUICK = [("[15m]", "[20s]"), ("[5m]", "[20s]"), ("> 600", "> 15"), ("> 300", "> 5")]


def quick_rules() -> str:
    data = yaml.safe_load((ROOT / "config" / "alerts.yml").read_text())
    used = set()
    for group in data["groups"]:
        for rule in group["rules"]:
            rule["for"] = FOR
            for shipped, quick in QUICK:
                if shipped in rule["expr"]:
                    rule["expr"] = rule["expr"].replace(shipped, quick)
                    used.add(shipped)
    assert used == {shipped for shipped, _ in QUICK}, f"unused shortenings: {used}"
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Start Debian's Prometheus with the quick rules, scraping 127.0.0.1:<port> as login-etl;
    it returns once the target is up."""
    with prometheus_starter(tmp_path, quick_rules()) as start:

        def start_up(target_port: int) -> Prometheus:
            server = start(target_port)
            wait_until(lambda: server.scalar('up{job="login-etl"}') == 1, 30, what="target up")
            return server

        yield start_up


def states(server: Prometheus, name: str) -> set[str]:
    return {a["state"] for a in server.api("alerts")["alerts"] if a["labels"]["alertname"] == name}


def watch_courses(server: Prometheus, names: list[str], act_again: Any = None,
                  timeout: float = 90, act_on: list[str] | None = None) -> dict[str, list[str]]:
    """Poll the alerts until each has been pending, then firing, then gone (resolved); call
    `act_again` once all of `act_on` (default: all) fire (the action that ends the condition).
    The states seen, in order."""
    seen: dict[str, list[str]] = {name: [] for name in names}
    acted = act_again is None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in names:
            now = states(server, name)
            state = "firing" if "firing" in now else "pending" if "pending" in now else "inactive"
            if not seen[name] or seen[name][-1] != state:
                seen[name].append(state)
        if not acted and all("firing" in seen[name] for name in act_on or names):
            acted = True
            act_again()
        if all("firing" in course and course[-1] == "inactive" for course in seen.values()):
            return seen
        time.sleep(0.25)
    raise AssertionError(f"{names} did not run their course in {timeout} s: {seen}")


def watch_course(server: Prometheus, name: str, act_again: Any = None,
                 timeout: float = 90) -> list[str]:
    return watch_courses(server, [name], act_again, timeout)[name]


def assert_course(seen: list[str]) -> None:
    """pending strictly before firing, and inactive at the end."""
    assert "pending" in seen and "firing" in seen, seen
    assert seen.index("pending") < seen.index("firing") and seen[-1] == "inactive", seen


def start_worker(stack: Stack, port: int, log: Path, **env: str) -> subprocess.Popen[str]:
    worker = stack.start(env=stack.env(LOGIN_ETL_HTTP_PORT=str(port), **env), log=log)
    return worker


def test_dlq_growing_fires_and_resolves(stack: Stack, prometheus: Any, tmp_path: Path) -> None:
    port = free_port()
    worker = start_worker(stack, port, tmp_path / "worker.log")
    try:
        server = prometheus(port)
        assert states(server, "LoginEtlDeadLetterQueueGrowing") == set()
        started = time.monotonic()
        stack.send(["not json 1", "not json 2", "not json 3"])
        seen = watch_course(server, "LoginEtlDeadLetterQueueGrowing")
        assert_course(seen)
        print(f"DLQ alert {seen} in {time.monotonic() - started:.1f} s")
    finally:
        end(worker, 30)


def test_worker_stopped_fires_target_down_and_no_worker_up_then_resolves_on_restart(
        stack: Stack, prometheus: Any, tmp_path: Path) -> None:
    port = free_port()
    workers = [start_worker(stack, port, tmp_path / "worker-1.log")]
    try:
        server = prometheus(port)
        for name in ("LoginEtlTargetDown", "LoginEtlNoWorkerUp"):
            wait_until(lambda name=name: states(server, name) == set(), 30, what=f"{name} quiet")
        started = time.monotonic()
        end(workers[0], 30)
        assert workers[0].returncode == 0

        def restart() -> None:
            workers.append(start_worker(stack, port, tmp_path / "worker-2.log"))

        seen = watch_courses(server, ["LoginEtlTargetDown", "LoginEtlNoWorkerUp"],
                             act_again=restart)
        for course in seen.values():
            assert_course(course)
        print(f"TargetDown, NoWorkerUp {seen} in {time.monotonic() - started:.1f} s")
    finally:
        for worker in workers:
            end(worker, 30)


def test_commits_stalled_with_a_backlog_fires_and_resolves(
        stack: Stack, prometheus: Any, tmp_path: Path) -> None:
    """A session holds user_logins locked: the worker cannot commit while the queue has
    visible messages; the lock released, it commits again and the alert resolves. The rows
    committed then are stale (sent before the stall): LoginEtlStale runs its course too."""
    port = free_port()
    worker = start_worker(stack, port, tmp_path / "worker.log", LOGIN_ETL_POLLERS="1")
    blocker = psycopg.connect(stack.database_url)
    try:
        server = prometheus(port)
        stack.send(unique_bodies(10, prefix="before"))
        wait_until(lambda: stack.count_rows() == 10, 30, what="10 rows before the stall")
        blocker.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        stack.send(unique_bodies(2000, prefix="stalled"))
        started = time.monotonic()
        seen = watch_courses(server, ["LoginEtlNoCommitWhileQueueNotEmpty", "LoginEtlStale"],
                             act_again=blocker.rollback, timeout=150,
                             act_on=["LoginEtlNoCommitWhileQueueNotEmpty"])
        for course in seen.values():
            assert_course(course)
        print(f"NoCommit, Stale {seen} in {time.monotonic() - started:.1f} s")
        wait_until(lambda: stack.count_rows() == 2010, 120, what="the backlog stored after the stall")
        assert stack.duplicate_rows() == 0
    finally:
        blocker.close()
        end(worker, 30)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_sqs_cut_fires_retry_storm_and_io_errors_then_both_resolve(
        stack: Stack, prometheus: Any, tmp_path: Path) -> None:
    """SQS goes away (a TCP proxy cuts it): receives are retried, then fail after their
    retries, for as long as it lasts; restored, both alerts resolve."""
    proxy = FaultProxy(4566)
    port = free_port()
    worker = start_worker(stack, port, tmp_path / "worker.log",
                          LOGIN_ETL_QUEUE_URL=proxy.url_for(stack.queue_url))
    try:
        server = prometheus(port)
        started = time.monotonic()
        proxy.cut()
        seen = watch_courses(server, ["LoginEtlRetryStorm", "LoginEtlIoErrors"],
                             act_again=proxy.restore, timeout=120)
        for course in seen.values():
            assert_course(course)
        print(f"SQS cut {seen} in {time.monotonic() - started:.1f} s")
    finally:
        end(worker, 30)
        proxy.close()
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_failed_ledger_maintenance_fires_and_resolves(
        stack: Stack, prometheus: Any, tmp_path: Path) -> None:
    """A role without CREATE and a day ahead missing: the first maintenance (a second after
    start, before any scrape) fails; a replica started as a role that may create the day
    succeeds, and the alert resolves."""
    port = free_port()
    with role_that_cannot_maintain(stack) as url:
        workers = [start_worker(stack, port, tmp_path / "worker-1.log",
                                LOGIN_ETL_DATABASE_URL=url)]

        def fixed() -> None:
            end(workers[0], 30)
            workers.append(start_worker(stack, port, tmp_path / "worker-2.log"))

        try:
            server = prometheus(port)
            seen = watch_course(server, "LoginEtlLedgerMaintenanceFailing", act_again=fixed)
            assert_course(seen)
        finally:
            for worker in workers:
                end(worker, 30)


def test_forged_marks_fire_unverified_marks_and_resolve(
        stack: Stack, prometheus: Any, tmp_path: Path) -> None:
    port = free_port()
    worker = start_worker(stack, port, tmp_path / "worker.log")
    try:
        server = prometheus(port)
        body = unique_bodies(1, prefix="forged")[0]
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body, MessageAttributes={
            "login_etl_origin": {"DataType": "String", "StringValue": "not-a-sealed-id"}})
        seen = watch_course(server, "LoginEtlUnverifiedMarks")
        assert_course(seen)
        assert stack.count_rows() == 1
    finally:
        end(worker, 30)


def test_a_reject_the_dlq_refuses_fires_and_resolves(
        stack: Stack, prometheus: Any, tmp_path: Path) -> None:
    """A 1 MiB body that is not JSON: a reject with no room left for its reason attribute,
    which the DLQ refuses for good; it stays in the source queue (counted dlq_refused)."""
    port = free_port()
    worker = start_worker(stack, port, tmp_path / "worker.log")
    try:
        server = prometheus(port)
        stack.sqs.send_message(QueueUrl=stack.queue_url,
                               MessageBody="not json ".ljust(1024 * 1024, "x"))
        # Within 55 s, before its redelivery (visibility 60 s) counts again: the first event
        # alone must raise the alert.
        seen = watch_course(server, "LoginEtlRejectsLeftInSource", timeout=55)
        assert_course(seen)
    finally:
        end(worker, 30)


def test_every_rule_has_its_course_watched_here() -> None:
    """A rule added to config/alerts.yml without an end-to-end test here fails this."""
    source = Path(__file__).read_text()
    rules = [rule["alert"] for group in yaml.safe_load((ROOT / "config" / "alerts.yml")
                                                       .read_text())["groups"]
             for rule in group["rules"]]
    missing = [name for name in rules if f'"{name}"' not in source.split("def test_every_rule")[0]]
    assert not missing, f"no end-to-end test watches {missing}"
