"""The status view: queue and DLQ depths, throughput, rejections and the latest masked rows.

One snapshot feeds three renderings: server-side HTML (`/`), JSON (`/status.json`, which the
page's script polls) and rich renderables (`login-etl status [--watch]`).

Why it is safe to leave open on a production port:
  - it only reads: queue depths (GetQueueAttributes, counts only — no message is ever received,
    so no raw body, which holds ip and device_id, can reach it), the worker's counters, and rows
    of user_logins, which hold masked tokens only;
  - every value is HTML-escaped on the server, and the script writes only with textContent;
    a Content-Security-Policy admits only this page's own script and style (by hash);
  - a snapshot is cached for CACHE_SECONDS (longer when gathering it was slow: five times its
    cost, so a big table is read at most a fifth of the time) and gathered by one thread at a
    time, so any number of refreshing browsers costs SQS and Postgres one read per interval.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import html
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from login_etl import metrics, retrying
from login_etl.queue import Depth, QueueError
from login_etl.store import COLUMNS

ROW_LIMIT = 10
CACHE_SECONDS = 1.5
MAX_CACHE_SECONDS = 60.0
SAMPLE_SECONDS = 5.0
WINDOW_MINUTES = 10
REFRESH_MS = 3000
LEVELS = 20  # bar heights are CSS classes h0..h20: no inline style attribute, so CSP stays strict
OUTCOMES = ("stored", "duplicate", "rejected")
_DEPTH_FIELDS = ("visible", "in_flight", "delayed")

Route = Callable[[], tuple[int, str, bytes]]


class DepthSource(Protocol):
    """What the page needs of a Queue: counts only, never a receive."""

    label: str
    url: str

    def depth(self) -> Depth: ...


class RowSource(Protocol):
    """What the page needs of a Store."""

    def latest_rows(self, limit: int = ...) -> list[tuple[Any, ...]]: ...

    def count_rows(self) -> int: ...


# -- the worker's counters --------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """Cumulative counters of one worker process at one moment.

    `history` is set when they come from a worker's own page: its per-minute counts, which a
    terminal started just now could not have sampled itself.
    """

    messages: dict[str, float]
    rejections: dict[str, float]
    last_commit: float | None
    history: list[tuple[int, dict[str, int]]] | None = None


def _counters_from(families: Iterable[Any]) -> Counters:
    messages: dict[str, float] = {}
    rejections: dict[str, float] = {}
    last_commit: float | None = None
    for family in families:
        for sample in family.samples:
            if sample.name == "login_etl_messages_total":
                messages[sample.labels.get("outcome", "")] = sample.value
            elif sample.name == "login_etl_rejections_total":
                rejections[sample.labels.get("reason", "")] = sample.value
            elif sample.name == "login_etl_last_commit_timestamp_seconds" and sample.value > 0:
                last_commit = sample.value
    return Counters(messages, rejections, last_commit)


def local_counters() -> Counters:
    """This process's own counters (the page served by a worker)."""
    families = [*metrics.MESSAGES.collect(), *metrics.REJECTIONS.collect(),
                *metrics.LAST_COMMIT.collect()]
    return _counters_from(families)


def worker_counters(base_url: str, timeout: float = 1.0) -> Counters | None:
    """A running worker's throughput history, rejections and last commit, read from its
    /status.json (for `login-etl status` in another process); None if it does not answer."""
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + "/status.json",
                                    timeout=timeout) as response:
            data = json.loads(response.read(4_000_000))
        history = [(int(m["start"]), {o: int(m[o]) for o in OUTCOMES})
                   for m in data["throughput"]["minutes"]]
        rejections = {str(r["reason"]): float(r["count"]) for r in data["rejections"]["reasons"]}
        last = data["last_commit"]["timestamp"]
        return Counters({}, rejections, float(last) if last else None, history)
    except Exception:
        return None


