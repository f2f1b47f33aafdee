"""Wording shared by the JSON view, the page and the terminal: times, counts, bar heights."""

from __future__ import annotations

import datetime as dt

# Bar heights are CSS classes h0..h20 rather than inline styles, so the CSP can stay strict.
LEVELS = 20
TOKEN_COLUMNS = ("masked_ip", "masked_device_id")


def utc(ts: float, fmt: str = "%H:%M:%S") -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt)


def ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 5400:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def number(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def level(value: int, peak: int) -> int:
    """A bar's height in LEVELS steps; any non-zero count shows at least one step."""
    return 0 if peak <= 0 else max(1 if value else 0, round(LEVELS * value / peak))
