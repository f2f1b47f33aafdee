"""The terminal view of `login-etl status [--watch]`, rendered with rich.

rich is imported when a view is drawn, not with this module: the worker serves the page and
never draws in a terminal.
"""

from __future__ import annotations

from typing import Any

from login_etl.statuspage.format import TOKEN_COLUMNS
from login_etl.statuspage.snapshot import DEPTH_FIELDS, Snapshot
from login_etl.statuspage.view import to_json

# Below this width the three small tables are stacked instead of side by side.
SIDE_BY_SIDE_WIDTH = 120
SHORT_LABELS = {"device_type": "device", "app_version": "version", "create_date": "date"}


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

    def cell(value: str | None) -> Text:
        return Text("null", style="dim italic") if value is None else Text(value)

    data = to_json(snapshot)
    header = Text.assemble(("login-etl status", "bold"), "  updated ",
                           data["generated_text"], "  ·  last commit: ",
                           data["last_commit"]["text"], "\nfreshness: ",
                           data["freshness"]["text"])
    if snapshot.errors:
        header.append("\n" + "; ".join(snapshot.errors), style="red")

    queues = Table(title="Queues", box=box.SIMPLE_HEAD, title_justify="left")
    queues.add_column("queue")
    for name in ("visible", "in flight", "delayed"):
        queues.add_column(name, justify="right")
    for label in ("source", "dlq"):
        q = data["queues"][label]
        queues.add_row(Text(label), *(Text(q[f + "_text"]) for f in DEPTH_FIELDS))

    through = Table(title="Settled per minute (UTC)", box=box.SIMPLE_HEAD, title_justify="left")
    through.add_column("minute")
    through.add_column("settled", justify="right")
    through.add_column("", min_width=20)
    peak = max((m["total"] for m in data["throughput"]["minutes"]), default=0)
    for m in data["throughput"]["minutes"]:
        bar = "█" * (0 if not peak else max(1 if m["total"] else 0, round(20 * m["total"] / peak)))
        through.add_row(Text(m["minute"]), Text(str(m["total"])), Text(bar, style="blue"))
    if not data["throughput"]["available"]:
        through.add_row(Text(data["throughput"]["window_text"], style="dim"), Text(""), Text(""))

    reasons = Table(title="Rejections by reason", box=box.SIMPLE_HEAD, title_justify="left",
                    caption=Text(f"counted by {data['rejections']['scope']}"),
                    caption_justify="left")
    reasons.add_column("reason")
    reasons.add_column("count", justify="right")
    for r in data["rejections"]["reasons"]:
        reasons.add_row(Text(r["reason"]), Text(str(r["count"])))
    if not data["rejections"]["reasons"]:
        reasons.add_row(Text(data["rejections"]["empty_text"], style="dim"), Text(""))

    narrow = width is not None and width < SIDE_BY_SIDE_WIDTH
    if narrow:
        top: Any = Group(queues, through, reasons)
    else:
        top = Table.grid(padding=(0, 4))
        top.add_row(queues, through, reasons)

    rows = Table(title=f"user_logins: {data['rows']['total_text'].replace(',', '')} rows, "
                 f"latest {len(snapshot.rows)}", box=box.SIMPLE_HEAD, title_justify="left",
                 pad_edge=False, collapse_padding=True)
    labels = {c: SHORT_LABELS.get(c, c) if narrow else c for c in snapshot.columns}
    natural = {c: max([len(labels[c]), *(len(r[i] or "null") for r in snapshot.rows)])
               for i, c in enumerate(snapshot.columns)}
    token_width: int | None = None
    shown = list(range(len(snapshot.columns)))
    if width is not None:
        others = sum(w + 3 for c, w in natural.items() if c not in TOKEN_COLUMNS)
        # Each column costs 3 characters more than its text: padding and separator.
        token_width = (width - others - 6) // 2
        # 12 characters show "h1.<key id>." and a few more: enough to tell keys apart.
        if token_width < 12:
            shown = [i for i, c in enumerate(snapshot.columns) if c not in TOKEN_COLUMNS]
            rows.caption = Text(f"{' and '.join(TOKEN_COLUMNS)} left out at {width} columns",
                                style="dim")
            rows.caption_justify = "left"
    for i in shown:
        column = snapshot.columns[i]
        if column in TOKEN_COLUMNS:
            rows.add_column(labels[column], no_wrap=True, overflow="ellipsis",
                            max_width=token_width)
        elif column == "user_id":
            # An id cut in two is unreadable: the other columns give way instead.
            rows.add_column(labels[column], no_wrap=True, min_width=min(natural[column], 64))
        else:
            rows.add_column(labels[column], overflow="fold")
    for row in snapshot.rows:
        rows.add_row(*(cell(row[i]) for i in shown))
    return Group(header, top, rows)