class Throughput:
    """Messages settled per minute, from samples of the cumulative counters (a small ring).

    Keeps the first and last sample seen in each of the last `minutes` + 1 minutes; a
    minute's count is its last sample minus the previous minute's last. A counter that went
    down (the scraped worker restarted) counts from zero again.
    """

    def __init__(self, minutes: int = WINDOW_MINUTES) -> None:
        self.minutes = minutes
        self._lock = threading.Lock()
        self._ring: dict[int, tuple[dict[str, float], dict[str, float]]] = {}

    def add(self, totals: dict[str, float], now: float) -> None:
        minute = int(now // 60)
        with self._lock:
            first, _ = self._ring.get(minute, (totals, totals))
            self._ring[minute] = (first, dict(totals))
            for old in [m for m in self._ring if m < minute - self.minutes]:
                del self._ring[old]

    def per_minute(self, now: float) -> list[tuple[int, dict[str, int]]]:
        """(minute start as unix time, counts by outcome), oldest first; the last is in progress."""
        current = int(now // 60)
        with self._lock:
            ring = dict(self._ring)
        result = []
        previous: dict[str, float] | None = None
        for minute in range(current - self.minutes, current + 1):
            if minute in ring:
                first, last = ring[minute]
                base = previous if previous is not None else first
                counts = {o: _delta(last.get(o, 0.0), base.get(o, 0.0)) for o in OUTCOMES}
                previous = last
            else:
                counts = dict.fromkeys(OUTCOMES, 0)
            if minute > current - self.minutes:
                result.append((minute * 60, counts))
        return result


def _delta(now: float, before: float) -> int:
    return int(now - before) if now >= before else int(now)


# -- the snapshot -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueView:
    label: str
    name: str
    depth: Depth | None
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    queues: tuple[QueueView, ...]
    throughput: list[tuple[int, dict[str, int]]]
    rejections: list[tuple[str, int]]
    last_commit: float | None
    counters_scope: str
    counters_ok: bool
    columns: tuple[str, ...]
    rows: list[tuple[str | None, ...]]
    total_rows: int | None
    errors: list[str] = field(default_factory=list)


def printable(value: Any) -> str | None:
    """A stored value as display text: control and bidi-override characters spelled out.

    Escaping keeps markup out; this keeps a stored value from moving a terminal's cursor or
    reordering the text around it.
    """
    if value is None:
        return None
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


class StatusPage:
    """Gathers snapshots (cached, one gatherer at a time) and serves them."""

    def __init__(self, source: DepthSource, dlq: DepthSource, store: RowSource, *,
                 counters: Callable[[], Counters | None] = local_counters,
                 counters_scope: str = "this worker process", limit: int = ROW_LIMIT,
                 cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.queues = (source, dlq)
        self.store = store
        self.counters = counters
        self.counters_scope = counters_scope
        self.limit = limit
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.throughput = Throughput()
        self._lock = threading.Lock()
        self._cached: Snapshot | None = None
        self._cached_at = 0.0
        self._ttl = cache_seconds

    def sample(self) -> Counters | None:
        counters = self.counters()
        if counters is not None and counters.history is None:
            self.throughput.add(counters.messages, self.clock())
        return counters

    def start_sampling(self, every: float = SAMPLE_SECONDS) -> threading.Thread:
        """Sample the counters in the background so throughput has history before anyone looks."""
        def loop() -> None:
            while True:
                with contextlib.suppress(Exception):  # a failed sample is a gap, not a dead thread
                    self.sample()
                time.sleep(every)

        thread = threading.Thread(target=loop, name="status-sampler", daemon=True)
        thread.start()
        return thread

    def snapshot(self) -> Snapshot:
        """The cached snapshot if fresh; while another thread gathers, the previous one."""
        cached = self._cached
        if cached is not None and time.monotonic() - self._cached_at < self._ttl:
            return cached
        if not self._lock.acquire(blocking=cached is None):
            return cached  # type: ignore[return-value]  # only None when blocking
        try:
            if self._cached is not None and time.monotonic() - self._cached_at < self._ttl:
                return self._cached
            started = time.monotonic()
            snapshot = self._gather()
            self._cached, self._cached_at = snapshot, time.monotonic()
            self._ttl = max(self.cache_seconds,
                            min(MAX_CACHE_SECONDS, 5 * (self._cached_at - started)))
            return snapshot
        finally:
            self._lock.release()

    def _gather(self) -> Snapshot:
        errors: list[str] = []
        views = []
        for queue in self.queues:
            try:
                views.append(QueueView(queue.label, queue.url.rstrip("/").rsplit("/", 1)[-1],
                                       queue.depth()))
            except Exception as exc:  # QueueError's text is value-free; others get described
                message = str(exc) if isinstance(exc, QueueError) else retrying.describe(exc)
                views.append(QueueView(queue.label, queue.url.rsplit("/", 1)[-1], None, message))
                errors.append(message)
        rows: list[tuple[str | None, ...]] = []
        total: int | None = None
        try:
            rows = [tuple(printable(v) for v in row) for row in self.store.latest_rows(self.limit)]
            total = self.store.count_rows()
        except Exception as exc:
            errors.append(f"database: {retrying.describe(exc)}")
        counters = self.sample()
        now = self.clock()
        rejections = sorted(((printable(r) or "", int(n)) for r, n in
                             (counters.rejections.items() if counters else ()) if n > 0),
                            key=lambda item: (-item[1], item[0]))
        history = counters.history if counters and counters.history is not None else None
        return Snapshot(
            taken_at=now, queues=tuple(views),
            throughput=history if history is not None else self.throughput.per_minute(now),
            rejections=rejections, last_commit=counters.last_commit if counters else None,
            counters_scope=self.counters_scope, counters_ok=counters is not None,
            columns=COLUMNS, rows=rows, total_rows=total, errors=errors)

    def routes(self) -> dict[str, Route]:
        def page() -> tuple[int, str, bytes]:
            return 200, "text/html; charset=utf-8", render_html(self.snapshot()).encode()

        def data() -> tuple[int, str, bytes]:
            return 200, "application/json", json.dumps(to_json(self.snapshot())).encode()

        return {"/": page, "/status.json": data}


# -- shared wording -----------------------------------------------------------------------------


def _utc(ts: float, fmt: str = "%H:%M:%S") -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def last_commit_text(snapshot: Snapshot) -> str:
    if not snapshot.counters_ok:
        return f"unknown (no answer from {snapshot.counters_scope})"
    if snapshot.last_commit is None:
        return "none yet"
    return (f"{_utc(snapshot.last_commit, '%Y-%m-%d %H:%M:%S')} UTC "
            f"({_ago(snapshot.taken_at - snapshot.last_commit)})")


def _number(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _level(value: int, peak: int) -> int:
    return 0 if peak <= 0 else max(1 if value else 0, round(LEVELS * value / peak))


def to_json(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as data for the page's script, with display strings precomputed here."""
    peak = max((sum(c.values()) for _, c in snapshot.throughput), default=0)
    recent = sum(sum(c.values()) for _, c in snapshot.throughput)
    return {
        "generated_at": dt.datetime.fromtimestamp(snapshot.taken_at, dt.UTC).isoformat(),
        "generated_text": f"{_utc(snapshot.taken_at)} UTC",
        "queues": {
            q.label: {"name": q.name, "error": q.error,
                      **{f: (getattr(q.depth, f) if q.depth else None) for f in _DEPTH_FIELDS},
                      **{f"{f}_text": _number(getattr(q.depth, f) if q.depth else None)
                         for f in _DEPTH_FIELDS}}
            for q in snapshot.queues},
        "throughput": {
            "scope": snapshot.counters_scope, "available": snapshot.counters_ok,
            "window_total": recent, "window_text": f"{recent:,} in {len(snapshot.throughput)} min",
            "minutes": [{"start": start, "minute": _utc(start, "%H:%M"), **counts,
                         "total": sum(counts.values()), "level": _level(sum(counts.values()), peak)}
                        for start, counts in snapshot.throughput]},
        "rejections": {"scope": snapshot.counters_scope, "available": snapshot.counters_ok,
                       "empty_text": "none" if snapshot.counters_ok else
                       f"unknown (no answer from {snapshot.counters_scope})",
                       "reasons": [{"reason": r, "count": n} for r, n in snapshot.rejections]},
        "last_commit": {"timestamp": snapshot.last_commit, "text": last_commit_text(snapshot)},
        "rows": {"total": snapshot.total_rows, "total_text": _number(snapshot.total_rows),
                 "columns": list(snapshot.columns), "latest": [list(r) for r in snapshot.rows]},
        "errors": snapshot.errors,
    }


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--accent:#2563eb;
--warn:#b42318;--ok:#067647}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
header{display:flex;align-items:baseline;gap:16px;padding:14px 24px;background:var(--card);
border-bottom:1px solid var(--line)}
header h1{font-size:18px;margin:0}
header .meta{color:var(--muted);font-size:13px}
#state{margin-left:auto;font-size:12px;padding:2px 8px;border-radius:10px;background:#eef2ff;
color:var(--accent)}
#state.live{background:#ecfdf3;color:var(--ok)}#state.stale{background:#fef3f2;color:var(--warn)}
main{padding:16px 24px;display:grid;gap:16px;grid-template-columns:repeat(3,1fr)}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;
min-width:0;overflow-x:auto}
section h2{font-size:14px;color:#344054;margin:0 0 8px;font-weight:600}
.wide2{grid-column:span 2}.wide3{grid-column:1/-1}
.depths{display:flex;gap:20px}
.depths div{display:flex;flex-direction:column}
.big{font-size:28px;font-weight:600;font-variant-numeric:tabular-nums;line-height:1.1}
.label{font-size:12px;color:var(--muted)}
.qname{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;color:var(--muted);
margin-top:6px}
.error{color:var(--warn);font-size:12px}
.note{color:var(--muted);font-size:12px;margin:6px 0 0}
.chart{display:flex;align-items:flex-end;gap:6px;height:110px;padding-top:14px}
.col{flex:1;display:flex;flex-direction:column;align-items:center;justify-content:flex-end;
height:100%}
.track{flex:1;width:100%;display:flex;align-items:flex-end}
.bar{width:100%;background:var(--accent);border-radius:3px 3px 0 0;min-height:1px}
.col .n{font-size:11px;font-variant-numeric:tabular-nums}
.col .m{font-size:11px;color:var(--muted)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
th{font-size:12px;color:var(--muted);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
#rows td{font-size:13px;max-width:300px;overflow:hidden;text-overflow:ellipsis}
#rows td.tok{max-width:250px}
#rows td.tok{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
td.null{color:var(--muted);font-style:italic}
footer{padding:0 24px 16px;color:var(--muted);font-size:12px}
""" + "".join(f".h{i}{{height:{i * 100 // LEVELS}%}}" for i in range(LEVELS + 1))

_TOKEN_COLUMNS = ("masked_ip", "masked_device_id")
_SIDE_BY_SIDE_WIDTH = 120
_SHORT_LABELS = {"device_type": "device", "app_version": "version", "create_date": "date"}

_JS = """
(function () {
  "use strict";
  var updates = 0;
  function byId(id) { return document.getElementById(id); }
  function setText(id, value) { var el = byId(id); if (el) { el.textContent = String(value); } }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }
  function replaceBody(id, fill) {
    var old = byId(id), fresh = document.createElement("tbody");
    fresh.id = id;
    fill(fresh);
    old.parentNode.replaceChild(fresh, old);
  }
  function render(s) {
    setText("generated", s.generated_text);
    ["source", "dlq"].forEach(function (label) {
      var q = s.queues[label];
      if (!q) { return; }
      ["visible", "in_flight", "delayed"].forEach(function (f) {
        setText(label + "-" + f, q[f + "_text"]);
      });
      setText(label + "-name", q.name);
      setText(label + "-error", q.error || "");
    });
    setText("total-rows", s.rows.total_text);
    setText("last-commit", s.last_commit.text);
    setText("window-total", s.throughput.window_text);
    setText("errors", s.errors.join("; "));
    var chart = byId("chart"), cols = document.createElement("div");
    cols.id = "chart";
    cols.className = "chart";
    s.throughput.minutes.forEach(function (m) {
      var col = el("div", null, "col");
      col.title = m.minute + " UTC: " + m.stored + " stored, " + m.duplicate + " duplicate, " +
        m.rejected + " rejected";
      col.appendChild(el("span", m.total, "n"));
      var track = el("div", null, "track");
      track.appendChild(el("div", null, "bar h" + Number(m.level)));
      col.appendChild(track);
      col.appendChild(el("span", m.minute, "m"));
      cols.appendChild(col);
    });
    chart.parentNode.replaceChild(cols, chart);
    replaceBody("reasons", function (body) {
      if (!s.rejections.reasons.length) {
        var tr = el("tr");
        var td = el("td", s.rejections.empty_text, "null");
        td.colSpan = 2;
        tr.appendChild(td);
        body.appendChild(tr);
      }
      s.rejections.reasons.forEach(function (r) {
        var tr = el("tr");
        tr.appendChild(el("td", r.reason));
        tr.appendChild(el("td", r.count, "num"));
        body.appendChild(tr);
      });
    });
    setText("latest-count", s.rows.latest.length);
    replaceBody("rows-body", function (body) {
      s.rows.latest.forEach(function (row) {
        var tr = el("tr");
        row.forEach(function (value, i) {
          var column = s.rows.columns[i];
          var tok = column === "masked_ip" || column === "masked_device_id";
          var td = value === null ? el("td", "null", "null") : el("td", value, tok ? "tok" : "");
          if (value !== null) { td.title = String(value); }
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
    });
  }
  function state(name, text) { var st = byId("state"); st.className = name; st.textContent = text; }
  function refresh() {
    fetch("status.json", { cache: "no-store", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (s) {
        render(s);
        updates += 1;
        document.body.setAttribute("data-updates", String(updates));
        state("live", "live");
      })
      .catch(function () { state("stale", "stale: cannot reach the worker"); });
  }
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_MS))


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CSP = (f"default-src 'none'; script-src {_hash(_JS)}; style-src {_hash(_CSS)}; "
       "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'")


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_html(snapshot: Snapshot) -> str:
    """The whole page, every value escaped; the script then keeps it current from /status.json."""
    data = to_json(snapshot)
    parts = [
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(CSP)}\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta name=\"referrer\" content=\"no-referrer\">",
        "<title>login-etl status</title>",
        f"<style>{_CSS}</style></head><body data-updates=\"0\">",
        "<header><h1>login-etl status</h1>",
        f"<span class=\"meta\">updated <span id=\"generated\">{_e(data['generated_text'])}</span>"
        f" · refreshes every {REFRESH_MS // 1000} s · read-only</span>",
        "<span id=\"state\">loading</span></header><main>",
    ]
    titles = {"source": "Source queue", "dlq": "Dead-letter queue"}
    for label in ("source", "dlq"):
        q = data["queues"][label]
        parts.append(f"<section><h2>{_e(titles[label])}</h2><div class=\"depths\">")
        for f, name in zip(_DEPTH_FIELDS, ("visible", "in flight", "delayed"), strict=True):
            parts.append(f"<div><span class=\"big\" id=\"{label}-{f}\">{_e(q[f + '_text'])}</span>"
                         f"<span class=\"label\">{name}</span></div>")
        parts.append(f"</div><div class=\"qname\" id=\"{label}-name\">{_e(q['name'])}</div>"
                     f"<div class=\"error\" id=\"{label}-error\">{_e(q['error'])}</div></section>")
    parts.append(
        "<section><h2>Stored rows (user_logins)</h2><div class=\"depths\"><div>"
        f"<span class=\"big\" id=\"total-rows\">{_e(data['rows']['total_text'])}</span>"
        "<span class=\"label\">rows stored</span></div></div>"
        "<p class=\"note\">Last successful commit: "
        f"<span id=\"last-commit\">{_e(data['last_commit']['text'])}</span></p>"
        f"<div class=\"error\" id=\"errors\">{_e('; '.join(data['errors']))}</div></section>")
    parts.append(
        "<section class=\"wide2\"><h2>Throughput: messages settled per minute (UTC)</h2>"
        "<div class=\"chart\" id=\"chart\">")
    for m in data["throughput"]["minutes"]:
        tip = (f"{m['minute']} UTC: {m['stored']} stored, {m['duplicate']} duplicate, "
               f"{m['rejected']} rejected")
        parts.append(f"<div class=\"col\" title=\"{_e(tip)}\"><span class=\"n\">{_e(m['total'])}"
                     f"</span><div class=\"track\"><div class=\"bar h{int(m['level'])}\"></div></div>"
                     f"<span class=\"m\">{_e(m['minute'])}</span></div>")
    parts.append(
        f"</div><p class=\"note\"><span id=\"window-total\">{_e(data['throughput']['window_text'])}"
        f"</span>, counted by {_e(data['throughput']['scope'])} (stored + duplicate + rejected)"
        "</p></section>")
    parts.append("<section><h2>Rejections by reason</h2><table><thead><tr><th>reason</th>"
                 "<th class=\"num\">count</th></tr></thead><tbody id=\"reasons\">")
    if not data["rejections"]["reasons"]:
        parts.append(f"<tr><td class=\"null\" colspan=\"2\">"
                     f"{_e(data['rejections']['empty_text'])}</td></tr>")
    for r in data["rejections"]["reasons"]:
        parts.append(f"<tr><td>{_e(r['reason'])}</td><td class=\"num\">{_e(r['count'])}</td></tr>")
    parts.append(
        f"</tbody></table><p class=\"note\">Sent to the DLQ by {_e(data['rejections']['scope'])}"
        " since it started; the dead-letter queue's depth above counts every worker's.</p>"
        "</section>")
    parts.append(
        "<section class=\"wide3\"><h2>Latest <span id=\"latest-count\">"
        f"{len(data['rows']['latest'])}</span> rows of user_logins (ip and device_id masked)</h2>"
        "<table id=\"rows\"><thead><tr>")
    parts.extend(f"<th>{_e(c)}</th>" for c in data["rows"]["columns"])
    parts.append("</tr></thead><tbody id=\"rows-body\">")
    for row in data["rows"]["latest"]:
        parts.append("<tr>")
        for column, value in zip(data["rows"]["columns"], row, strict=True):
            if value is None:
                parts.append("<td class=\"null\">null</td>")
            else:
                cls = " class=\"tok\"" if column in _TOKEN_COLUMNS else ""
                parts.append(f"<td{cls} title=\"{_e(value)}\">{_e(value)}</td>")
        parts.append("</tr>")
    parts.append(
        "</tbody></table></section></main><footer>Counts and masked rows only: message bodies "
        "are never read for this page. Nothing here can change data.</footer>"
        f"<script>{_JS}</script></body></html>\n")
    return "".join(parts)


# -- terminal -----------------------------------------------------------------------------------


def render_rich(snapshot: Snapshot, width: int | None = None) -> Any:
    """The same view for `login-etl status`; values are rich Text, so markup in data stays text.

    Given the terminal's width, the two token columns give way first (cut with an ellipsis,
    or left out when even 12 characters each do not fit, as at 80 columns): they are the least
    readable anyway, and every other cell then stays whole on one line. Below 120 columns the
    three small tables are stacked instead of side by side.
    """
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    data = to_json(snapshot)
    header = Text.assemble(("login-etl status", "bold"), "  updated ",
                           data["generated_text"], "  ·  last commit: ",
                           data["last_commit"]["text"])
    if snapshot.errors:
        header.append("\n" + "; ".join(snapshot.errors), style="red")

    queues = Table(title="Queues", box=box.SIMPLE_HEAD, title_justify="left")
    queues.add_column("queue")
    for name in ("visible", "in flight", "delayed"):
        queues.add_column(name, justify="right")
    for label in ("source", "dlq"):
        q = data["queues"][label]
        queues.add_row(Text(label), *(Text(q[f + "_text"]) for f in _DEPTH_FIELDS))

    through = Table(title="Settled per minute (UTC)", box=box.SIMPLE_HEAD, title_justify="left")
    through.add_column("minute")
    through.add_column("settled", justify="right")
    through.add_column("", min_width=20)
    peak = max((m["total"] for m in data["throughput"]["minutes"]), default=0)
    for m in data["throughput"]["minutes"]:
        bar = "█" * (0 if not peak else max(1 if m["total"] else 0, round(20 * m["total"] / peak)))
        through.add_row(Text(m["minute"]), Text(str(m["total"])), Text(bar, style="blue"))

    reasons = Table(title="Rejections by reason", box=box.SIMPLE_HEAD, title_justify="left",
                    caption=Text(f"counted by {data['rejections']['scope']}"),
                    caption_justify="left")
    reasons.add_column("reason")
    reasons.add_column("count", justify="right")
    for r in data["rejections"]["reasons"]:
        reasons.add_row(Text(r["reason"]), Text(str(r["count"])))
    if not data["rejections"]["reasons"]:
        reasons.add_row(Text(data["rejections"]["empty_text"], style="dim"), Text(""))

    narrow = width is not None and width < _SIDE_BY_SIDE_WIDTH
    if narrow:
        top: Any = Group(queues, through, reasons)
    else:
        top = Table.grid(padding=(0, 4))
        top.add_row(queues, through, reasons)

    rows = Table(title=f"user_logins: {data['rows']['total_text'].replace(',', '')} rows, "
                 f"latest {len(snapshot.rows)}", box=box.SIMPLE_HEAD, title_justify="left",
                 pad_edge=False, collapse_padding=True)
    labels = {c: _SHORT_LABELS.get(c, c) if narrow else c for c in snapshot.columns}
    natural = {c: max([len(labels[c]), *(len(r[i] or "null") for r in snapshot.rows)])
               for i, c in enumerate(snapshot.columns)}
    token_width: int | None = None
    shown = list(range(len(snapshot.columns)))
    if width is not None:
        others = sum(w + 3 for c, w in natural.items() if c not in _TOKEN_COLUMNS)
        token_width = (width - others - 6) // 2  # 3 per column: padding and separator
        if token_width < 12:  # "h1.<key id>." and a few characters: still tells keys apart
            shown = [i for i, c in enumerate(snapshot.columns) if c not in _TOKEN_COLUMNS]
            rows.caption = Text(f"{' and '.join(_TOKEN_COLUMNS)} left out at {width} columns",
                                style="dim")
            rows.caption_justify = "left"
    for i in shown:
        column = snapshot.columns[i]
        if column in _TOKEN_COLUMNS:
            rows.add_column(labels[column], no_wrap=True, overflow="ellipsis",
                            max_width=token_width)
        elif column == "user_id":  # an id cut in two is unreadable: the others give way
            rows.add_column(labels[column], no_wrap=True, min_width=min(natural[column], 64))
        else:
            rows.add_column(labels[column], overflow="fold")
    for row in snapshot.rows:
        rows.add_row(*(Text("null", style="dim italic") if row[i] is None else Text(row[i])
                       for i in shown))
    return Group(header, top, rows)
