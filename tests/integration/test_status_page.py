"""The status page in a real browser (Debian's headless chromium) against a running worker.

The DOM is read after the page's script has refreshed it at least once (body[data-updates]
>= 1): the server renders the page, and the script swaps in the parts of a fresh copy, so what
is checked is the page as a browser keeps it, after the first load and after a refresh.
Set LOGIN_ETL_UPDATE_SCREENSHOT=1 to rewrite docs/status-page.png from the sample run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import (
    ROOT,
    Stack,
    end,
    free_port,
    sample_bodies,
    sample_events,
    wait_until,
)

XSS = "<script>alert(1)</script>"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--hide-scrollbars", "--virtual-time-budget=8000")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run "
                    "`bash scripts/debian-package.sh chromium chromium` (as root)")
    return path


def browse(chromium: str, url: str, tmp_path: Path, *extra: str) -> str:
    """Load url, let its script run, return chromium's stdout (the DOM with --dump-dom)."""
    profile = tmp_path / f"chromium-{uuid.uuid4().hex[:8]}"
    result = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def status_json(port: int) -> dict[str, Any]:
    code, body = get(port, "/status.json")
    return json.loads(body) if code == 200 else {}


class Dom(HTMLParser):
    """Text by element id, the body's attributes, and the cells of each row of #rows-body."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.body: dict[str, str | None] = {}
        self.rows: list[list[str]] = []
        self.tags: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self._in_rows = False
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append(tag)
        if tag == "body":
            self.body = attributes
        if attributes.get("id") == "rows-body":
            self._in_rows = True
        if self._in_rows and tag == "tr":
            self.rows.append([])
        if self._in_rows and tag == "td":
            self.rows[-1].append("")
        self._open.append((tag, attributes.get("id")))
        if attributes.get("id"):
            self.by_id[attributes["id"] or ""] = ""

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, element_id = self._open.pop()
            if element_id == "rows-body":
                self._in_rows = False
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.by_id[element_id] += data
        if self._in_rows and self.rows and self.rows[-1] and self._open[-1][0] == "td":
            self.rows[-1][-1] += data


@pytest.fixture
def worker(stack: Stack, tmp_path: Path) -> Iterator[tuple[Stack, int]]:
    """A running worker with its HTTP port (and the status page) on a free port."""
    port = free_port()
    env = stack.env(LOGIN_ETL_HTTP_PORT=str(port), LOGIN_ETL_WAIT_TIME_SECONDS="1",
                    LOGIN_ETL_POLLERS="2")
    process = stack.start(env=env, log=tmp_path / "worker.log")
    try:
        # Ready: the queues answered and the schema is in place (the port answers before).
        wait_until(lambda: get(port, "/readyz")[0] == 200 or process.poll() is not None, 30,
                   what="the worker ready")
        assert process.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        yield stack, port
    finally:
        end(process, 30)


def test_page_shows_depths_and_masked_rows_of_the_processed_sample(
        worker: tuple[Stack, int], chromium: str, tmp_path: Path) -> None:
    stack, port = worker
    stack.send(sample_bodies())

    def settled() -> bool:
        data = status_json(port)
        return bool(data) and data["rows"]["total"] == 99 and data["queues"]["dlq"]["visible"] == 1 \
            and all(data["queues"]["source"][f] == 0 for f in ("visible", "in_flight", "delayed"))

    wait_until(settled, 60, interval=0.5, what="the sample processed and shown in /status.json")

    dom = Dom(browse(chromium, f"http://127.0.0.1:{port}/", tmp_path, "--dump-dom"))
    assert int(dom.body.get("data-updates") or 0) >= 1, "the page's script did not refresh it"
    ids = dom.by_id
    assert (ids["source-visible"], ids["source-in_flight"], ids["source-delayed"]) == ("0", "0", "0")
    assert (ids["dlq-visible"], ids["dlq-in_flight"], ids["dlq-delayed"]) == ("1", "0", "0")
    assert ids["total-rows"] == "99"
    assert "missing_field:user_id" in ids["reasons"]  # the sample's one malformed event
    assert "UTC" in ids["last-commit"] and "none yet" not in ids["last-commit"]
    assert ids["state"] == "live"

    latest = stack.query("SELECT user_id, device_type, masked_ip, masked_device_id, locale, "
                         "app_version, create_date FROM user_logins ORDER BY ctid DESC LIMIT 10")
    expected = [["null" if v is None else str(v) for v in row] for row in latest]
    assert dom.rows == expected
    assert all(row[2].startswith("h1.") and row[3].startswith("h1.") for row in dom.rows)

    page = "\n".join(dom.by_id.values()) + json.dumps(status_json(port))
    for event in sample_events():
        for key in ("ip", "device_id"):
            if key in event:
                assert event[key] not in page, f"a raw {key} reached the status page"

    screenshot = tmp_path / "status-page.png"
    browse(chromium, f"http://127.0.0.1:{port}/", tmp_path, f"--screenshot={screenshot}",
           "--window-size=1280,900")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("LOGIN_ETL_UPDATE_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(screenshot, ROOT / "docs" / "status-page.png")


def test_terminal_watch_shows_the_same_and_ends_cleanly_on_ctrl_c(worker: tuple[Stack, int]) -> None:
    stack, port = worker
    stack.send(sample_bodies())
    wait_until(lambda: status_json(port).get("rows", {}).get("total") == 99, 60, interval=0.5,
               what="the sample stored")
    env = {**stack.env(LOGIN_ETL_HTTP_PORT=str(port)), "COLUMNS": "300"}
    watch = subprocess.Popen([sys.executable, "-m", "login_etl.cli", "status", "--watch",
                              "--interval", "0.5"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        time.sleep(4)
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=20)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(10)
    assert watch.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "Aborted" not in err
    assert "user_logins: 99 rows, latest 10" in out and "h1." in out
    assert "missing_field:user_id" in out  # from the worker's own counters, read over its port
    assert re.search(r"source\s+0\s+0\s+0", out) and re.search(r"dlq\s+1\s+0\s+0", out)
    for event in sample_events():
        for key in ("ip", "device_id"):
            if key in event:
                assert event[key] not in out


def test_a_stored_script_is_shown_escaped(worker: tuple[Stack, int], chromium: str,
                                          tmp_path: Path) -> None:
    stack, port = worker
    hostile = (XSS, "<b>bold</b>", "h1.x.<img src=x>", "\"><svg onload=alert(3)>", "&amp;",
               2003000, "2026-01-02")
    stack.query("INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, "
                "locale, app_version, create_date) VALUES (%s, %s, %s, %s, %s, %s, %s)", hostile)
    raw = get(port, "/")[1].decode()
    assert XSS not in raw and "&lt;script&gt;alert(1)&lt;/script&gt;" in raw

    markup = browse(chromium, f"http://127.0.0.1:{port}/", tmp_path, "--dump-dom")
    dom = Dom(markup)
    assert int(dom.body.get("data-updates") or 0) >= 1, "the page's script did not refresh it"
    assert dom.rows[0] == [str(v) for v in hostile]  # shown as text, character for character
    assert XSS not in markup and "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert dom.tags.count("script") == 1  # the page's own; none made from data
    assert "img" not in dom.tags and "svg" not in dom.tags and "b" not in dom.tags


def test_nothing_on_the_port_changes_data(worker: tuple[Stack, int]) -> None:
    _, port = worker
    for path in ("/", "/status.json", "/metrics"):
        for method in ("POST", "PUT", "DELETE"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}",
                                             method=method)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 405


def test_an_sqs_error_code_with_terminal_controls_is_shown_escaped(stack: Stack) -> None:
    """An endpoint (or a middlebox) answering GetQueueAttributes with an error code that holds
    ESC[2J and a bidi override: `login-etl status` shows the error, escaped."""
    from tests.integration.rewriteproxy import RewriteProxy

    evil = json.dumps({"__type": "com.amazonaws.sqs#Throttl\x1b[2J\u202eing",
                       "message": "\x1b]0;owned\x07"}).encode()
    proxy = RewriteProxy(4566, ("GetQueueAttributes",), evil, every=1, status=400)
    try:
        env = stack.env(LOGIN_ETL_QUEUE_URL=proxy.url_for(stack.queue_url),
                        LOGIN_ETL_DLQ_URL=stack.dlq_url)
        result = stack.cli("status", env=env, check=False, timeout=60)
    finally:
        proxy.close()
    shown = result.stdout + result.stderr
    assert proxy.rewritten.get("GetQueueAttributes", 0) >= 1
    assert "\x1b" not in shown and "\u202e" not in shown, shown[-2000:]
    assert "Throttl\\u001b[2J\\u202eing" in shown, shown[-2000:]
