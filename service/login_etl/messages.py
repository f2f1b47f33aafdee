"""Parse and validate one raw SQS message into a masked LoginEvent or a Rejection.

Every message gets exactly one outcome (the Powertools idea of one result per record):
nothing here raises for bad input, and a Rejection carries a short bounded reason code,
never the offending value.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, NamedTuple

from login_etl import jsonread
from login_etl.masking import Masker, VersionError, encode_version, normalise_ip

# Column limits of the existing user_logins table, in characters as varchar counts them.
COLUMN_LIMITS: Final = {"user_id": 128, "device_type": 32, "locale": 32}
DEVICE_ID_MAX: Final = 128


@dataclass(frozen=True, slots=True)
class Received:
    """What the worker holds of one SQS message; the body stays untouched for the DLQ."""

    message_id: str
    receipt_handle: str
    body: str
    sent_timestamp_ms: int
    receive_count: int = 1
    # On a DLQ message: the ledger id it was rejected under (sealed), so a redrive of any of
    # its copies files it under that one id.
    origin: str | None = None
    # Ledger days (days since 1970-01-01, UTC) carried by sealed marks: on a redriven copy the
    # day of the message it stands for; on a DLQ hand-off the day its origin was filed under.
    redrive_day: int | None = None
    origin_day: int | None = None
    # On a FIFO queue: the message's group, kept by its DLQ hand-off and redriven copy.
    group_id: str | None = None

    @property
    def day(self) -> int:
        """The ledger day every copy of this message agrees on (ledger.py)."""
        if self.redrive_day is not None:
            return self.redrive_day
        return self.sent_timestamp_ms // 86_400_000


class LoginEvent(NamedTuple):
    """A row for user_logins, already masked: from here on no raw PII exists.

    A NamedTuple, not a frozen dataclass: built once per message on the hot path, where a
    tuple is much cheaper to construct. Build it with login_event(), which also encodes `line`.
    """

    message_id: str
    user_id: str
    device_type: str
    masked_ip: str
    masked_device_id: str
    locale: str | None
    app_version: int
    create_date: date
    # The row as one line of COPY text format, its columns in COLUMNS order. Encoded where
    # the event is parsed (a poller), so the settler, whose Python time sits between Postgres
    # round trips and delays every commit, only joins lines.
    line: str

    def row(self) -> tuple[Any, ...]:
        """The values of the row, in COLUMNS order."""
        return self[1:-1]


# The columns of user_logins, in the table's order: LoginEvent's fields between message_id
# and line. store's COPY and SELECT statements name them from here.
COLUMNS: Final = LoginEvent._fields[1:-1]


# COPY text format: these four characters are the only ones a value must escape (NUL never
# gets this far: parsing rejects it); \N is NULL.
_COPY_SPECIAL: Final = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_value(value: str | None) -> str:
    """One value in COPY text format."""
    if value is None:
        return "\\N"
    return value.translate(_COPY_ESCAPES) if _COPY_SPECIAL.search(value) else value


def login_event(message_id: str, user_id: str, device_type: str, masked_ip: str,
                masked_device_id: str, locale: str | None, app_version: int,
                create_date: date) -> LoginEvent:
    """A LoginEvent with its COPY line; free text is escaped, tokens never need it (ASCII
    "h1."/"s1." + key id + base64url)."""
    # The fields in LoginEvent's (and so COLUMNS') order, spelt out rather than looped over
    # by name: this runs once per message on the hot path.
    line = "\t".join((copy_value(user_id), copy_value(device_type), masked_ip,
                      masked_device_id, copy_value(locale), str(app_version),
                      create_date.isoformat()))
    return LoginEvent(message_id, user_id, device_type, masked_ip, masked_device_id, locale,
                      app_version, create_date, line + "\n")


@dataclass(frozen=True, slots=True)
class Rejection:
    message_id: str
    reason: str


def sent_date(sent_timestamp_ms: int) -> date:
    # UTC days are exactly 86,400,000 ms long, so the day number decides the date: cached.
    return _utc_day(sent_timestamp_ms // 86_400_000)


@functools.lru_cache(maxsize=16)
def _utc_day(day: int) -> date:
    return datetime.fromtimestamp(day * 86_400, UTC).date()


def _optional_text(obj: dict[str, Any], name: str, limit: int) -> str | None:
    return None if obj.get(name) is None else _text(obj, name, limit, allow_blank=True)


def _text(obj: dict[str, Any], name: str, limit: int, *, allow_blank: bool = False) -> str:
    """The value of a text field, or raise _Bad with the reason code."""
    value = obj.get(name)
    # Fast path for the usual value (ASCII, within the limit, no NUL, not blank): it passes
    # every check below, so the outcome is the same; anything else takes the full sequence.
    if (type(value) is str and len(value) <= limit and value.isascii()
            and "\x00" not in value and (allow_blank or (value and not value.isspace()))):
        return value
    if value is None:
        raise _Bad(f"missing_field:{name}")
    if not isinstance(value, str):
        raise _Bad(f"wrong_type:{name}")
    if not allow_blank and not value.strip():
        raise _Bad(f"empty_field:{name}")
    if len(value) > limit:
        raise _Bad(f"too_long:{name}")
    if "\x00" in value:
        raise _Bad(f"nul_character:{name}")
    if not value.isascii():
        # JSON may carry a lone surrogate ("\ud800"): neither maskable nor storable as UTF-8.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(f"invalid_unicode:{name}") from None
    return value


def load_json(body: str) -> Any:
    """json.loads's outcome (jsonread), a body it refuses or nests too deep for it invalid_json."""
    try:
        return jsonread.loads(body)
    except (ValueError, RecursionError):
        raise _Bad("invalid_json") from None


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def parse(message: Received, masker: Masker, envelopes: bool = True) -> LoginEvent | Rejection:
    """envelopes: a body that is an SNS notification or an EventBridge event is unwrapped and
    its inner event validated (LOGIN_ETL_ENVELOPES=auto); off, every body is the event itself."""
    try:
        return _parse(message, masker, envelopes)
    except _Bad as bad:
        return Rejection(message.message_id, bad.reason)
    except Exception:
        # A body that trips a bug of ours must not kill the poller nor loop forever: it goes to
        # the DLQ intact (redrive it after the fix) and the reason says whose fault it is.
        return Rejection(message.message_id, "internal_error")


