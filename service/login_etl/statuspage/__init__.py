"""The status view: queue and DLQ depths, throughput, rejections and the latest masked rows.

One snapshot (snapshot.py) feeds three renderings: the JSON of `/status.json` (view.py), the
HTML page at `/` (page.py) and the terminal view of `login-etl status [--watch]` (terminal.py).
"""

from login_etl.statuspage.page import CSP, StatusPage, render_html
from login_etl.statuspage.snapshot import (
    Counters,
    DepthSource,
    RowSource,
    Snapshot,
    Snapshots,
    Throughput,
    local_counters,
    printable,
    worker_counters,
)
from login_etl.statuspage.terminal import render_rich
from login_etl.statuspage.view import to_json

__all__ = [
    "CSP",
    "Counters",
    "DepthSource",
    "RowSource",
    "Snapshot",
    "Snapshots",
    "StatusPage",
    "Throughput",
    "local_counters",
    "printable",
    "render_html",
    "render_rich",
    "to_json",
    "worker_counters",
]
