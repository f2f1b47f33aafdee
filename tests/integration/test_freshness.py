"""Freshness on a real worker: after the sample, the histogram counts every stored row, and
`login-etl status` shows the figure; with no worker answering, it says it does not know."""

from __future__ import annotations

from pathlib import Path

from tests.integration.stack import Stack, end, free_port, metric_sum, wait_until
from tests.integration.test_alert_signals import ready, scrape


def test_freshness_histogram_counts_the_rows_stored(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    env = stack.env(LOGIN_ETL_HTTP_PORT=str(port))
    worker = stack.start(env=env, log=tmp_path / "worker.log")
    try:
        wait_until(lambda: ready(port), 30, what="worker ready")
        stack.cli("load", "--sample")
        wait_until(lambda: metric_sum(scrape(port), "login_etl_messages_total",
                                      outcome="rejected") == 1 and stack.count_rows() == 99,
                   60, what="the sample settled")
        text = scrape(port)
        assert metric_sum(text, "login_etl_freshness_seconds_count") == stack.count_rows() == 99
        assert metric_sum(text, "login_etl_freshness_seconds_bucket", le="+Inf") == 99
        # A fresh local queue: every row within a minute of being sent.
        assert metric_sum(text, "login_etl_freshness_seconds_bucket", le="60.0") == 99
        assert 0 <= metric_sum(text, "login_etl_freshness_seconds_sum") < 99 * 60
        # The rows are committed before their messages are deleted: nothing is in hand once
        # the deletes are through.
        wait_until(lambda: "login_etl_oldest_message_age_seconds 0.0" in scrape(port), 10,
                   what="no message left in hand")
        shown = stack.cli("status", "--worker-url", f"http://127.0.0.1:{port}").stdout
        assert "99 rows since the worker started" in " ".join(shown.split())
    finally:
        end(worker, 30)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

    # The worker is gone: no "0 settled" for ten minutes, but "unknown".
    shown = " ".join(stack.cli("status", "--worker-url", f"http://127.0.0.1:{port}",
                               env=env).stdout.split())
    assert "unknown (no answer from the worker at" in shown
    settled = shown.split("Settled per minute (UTC)")[1].split("Rejections")[0]
    assert "unknown" in settled and "█" not in settled
