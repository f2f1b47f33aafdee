"""All configuration, read from the environment (prefix LOGIN_ETL_) and validated once at start.

Anything wrong raises ConfigError with one line that names the variable and never echoes a
secret; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

PREFIX = "LOGIN_ETL_"
DEFAULT_QUEUE_URL = "http://localhost:4566/000000000000/login-queue"
DEFAULT_DATABASE_URL = "postgresql://postgres:postgres@localhost:5432/postgres"
MIN_KEY_BYTES = 32
LOG_LEVELS = ("debug", "info", "warning", "error")
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one line, safe to print."""


@dataclass(frozen=True)
class MaskingKey:
    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Settings:
    queue_url: str = DEFAULT_QUEUE_URL
    dlq_url: str | None = None
    database_url: str = DEFAULT_DATABASE_URL
    masking_keys: tuple[MaskingKey, ...] = ()
    masking_mode: str = "hmac"
    # auto: SNS notifications and EventBridge events are unwrapped; none: bodies are events.
    envelopes: str = "auto"
    # Throughput does not decide these (the queue is the limit), latency does: a short window
    # keeps the time from send to commit low at moderate rates, 500 caps a transaction at high
    # rates, and 4 pollers (and settlers) keep a real SQS endpoint's round trips overlapped.
    # docs/performance.md ("Why the defaults") has the measurements.
    batch_size: int = 500
    batch_window_ms: int = 100
    pollers: int = 4
    wait_time_seconds: int = 20
    visibility_timeout: int = 60
    http_port: int = 8000
    log_format: str = "json"
    log_level: str = "info"
    shutdown_timeout: float = 25.0
    # Days a ledger day is kept after its own; 0: the queue's MessageRetentionPeriod + 1 day.
    ledger_retention_days: int = 0
    pool_size: int = 0
    # Set per transaction (PgBouncer in transaction mode keeps no session settings).
    statement_timeout_ms: int = 30_000
    lock_timeout_ms: int = 10_000
    idle_in_transaction_timeout_ms: int = 60_000
    # What the AWS_* environment said, if anything: otherwise region and endpoint follow the
    # queue URL (see the properties), also when --queue-url replaces it.
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    # "boto3": the plain boto3 client instead of login_etl.sqs.
    sqs_client: str = "lean"

    @property
    def region(self) -> str:
        return self.aws_region or _region_of(self.queue_url)

    @property
    def endpoint_url(self) -> str | None:
        return self.aws_endpoint_url or _endpoint_of(self.queue_url)

    @property
    def writing_key(self) -> MaskingKey:
        if not self.masking_keys:
            raise ConfigError(
                "LOGIN_ETL_MASKING_KEY (or _FILE, or LOGIN_ETL_MASKING_KEYS) is required; "
                "`login-etl keygen` prints one"
            )
        return self.masking_keys[0]

    @property
    def db_pool_size(self) -> int:
        return self.pool_size or 2

    def with_overrides(self, **changes: Any) -> Settings:
        """Apply CLI flags (None means "not given") and re-check the result."""
        given = {k: v for k, v in changes.items() if v is not None}
        updated = replace(self, **given)
        updated.check()
        return updated

    def check(self) -> None:
        _positive("BATCH_SIZE", self.batch_size, 1, 10_000)
        _positive("BATCH_WINDOW_MS", self.batch_window_ms, 0, 60_000)
        _positive("POLLERS", self.pollers, 1, 64)
        _positive("WAIT_TIME_SECONDS", self.wait_time_seconds, 0, 20)
        _positive("VISIBILITY_TIMEOUT", self.visibility_timeout, 5, 43_200)
        _positive("HTTP_PORT", self.http_port, 0, 65_535)
        _positive("LEDGER_RETENTION_DAYS", self.ledger_retention_days, 0, 3650)
        _positive("STATEMENT_TIMEOUT_MS", self.statement_timeout_ms, 10, 3_600_000)
        _positive("LOCK_TIMEOUT_MS", self.lock_timeout_ms, 10, 3_600_000)
        _positive("IDLE_IN_TRANSACTION_TIMEOUT_MS", self.idle_in_transaction_timeout_ms, 10,
                  3_600_000)
        if self.lock_timeout_ms > self.statement_timeout_ms:
            raise ConfigError(f"{PREFIX}LOCK_TIMEOUT_MS ({self.lock_timeout_ms}) must not exceed "
                              f"{PREFIX}STATEMENT_TIMEOUT_MS ({self.statement_timeout_ms})")
        if not 0 < self.shutdown_timeout <= 3600:
            raise ConfigError(f"{PREFIX}SHUTDOWN_TIMEOUT must be in (0, 3600] seconds")
        if self.envelopes not in ("auto", "none"):
            raise ConfigError(f"{PREFIX}ENVELOPES must be 'auto' or 'none', got {self.envelopes!r}")
        if self.masking_mode not in ("hmac", "siv"):
            raise ConfigError(f"{PREFIX}MASKING_MODE must be 'hmac' or 'siv', got {self.masking_mode!r}")
        # psycopg's message would repeat the string, password included: it is not shown.
        try:
            conninfo_to_dict(self.database_url)
        except psycopg.ProgrammingError:
            raise ConfigError(f"{PREFIX}DATABASE_URL is not a PostgreSQL URL or connection "
                              "string (postgresql://user@host:5432/db)") from None
        if self.sqs_client not in ("lean", "boto3"):
            raise ConfigError(f"{PREFIX}SQS_CLIENT must be 'lean' or 'boto3', got {self.sqs_client!r}")
        if self.log_format not in ("json", "console"):
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be 'json' or 'console'")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"{PREFIX}LOG_LEVEL must be one of {', '.join(LOG_LEVELS)},"
                              f" got {self.log_level!r}")
        for name, url in (("QUEUE_URL", self.queue_url), ("DLQ_URL", self.dlq_url)):
            if url is not None:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.netloc or parts.path in ("", "/"):
                    raise ConfigError(f"{PREFIX}{name} must be an http(s) queue URL, got {url!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        queue_url = get("QUEUE_URL") or DEFAULT_QUEUE_URL
        log_format = get("LOG_FORMAT") or ("console" if os.isatty(2) else "json")
        settings = cls(
            queue_url=queue_url,
            dlq_url=get("DLQ_URL"),
            database_url=get("DATABASE_URL") or _file_value(env, "DATABASE_URL") or DEFAULT_DATABASE_URL,
            masking_keys=_read_keys(env),
            masking_mode=(get("MASKING_MODE") or "hmac").lower(),
            envelopes=(get("ENVELOPES") or "auto").lower(),
            batch_size=_int(get, "BATCH_SIZE", cls.batch_size),
            batch_window_ms=_int(get, "BATCH_WINDOW_MS", cls.batch_window_ms),
            pollers=_int(get, "POLLERS", cls.pollers),
            wait_time_seconds=_int(get, "WAIT_TIME_SECONDS", cls.wait_time_seconds),
            visibility_timeout=_int(get, "VISIBILITY_TIMEOUT", cls.visibility_timeout),
            http_port=_int(get, "HTTP_PORT", cls.http_port),
            log_format=log_format.lower(),
            log_level=(get("LOG_LEVEL") or "info").lower(),
            shutdown_timeout=_float(get, "SHUTDOWN_TIMEOUT", cls.shutdown_timeout),
            ledger_retention_days=_int(get, "LEDGER_RETENTION_DAYS", cls.ledger_retention_days),
            pool_size=_int(get, "DB_POOL_SIZE", 0),
            statement_timeout_ms=_int(get, "STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms),
            lock_timeout_ms=_int(get, "LOCK_TIMEOUT_MS", cls.lock_timeout_ms),
            idle_in_transaction_timeout_ms=_int(get, "IDLE_IN_TRANSACTION_TIMEOUT_MS",
                                                cls.idle_in_transaction_timeout_ms),
            sqs_client=(get("SQS_CLIENT") or "lean").lower(),
            aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL_SQS") or env.get("AWS_ENDPOINT_URL") or None,
        )
        settings.check()
        return settings


def _int(get: Any, name: str, default: int) -> int:
    raw = get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name} must be an integer, got {raw!r}") from None


def _float(get: Any, name: str, default: float) -> float:
    raw = get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name} must be a number, got {raw!r}") from None


