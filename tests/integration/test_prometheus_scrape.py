"""A real Prometheus (Debian's `prometheus` package) scraping a running login-etl.

The worker processes the sample on the real stack; Prometheus, started here with a
temporary config that also loads config/alerts.yml, must see the target up and count
exactly the rows that reached Postgres, and evaluate every alert rule without error.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.stack import ROOT, Stack, end, free_port, sample_bodies, wait_until

pytestmark = pytest.mark.integration


def prometheus_binary() -> str:
    """Debian's prometheus; installed here if missing. Not installable is a failure."""
    found = shutil.which("prometheus")
    if found is None:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            capture_output=True,
            timeout=600,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        found = shutil.which("prometheus")
    if found is None:
        pytest.fail("Debian's prometheus is not installed and `apt-get install prometheus` failed")
    return found


class Prometheus:
    def __init__(self, port: int) -> None:
        self.port = port

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def scalar(self, query: str) -> float | None:
        """The value of a query that returns one sample, None while it returns none."""
        result = self.api("query", query=query)["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


@contextlib.contextmanager
def prometheus_starter(tmp_path: Path, rules: str) -> Iterator[Callable[[int], Prometheus]]:
    """A function that starts Debian's Prometheus with `rules` as its alerting rules, scraping
    127.0.0.1:<port> every second as job login-etl; each one started is ended on leaving."""
    binary = prometheus_binary()
    started: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> Prometheus:
        (tmp_path / "alerts.yml").write_text(rules)
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "rule_files:\n  - alerts.yml\n"
            "scrape_configs:\n  - job_name: login-etl\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        started.append(process)
        prometheus = Prometheus(port)
        try:
            wait_until(prometheus.ready, 30, what="prometheus /-/ready")
        except AssertionError:
            raise AssertionError((tmp_path / "prometheus.log").read_text()[-3000:]) from None
        return prometheus

    try:
        yield start
    finally:
        for process in started:
            end(process)


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start a Prometheus with the shipped rules that scrapes 127.0.0.1:<port> as login-etl."""
    with prometheus_starter(tmp_path, (ROOT / "config" / "alerts.yml").read_text()) as start:
        yield start


def test_real_prometheus_scrapes_the_worker(stack: Stack, prometheus_for: Any,
                                            tmp_path: Path) -> None:
    stack.send(sample_bodies())
    port = free_port()
    worker = stack.start(env=stack.env(LOGIN_ETL_HTTP_PORT=str(port)), log=tmp_path / "worker.log")
    try:
        prometheus = prometheus_for(port)
        wait_until(lambda: stack.count_rows() == 99, 60, what="99 rows")
        rows = stack.count_rows()

        def scraped_stored() -> bool:
            value = prometheus.scalar('sum(login_etl_messages_total{outcome="stored"})')
            return value == rows

        wait_until(scraped_stored, 30, interval=0.5, what="Prometheus to count the stored rows")
        assert prometheus.scalar('up{job="login-etl"}') == 1
        assert prometheus.scalar('sum(login_etl_messages_total{outcome="stored"})') == rows == 99
        wait_until(
            lambda: prometheus.scalar('sum(login_etl_messages_total{outcome="rejected"})') == 1,
            30, interval=0.5, what="the malformed sample event counted as rejected",
        )
        assert prometheus.scalar("sum(login_etl_rejections_total)") == 1
        assert prometheus.scalar("count(login_etl_batch_seconds_count)") is not None
        assert prometheus.scalar("login_etl_last_commit_timestamp_seconds") > time.time() - 120

        # Every rule of config/alerts.yml evaluates cleanly against real series, and a
        # healthy worker raises none of them except the DLQ one (the sample's bad event).
        wait_until(lambda: all(rule.get("lastEvaluation", "").startswith("2")
                               and rule["health"] == "ok"
                               for group in prometheus.api("rules")["groups"]
                               for rule in group["rules"]),
                   30, interval=0.5, what="all alert rules evaluated with health ok")
        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        shipped = yaml.safe_load((ROOT / "config" / "alerts.yml").read_text())["groups"]
        assert len(rules) == sum(len(group["rules"]) for group in shipped), rules
        # (LoginEtlNoWorkerUp may be pending from before the first scrape: not firing.)
        firing = {alert["labels"]["alertname"] for alert in prometheus.api("alerts")["alerts"]
                  if alert["state"] == "firing"}
        assert firing <= {"LoginEtlDeadLetterQueueGrowing"}, firing
    finally:
        end(worker, 30)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