def _parse(message: Received, masker: Masker, envelopes: bool) -> LoginEvent:
    obj = load_json(message.body)
    if not isinstance(obj, dict):
        raise _Bad("not_object")
    # A raw event has a user_id: that one lookup is all an envelope costs the usual body.
    if envelopes and "user_id" not in obj:
        obj = _unwrap(obj)
    user_id = _text(obj, "user_id", COLUMN_LIMITS["user_id"])
    device_type = _text(obj, "device_type", COLUMN_LIMITS["device_type"])
    locale = _optional_text(obj, "locale", COLUMN_LIMITS["locale"])
    device_id = _text(obj, "device_id", DEVICE_ID_MAX)
    raw_ip = _text(obj, "ip", 64)
    version = _text(obj, "app_version", 32)
    ip = normalise_ip(raw_ip)
    if ip is None:
        raise _Bad("invalid_ip")
    try:
        app_version = encode_version(version)
    except VersionError as exc:
        raise _Bad(exc.reason) from None
    device_id = device_id.strip()
    if not masker.fits(device_id):
        raise _Bad("too_long:device_id")
    return login_event(
        message.message_id, user_id, device_type, masker.mask("ip", ip),
        masker.mask("device_id", device_id), locale, app_version,
        sent_date(message.sent_timestamp_ms),
    )


# What an SNS notification (raw message delivery off) and an EventBridge event carry, besides
# the event itself, as SNS and EventBridge write them.
_SNS_TEXT: Final = ("Type", "MessageId", "TopicArn", "Message", "Timestamp")
_EVENTBRIDGE_TEXT: Final = ("version", "id", "detail-type", "source", "time")


def _unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    """The event inside an SNS or EventBridge envelope; any other object as it is.

    An envelope is producer input like any body and adds no trust: nothing in it is verified
    (SNS signatures are not), nothing of it is used but the inner event (not its ids: the
    ledger keeps the SQS message id; not its time: create_date is the SQS SentTimestamp's).
    One level only: an envelope inside an envelope is an event without a user_id.
    """
    if "TopicArn" in obj:
        if obj.get("Type") != "Notification" or not _texts(obj, _SNS_TEXT):
            raise _Bad("invalid_envelope")
        inner = load_json(obj["Message"])
    elif "detail-type" in obj:
        if not _texts(obj, _EVENTBRIDGE_TEXT):
            raise _Bad("invalid_envelope")
        inner = obj.get("detail")
        if not isinstance(inner, dict):
            raise _Bad("invalid_envelope")
    else:
        return obj
    if not isinstance(inner, dict):
        raise _Bad("not_object")
    return inner


def _texts(obj: dict[str, Any], names: tuple[str, ...]) -> bool:
    return all(type(obj.get(name)) is str for name in names)
