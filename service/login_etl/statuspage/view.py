"""The snapshot as display data: the body of /status.json, which the page and the terminal
also render from, so every view words a value the same way."""

from __future__ import annotations

import datetime as dt
from typing import Any

from login_etl.statuspage.format import ago, level, number, utc
from login_etl.statuspage.snapshot import DEPTH_FIELDS, Snapshot


def last_commit_text(snapshot: Snapshot) -> str:
    if not snapshot.counters_ok:
        return f"unknown (no answer from {snapshot.counters_scope})"
    if snapshot.last_commit is None:
        return "none yet"
    return (f"{utc(snapshot.last_commit, '%Y-%m-%d %H:%M:%S')} UTC "
            f"({ago(snapshot.taken_at - snapshot.last_commit)})")


def freshness_text(snapshot: Snapshot) -> str:
    if not snapshot.counters_ok:
        return f"unknown (no answer from {snapshot.counters_scope})"
    held = ("" if snapshot.oldest_age is None
            else f"; oldest message in hand sent {ago(snapshot.oldest_age)}"
            if snapshot.oldest_age > 0 else "; no message in hand")
    if snapshot.freshness_p99 is None:
        return "no rows stored yet" + held
    bound = ("over 1 day" if snapshot.freshness_p99 == float("inf")
             else f"within {snapshot.freshness_p99:g} s")
    return (f"99 % of rows committed {bound} of being sent ({snapshot.freshness_count:,} rows "
            f"since the worker started){held}")


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as data, with display strings precomputed here."""
    peak = max((sum(c.values()) for _, c in snapshot.throughput), default=0)
    recent = sum(sum(c.values()) for _, c in snapshot.throughput)
    return {
        "generated_at": dt.datetime.fromtimestamp(snapshot.taken_at, dt.UTC).isoformat(),
        "generated_text": f"{utc(snapshot.taken_at)} UTC",
        "queues": {
            q.label: {"name": q.name, "error": q.error,
                      **{f: (getattr(q.depth, f) if q.depth else None) for f in DEPTH_FIELDS},
                      **{f"{f}_text": number(getattr(q.depth, f) if q.depth else None)
                         for f in DEPTH_FIELDS}}
            for q in snapshot.queues},
        "throughput": {
            "scope": snapshot.counters_scope, "available": snapshot.counters_ok,
            "window_total": recent if snapshot.counters_ok else None,
            "window_text": f"{recent:,} in {len(snapshot.throughput)} min" if snapshot.counters_ok
            else f"unknown (no answer from {snapshot.counters_scope})",
            "minutes": [{"start": start, "minute": utc(start, "%H:%M"), **counts,
                         "total": sum(counts.values()), "level": level(sum(counts.values()), peak)}
                        for start, counts in snapshot.throughput]},
        "rejections": {"scope": snapshot.counters_scope, "available": snapshot.counters_ok,
                       "empty_text": "none" if snapshot.counters_ok else
                       f"unknown (no answer from {snapshot.counters_scope})",
                       "reasons": [{"reason": r, "count": n} for r, n in snapshot.rejections]},
        "last_commit": {"timestamp": snapshot.last_commit, "text": last_commit_text(snapshot)},
        "freshness": {"p99": None if snapshot.freshness_p99 in (None, float("inf"))
                      else snapshot.freshness_p99, "over_last_bucket":
                      snapshot.freshness_p99 == float("inf"), "count": snapshot.freshness_count,
                      "oldest_in_hand": snapshot.oldest_age, "text": freshness_text(snapshot)},
        "rows": {"total": snapshot.total_rows, "total_text": number(snapshot.total_rows),
                 "columns": list(snapshot.columns), "latest": [list(r) for r in snapshot.rows]},
        "errors": snapshot.errors,
    }
