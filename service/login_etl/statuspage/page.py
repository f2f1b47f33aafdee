"""The HTML page (`/`) and its data (`/status.json`): the one place the page is rendered.

The server renders every value, HTML-escaped; the page's script (page.js) refreshes by
fetching the page again and swapping in its updated parts, so the layout is written once
and the script never turns data into markup. Style and script are package files whose
hashes, computed when this module loads, are the only ones the Content-Security-Policy admits.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from login_etl.statuspage.format import TOKEN_COLUMNS
from login_etl.statuspage.snapshot import DEPTH_FIELDS, Snapshot, Snapshots
from login_etl.statuspage.view import to_json

REFRESH_MS = 3000

Route = Callable[[], tuple[int, str, bytes]]


def _package_text(name: str) -> str:
    return resources.files("login_etl.statuspage").joinpath(name).read_text(encoding="utf-8")


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


CSS = _package_text("page.css")
JS = _package_text("page.js")
CSP = (f"default-src 'none'; script-src {_hash(JS)}; style-src {_hash(CSS)}; "
       "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'")


class StatusPage(Snapshots):
    """The snapshots served over the worker's HTTP port."""

    def routes(self) -> dict[str, Route]:
        def page() -> tuple[int, str, bytes]:
            return 200, "text/html; charset=utf-8", render_html(self.snapshot()).encode()

        def data() -> tuple[int, str, bytes]:
            return 200, "application/json", json.dumps(to_json(self.snapshot())).encode()

        return {"/": page, "/status.json": data}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def render_html(snapshot: Snapshot) -> str:
    """The whole page, every value escaped."""
    data = to_json(snapshot)
    parts = [
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_e(CSP)}\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<meta name=\"referrer\" content=\"no-referrer\">",
        "<title>login-etl status</title>",
        f"<style>{CSS}</style></head>",
        f"<body data-updates=\"0\" data-refresh-ms=\"{REFRESH_MS}\">",
        "<header><h1>login-etl status</h1>",
        f"<span class=\"meta\">updated <span id=\"generated\">{_e(data['generated_text'])}</span>"
        f" · refreshes every {REFRESH_MS // 1000} s · read-only</span>",
        "<span id=\"state\">loading</span></header><main>",
    ]
    titles = {"source": "Source queue", "dlq": "Dead-letter queue"}
    for label in ("source", "dlq"):
        q = data["queues"][label]
        parts.append(f"<section><h2>{_e(titles[label])}</h2><div class=\"depths\">")
        for f, name in zip(DEPTH_FIELDS, ("visible", "in flight", "delayed"), strict=True):
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
        "<p class=\"note\">Freshness (sent to committed): "
        f"<span id=\"freshness\">{_e(data['freshness']['text'])}</span></p>"
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
                cls = " class=\"tok\"" if column in TOKEN_COLUMNS else ""
                parts.append(f"<td{cls} title=\"{_e(value)}\">{_e(value)}</td>")
        parts.append("</tr>")
    parts.append(
        "</tbody></table></section></main><footer>Counts and masked rows only: message bodies "
        "are never read for this page. Nothing here can change data.</footer>"
        f"<script>{JS}</script></body></html>\n")
    return "".join(parts)