def _positive(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{PREFIX}{name} must be between {low} and {high}, got {value}")


def _file_value(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(f"{PREFIX}{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{PREFIX}{name}_FILE: cannot read {path}: {exc.strerror}") from None


def _endpoint_of(queue_url: str) -> str | None:
    """A queue on a non-AWS host (LocalStack, ElasticMQ) is also the SQS endpoint."""
    parts = urlsplit(queue_url)
    if parts.hostname and not parts.hostname.endswith("amazonaws.com"):
        return f"{parts.scheme}://{parts.netloc}"
    return None


def _region_of(queue_url: str) -> str:
    host = urlsplit(queue_url).hostname or ""
    match = re.match(r"^sqs\.([a-z0-9-]+)\.amazonaws\.com", host)
    return match.group(1) if match else "us-east-1"


def parse_secret(text: str, where: str) -> bytes:
    """Hex (64+ digits) or `base64:...`; at least 32 bytes either way."""
    text = text.strip()
    try:
        if text.startswith("base64:"):
            secret = base64.b64decode(text[7:], validate=True)
        else:
            secret = bytes.fromhex(text)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{where} must be hex (64+ hex characters) or base64:<data>; it is neither"
        ) from None
    if len(secret) < MIN_KEY_BYTES:
        raise ConfigError(f"{where} is {len(secret)} bytes; at least {MIN_KEY_BYTES} are required")
    return secret


def derived_key_id(secret: bytes) -> str:
    """A stable short id for a key given without one, so tokens still name their key."""
    return hmac.new(secret, b"login-etl key id", hashlib.sha256).hexdigest()[:8]


def _read_keys(env: Mapping[str, str]) -> tuple[MaskingKey, ...]:
    """LOGIN_ETL_MASKING_KEYS (`[id:]secret,...`, first writes) or one LOGIN_ETL_MASKING_KEY.

    An entry without an id gets the id a single MASKING_KEY would have had, so rotating from
    MASKING_KEY=A to MASKING_KEYS=new:B,A keeps A's old tokens openable under their old id.
    """
    many = _key_source(env, "MASKING_KEYS")
    one = _key_source(env, "MASKING_KEY")
    if many is not None and one is not None:
        raise ConfigError(f"set {PREFIX}MASKING_KEYS or {PREFIX}MASKING_KEY (or their _FILE), "
                          "not both: list every key in MASKING_KEYS, the writing key first")
    if many is not None:
        keys: list[MaskingKey] = []
        for position, entry in enumerate(re.split(r"[,\n]", many), start=1):
            entry = entry.strip()
            if not entry:
                continue
            key_id, sep, secret = entry.partition(":")
            # A bare secret: hex, or base64:<data>; its id is derived from the key.
            if not sep or key_id == "base64":
                where = f"{PREFIX}MASKING_KEYS entry {position}"
                parsed = parse_secret(entry, where)
                key_id = derived_key_id(parsed)
            elif not _KEY_ID.match(key_id):
                raise ConfigError(
                    f"{PREFIX}MASKING_KEYS entry {position} must be [<id>:]<secret> with an id of "
                    "1-16 letters, digits, '-' or '_'"
                )
            else:
                parsed = parse_secret(secret, f"{PREFIX}MASKING_KEYS[{key_id}]")
            if any(k.key_id == key_id for k in keys):
                raise ConfigError(f"{PREFIX}MASKING_KEYS names key id {key_id!r} twice")
            keys.append(MaskingKey(key_id, parsed))
        if not keys:
            raise ConfigError(f"{PREFIX}MASKING_KEYS is set but lists no key")
        return tuple(keys)
    if one is not None:
        secret = parse_secret(one, f"{PREFIX}MASKING_KEY")
        return (MaskingKey(derived_key_id(secret), secret),)
    return ()


def _key_source(env: Mapping[str, str], name: str) -> str | None:
    """The variable, else its _FILE; None when neither is set; an empty file is an error."""
    value = env.get(PREFIX + name)
    if value is not None and value.strip():
        if env.get(f"{PREFIX}{name}_FILE"):
            raise ConfigError(f"set {PREFIX}{name} or {PREFIX}{name}_FILE, not both")
        return value
    from_file = _file_value(env, name)
    if from_file is None:
        return None
    if not from_file:
        raise ConfigError(f"{PREFIX}{name}_FILE ({env[PREFIX + name + '_FILE']}) is empty")
    return from_file
