"""The status page only reads counts and masked rows, and escapes every value it shows."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
from datetime import date
from typing import Any

import pytest
from rich.console import Console

from login_etl import http
from login_etl.health import Health
from login_etl.queue import Depth, QueueError
from login_etl.sqs import errors
from login_etl.statuspage import (
    CSP,
    Counters,
    StatusPage,
    Throughput,
    printable,
    render_html,
    render_rich,
    to_json,
)
from login_etl.statuspage.format import LEVELS
from tests.unit.fakes import RAW_BODY, DepthQueue, RowStore

XSS = "<script>alert(1)</script>"
ROWS: list[tuple[Any, ...]] = [
    (XSS, "android", "h1.k1.AAAA", "h1.k1.BBBB", None, 2003000, date(2026, 1, 2)),
    ("\"quoted\" & 'single'", "ios", "h1.k1.CCCC", "h1.k1.DDDD", "DE", 96000, date(2026, 1, 2)),
    ("[bold red]markup[/] \x1b[2J\u202e", "ios", "h1.k1.EEEE", "h1.k1.FFFF", "PT", 1, date(2026, 1, 2)),
]


def counters() -> Counters:
    return Counters({"stored": 99.0, "rejected": 1.0, "duplicate": 0.0},
                    {"invalid_json": 1.0, XSS: 2.0, "zero_count_reason": 0.0}, 1_767_225_600.0)


def page(rows: list[tuple[Any, ...]] | None = None, **kwargs: Any) -> StatusPage:
    return StatusPage(DepthQueue("source", Depth(3, 2, 1)), DepthQueue("dlq", Depth(1, 0, 0)),
                      RowStore(ROWS if rows is None else rows), counters=counters, **kwargs)


def test_stored_script_is_escaped_in_html() -> None:
    out = render_html(page().snapshot())
    assert XSS not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&quot;quoted&quot; &amp; &#x27;single&#x27;" in out
    # the only script on the page is the page's own, admitted by its hash in the CSP
    assert out.count("<script") == 1 and "script-src 'sha256-" in CSP
    assert "unsafe-inline" not in CSP


def test_rejection_reasons_are_escaped_too() -> None:
    out = render_html(page().snapshot())
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in out
    assert "zero_count_reason" not in out  # reasons with a zero count are not listed


def test_page_script_writes_text_only() -> None:
    """The server is the page's only renderer: the script builds nothing from data, it swaps
    in the parts of a freshly fetched page (and writes its own state badge as text)."""
    out = render_html(page().snapshot())
    script = out[out.index("<script>"):]
    assert "innerHTML" not in script and "outerHTML" not in script
    assert "insertAdjacentHTML" not in script and "document.write" not in script
    assert "createElement" not in script and "eval(" not in script
    assert "textContent" in script and "DOMParser" in script


def test_csp_admits_exactly_the_page_own_style_and_script() -> None:
    """The hashes in the CSP are those of the inline style and script as served."""
    out = render_html(page().snapshot())
    style = out.split("<style>", 1)[1].split("</style>", 1)[0]
    script = out.split("<script>", 1)[1].split("</script>", 1)[0]
    for source in (style, script):
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in CSP
    assert style.strip() and script.strip()
    assert all(f".h{i}{{" in style for i in range(LEVELS + 1))


def test_a_refresh_swaps_every_part_that_can_change() -> None:
    """The script replaces #generated and <main> with a fresh page's: everything that
    depends on data is inside them, the rest of the page is the same for any snapshot."""
    def outside(out: str) -> str:
        head, rest = out.split('<span id="generated">', 1)
        rest = rest.split("</span>", 1)[1]
        return head + rest.split("<main>", 1)[0] + rest.split("</main>", 1)[1]

    quiet = StatusPage(DepthQueue("source", QueueError("down")), DepthQueue("dlq", Depth(0, 0, 0)),
                       RowStore([]), counters=lambda: None, clock=lambda: 1_000.0)
    busy = page(clock=lambda: 1_767_225_700.0)
    assert render_html(quiet.snapshot()) != render_html(busy.snapshot())
    assert outside(render_html(quiet.snapshot())) == outside(render_html(busy.snapshot()))


def test_no_raw_body_is_ever_rendered() -> None:
    status = page()
    snapshot = status.snapshot()
    html_out = render_html(snapshot)
    json_out = json.dumps(to_json(snapshot))
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(render_rich(snapshot))
    text_out = console.export_text()
    for out in (html_out, json_out, text_out):
        assert "203.0.113.77" not in out and "raw-device-4242" not in out
        assert RAW_BODY not in out


def test_depths_rows_and_counters_reach_every_rendering() -> None:
    snapshot = page().snapshot()
    data = to_json(snapshot)
    assert (data["queues"]["source"]["visible"], data["queues"]["source"]["in_flight"],
            data["queues"]["source"]["delayed"]) == (3, 2, 1)
    assert data["queues"]["dlq"]["visible"] == 1
    assert data["rows"]["total"] == 3 and data["rows"]["latest"][0][0] == XSS
    assert data["rows"]["latest"][0][4] is None  # a null locale stays null
    assert data["rows"]["latest"][0][6] == "2026-01-02"
    assert data["rejections"]["reasons"][0] == {"reason": XSS, "count": 2}
    assert data["last_commit"]["text"].startswith("2026-01-01 00:00:00 UTC")
    html_out = render_html(snapshot)
    assert 'id="source-in_flight">2<' in html_out and 'id="dlq-visible">1<' in html_out
    assert "h1.k1.AAAA" in html_out and "h1.k1.FFFF" in html_out


def test_terminal_view_keeps_markup_and_control_characters_as_text() -> None:
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(render_rich(page().snapshot()))
    out = console.export_text()
    assert "[bold red]markup[/]" in out and XSS in out
    assert "\x1b" not in out and "\\u001b[2J" in out and "\\u202e" in out
    assert "user_logins: 3 rows, latest 3" in out


def test_printable_spells_out_control_characters() -> None:
    assert printable("plain <b>") == "plain <b>"
    assert printable("a\x1bb\u202ec\nd") == "a\\u001bb\\u202ec\\u000ad"
    assert printable(None) is None
    assert printable(date(2026, 3, 4)) == "2026-03-04"


def test_snapshot_is_cached_so_refreshing_browsers_cannot_load_the_backends() -> None:
    status = page(cache_seconds=60)
    for _ in range(50):
        status.snapshot()
    source, _ = status.queues
    assert source.calls == 1 and status.store.calls == 1  # type: ignore[attr-defined]


def test_a_slow_gather_is_cached_longer() -> None:
    class SlowStore(RowStore):
        def count_rows(self) -> int:
            time.sleep(0.2)  # a big table: count(*) scans it
            return super().count_rows()

    store = SlowStore(ROWS)
    status = StatusPage(DepthQueue("source", Depth(0, 0, 0)), DepthQueue("dlq", Depth(0, 0, 0)),
                        store, counters=counters, cache_seconds=0.1)
    status.snapshot()
    time.sleep(0.3)  # past cache_seconds, within five times the gather's cost
    status.snapshot()
    assert store.calls == 1


def test_a_slow_gather_serves_the_previous_snapshot_to_others() -> None:
    release = threading.Event()

    class SlowStore(RowStore):
        def latest_rows(self, limit: int = 10) -> list[tuple[Any, ...]]:
            if self.calls:
                release.wait(5)
            return super().latest_rows(limit)

    status = StatusPage(DepthQueue("source", Depth(0, 0, 0)), DepthQueue("dlq", Depth(0, 0, 0)),
                        SlowStore(ROWS), counters=counters, cache_seconds=0)
    first = status.snapshot()
    time.sleep(status._ttl + 0.05)  # let the first snapshot go stale
    slow = threading.Thread(target=status.snapshot)
    slow.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert status.snapshot() is first
    assert time.monotonic() - started < 0.5
    release.set()
    slow.join(5)


def test_outages_show_as_errors_not_crashes() -> None:
    class DownStore(RowStore):
        def latest_rows(self, limit: int = 10) -> list[tuple[Any, ...]]:
            raise ConnectionError("secret detail 203.0.113.77")

    status = StatusPage(DepthQueue("source", QueueError("get_queue_attributes on source queue "
                                                       "failed: EndpointConnectionError")),
                        DepthQueue("dlq", Depth(0, 0, 0)), DownStore([]), counters=lambda: None)
    snapshot = status.snapshot()
    data = to_json(snapshot)
    assert data["queues"]["source"]["visible"] is None
    assert data["queues"]["source"]["visible_text"] == "–"
    assert "database: ConnectionError" in data["errors"]
    assert data["last_commit"]["text"].startswith("unknown")
    out = render_html(snapshot)
    assert "EndpointConnectionError" in out and "203.0.113.77" not in out


def test_throughput_counts_per_minute_from_cumulative_samples() -> None:
    ring = Throughput(minutes=10)
    base = 1_000_000 * 60.0
    ring.add({"stored": 0, "rejected": 0}, base + 1)
    ring.add({"stored": 40, "rejected": 1}, base + 50)
    ring.add({"stored": 100, "rejected": 1}, base + 65)   # minute 1: +60
    ring.add({"stored": 130, "rejected": 3}, base + 119)  # minute 1: +90 stored, +2 rejected
    ring.add({"stored": 130, "rejected": 3}, base + 185)  # minute 3: nothing new
    ring.add({"stored": 5, "rejected": 0}, base + 245)    # minute 4: the worker restarted
    per_minute = ring.per_minute(base + 250)
    assert len(per_minute) == 10
    counts = {int((start - base) // 60): c for start, c in per_minute}
    assert counts[0] == {"stored": 40, "duplicate": 0, "rejected": 1}
    assert counts[1] == {"stored": 90, "duplicate": 0, "rejected": 2}
    assert counts[2]["stored"] == 0 and counts[3]["stored"] == 0
    assert counts[4] == {"stored": 5, "duplicate": 0, "rejected": 0}
    # eleven minutes later the ring has forgotten it all
    assert all(sum(c.values()) == 0 for _, c in ring.per_minute(base + 60 * 16))
    ring.add({"stored": 5}, base + 60 * 16)
    assert len(ring._ring) <= 11


def test_routes_add_the_page_and_keep_the_probes() -> None:
    table = http.routes(Health(), page())
    assert {"/", "/status.json", "/metrics", "/healthz", "/readyz"} <= set(table)
    assert set(http.routes(Health())) == {"/metrics", "/healthz", "/readyz"}
    status, content_type, body = table["/status.json"]()
    assert status == 200 and content_type == "application/json"
    assert json.loads(body)["queues"]["dlq"]["visible"] == 1


@pytest.fixture(scope="module")
def server() -> Any:
    srv = http.serve(0, http.routes(Health(), page()), host="127.0.0.1")
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head_are_answered(server: Any, method: str) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    conn.request(method, "/", body=b"{}")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("Allow") == "GET, HEAD"
    conn.close()


def test_get_and_head(server: Any) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    conn.request("GET", "/")
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert re.search(r'http-equiv="Content-Security-Policy"', body)
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    conn.request("HEAD", "/status.json")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()


@pytest.mark.parametrize(("width", "tokens"), [(80, False), (160, True), (300, True)])
def test_terminal_view_fits_its_width_and_keeps_ids_whole(width: int, tokens: bool) -> None:
    """`status` piped or in an 80-column terminal: nothing wider than the terminal, each
    user_id on one line; the token columns are cut first and left out when too narrow."""
    user_id = "62f28d1a-4a78-4cb3-98b9-b45c1b98fbe4"
    rows = [(user_id, "android", "h1.k1." + "A" * 43, "h1.k1." + "F" * 43, "PH", "2003000",
             "2026-01-02")]
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_rich(page(rows).snapshot(), width))
    out = console.export_text()
    assert max(len(line) for line in out.splitlines()) <= width
    assert user_id in out
    assert ("h1.k1.A" in out) == tokens
    assert ("left out at" in out) == (not tokens)


EVIL_CODE = "Throttl\x1b[2J\u202eing\u2066"


class EvilSqs:
    """An SQS whose error code carries ESC, a bidi override and an isolate."""

    def get_queue_attributes(self, **_: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError({"Error": {"Code": EVIL_CODE, "Message": "\x1b]0;title\x07"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetQueueAttributes")


def test_an_error_code_from_sqs_reaches_no_view_raw(capsys: pytest.CaptureFixture[str]) -> None:
    from login_etl.invocation import fail
    from login_etl.queue import Queue

    source = Queue(EvilSqs(), "http://127.0.0.1:4566/000000000000/q", label="source")
    status = StatusPage(source, DepthQueue("dlq", Depth(0, 0, 0)), RowStore([]),
                        counters=lambda: None)
    snapshot = status.snapshot()
    console = Console(width=200, record=True, file=io.StringIO(), force_terminal=True)
    console.print(render_rich(snapshot))
    views = {"terminal": console.export_text(styles=False), "html": render_html(snapshot),
             "json": json.dumps(to_json(snapshot), ensure_ascii=False),
             "describe": errors.describe(_evil_error())}
    with pytest.raises(SystemExit):
        fail(snapshot.errors[0])
    views["stderr"] = capsys.readouterr().err
    for name, text in views.items():
        assert "\x1b" not in text and "\u202e" not in text and "\u2066" not in text, name
        assert "\\u001b[2J" in text and "\\u202e" in text, name


def _evil_error() -> Exception:
    try:
        EvilSqs().get_queue_attributes()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def test_printable_bounds_and_leaves_ordinary_text_alone() -> None:
    from login_etl.logs import printable as shown

    assert shown("ThrottlingException é 日本 <b>") == "ThrottlingException é 日本 <b>"
    assert shown("\U000e0001\ud800\u2028") == "\\U000e0001\\ud800\\u2028"
    assert len(shown("x" * 10_000)) == 256 and shown("x" * 10_000).endswith("…")


def test_reasons_created_at_zero_for_the_alerts_are_not_listed() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from login_etl.statuspage.snapshot import _counters_from

    registry = CollectorRegistry()
    rejections = Counter("login_etl_rejections", "by reason", ["reason"], registry=registry)
    rejections.labels("dlq_refused")
    rejections.labels("invalid_json").inc(2)
    assert _counters_from(registry.collect()).rejections == {"invalid_json": 2}
