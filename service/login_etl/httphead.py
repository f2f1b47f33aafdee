"""The HTTP port's wire rules: a request head taken off a connection's buffer and checked, and
an answer's bytes.

Kept apart from the selector loop (http.py) so that what the port accepts is read in one place.
A head over MAX_HEAD_BYTES, a malformed header line, and repeated or conflicting framing
headers (Content-Length, Transfer-Encoding) are refused: a proxy in front could read such a
head otherwise and hide a request in another one's body.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

MAX_HEAD_BYTES = 16_384
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FRAMING = ("content-length", "transfer-encoding")


@dataclass(frozen=True, slots=True)
class Request:
    """A request head that can be answered: its method, its path (query cut) and whether the
    connection stays open after the answer."""

    method: str
    path: str
    keep_alive: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """A head that is answered with an error and a close."""

    status: int
    error: str


def take(inbuf: bytearray) -> Request | Refused | None:
    """Take the first request head off the buffer; None while no whole head is there yet."""
    # Searched within the head limit only: the limit holds however much is buffered.
    end = inbuf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    size = 4
    bare = inbuf.find(b"\n\n", 0, MAX_HEAD_BYTES + 2)
    if bare >= 0 and (end < 0 or bare < end):
        end, size = bare, 2
    if end < 0 or end + size > MAX_HEAD_BYTES:
        if end < 0 and len(inbuf) <= MAX_HEAD_BYTES:
            return None
        return Refused(431, "request head too large")
    head = bytes(inbuf[:end]).decode("latin-1")
    del inbuf[:end + size]
    request_line, *header_lines = head.lstrip("\r\n").split("\n")
    parts = request_line.strip().split(" ")
    found = fields(header_lines)
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or found is None:
        return Refused(400, "bad request")
    method, target, version = parts
    tokens = {t.strip() for t in found.get("connection", "").split(",")}
    keep_alive = "close" not in tokens and (version != "HTTP/1.0" or "keep-alive" in tokens)
    if found.get("content-length", "0") != "0" or "transfer-encoding" in found:
        # A request body is never read: answering and closing keeps the framing honest.
        keep_alive = False
    return Request(method, target.split("?", 1)[0], keep_alive)


def fields(lines: list[str]) -> dict[str, str] | None:
    """Header fields, names lowercased, values stripped and lowercased; None for a head that
    cannot be framed for sure: a line that is not `token: value` (a space before the colon,
    obsolete folding), a framing header repeated or both at once, a Content-Length that is
    not plain digits."""
    found: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.rstrip("\r").partition(":")
        key = name.lower()
        if not sep or not _is_token(name) or (key in _FRAMING and key in found):
            return None
        found[key] = value.strip().lower()
    length = found.get("content-length")
    if length is not None and ("transfer-encoding" in found or not (
            0 < len(length) <= 10 and length.isascii() and length.isdigit())):
        return None
    return found


def _is_token(name: str) -> bool:
    return bool(name) and name.isascii() and not name.encode("ascii").translate(None, _TOKEN)


def answer(status: int, content_type: str, body: bytes, *, head: bool, keep_alive: bool,
           extra: dict[str, str] | None = None) -> bytes:
    """The answer's bytes: its head, and its body unless the request was HEAD."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    lines = [f"HTTP/1.1 {status} {phrase}",
             "Server: login-etl",
             f"Date: {formatdate(usegmt=True)}",
             f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}",
             "Cache-Control: no-store",
             "X-Content-Type-Options: nosniff",
             f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head else body)
