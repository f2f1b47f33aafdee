"""Freshness: the batch histogram, the oldest message in hand, and what the status views say,
including when no worker answers."""

from __future__ import annotations

import io
import json
import time

from prometheus_client import generate_latest
from rich.console import Console

from login_etl import metrics
from login_etl.inflight import InFlight
from login_etl.messages import Received
from login_etl.metrics import BatchHistogram
from login_etl.queue import Depth
from login_etl.statuspage import Counters, StatusPage, render_html, render_rich, to_json
from tests.unit.fakes import DepthQueue, RowStore


def test_a_batch_of_ages_lands_in_the_same_buckets_as_one_by_one() -> None:
    histogram = BatchHistogram("test_fresh_seconds", "test", buckets=(0.5, 1, 10))
    # registered for this test only: a second run in one process (mutmut's) registers anew
    try:
        _check_batch(histogram)
    finally:
        metrics.REGISTRY.unregister(histogram)
    empty = BatchHistogram("test_empty_seconds", "t", buckets=(1,))
    try:
        assert empty.quantile(0.99) is None
    finally:
        metrics.REGISTRY.unregister(empty)


def _check_batch(histogram: BatchHistogram) -> None:
    now_ms = 1_000_000.0
    # 0.1 s, exactly 1 s (a bound is inclusive), 5 s, 20 s, and a clock 2 s behind SQS's.
    histogram.observe_ages([int(now_ms - d) for d in (100, 1000, 5000, 20_000, -2000)], now_ms)
    text = generate_latest().decode()
    assert 'test_fresh_seconds_bucket{le="0.5"} 2.0' in text
    assert 'test_fresh_seconds_bucket{le="1.0"} 3.0' in text
    assert 'test_fresh_seconds_bucket{le="10.0"} 4.0' in text
    assert 'test_fresh_seconds_bucket{le="+Inf"} 5.0' in text
    assert "test_fresh_seconds_count 5.0" in text
    assert histogram.count == 5
    assert histogram.quantile(0.5) == 1 and histogram.quantile(0.99) == float("inf")


def test_the_oldest_message_in_hand_is_a_gauge_read_when_scraped() -> None:
    inflight = InFlight(None)  # type: ignore[arg-type]
    assert inflight.oldest_age() == 0.0
    sent = int(time.time() * 1000) - 42_000
    inflight.hold([Received("m1", "r1", "{}", sent), Received("m2", "r2", "{}", sent + 40_000)])
    [value] = [s.value for f in metrics.OLDEST_IN_HAND.collect() for s in f.samples]
    assert 41.5 < value < 45


def _page(counters: Counters | None) -> StatusPage:
    return StatusPage(DepthQueue("source", Depth(0, 0, 0)), DepthQueue("dlq", Depth(0, 0, 0)),
                      RowStore([]), counters=lambda: counters, counters_scope="the worker",
                      clock=lambda: 1_767_225_700.0)


def _views(status: StatusPage) -> tuple[str, str, dict]:  # type: ignore[type-arg]
    snapshot = status.snapshot()
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(render_rich(snapshot, 160))
    return console.export_text(), render_html(snapshot), to_json(snapshot)


def test_without_an_answering_worker_the_views_say_they_do_not_know() -> None:
    """Not ten minutes of 0 settled: no throughput at all, and the words 'unknown'."""
    text, html, data = _views(_page(None))
    assert data["throughput"]["minutes"] == [] and data["throughput"]["window_total"] is None
    assert "unknown (no answer from the worker)" in data["throughput"]["window_text"]
    assert "unknown" in data["freshness"]["text"]
    assert "Settled per minute" in text and " 0 " not in text.split("Settled per minute")[1][:400]
    assert text.count("unknown (no answer from the worker)") >= 3
    assert "Freshness" in html and "unknown (no answer" in html


def test_freshness_is_shown_by_every_view() -> None:
    counters = Counters({"stored": 99.0}, {}, 1_767_225_600.0, freshness_p99=2.5,
                        freshness_count=99, oldest_age=0.0)
    text, html, data = _views(_page(counters))
    assert data["freshness"]["p99"] == 2.5 and data["freshness"]["count"] == 99
    for out in (text, html, json.dumps(data)):
        assert "within 2.5 s" in out and "99 rows" in out
