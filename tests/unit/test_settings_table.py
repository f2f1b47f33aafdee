"""Every variable read, every bound at both edges, every key-list spelling.

A misspelt variable name in settings.py would silently leave the default in force (the queue,
the database, the port of another environment): each name is set here and must take effect.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from login_etl.settings import (
    DEFAULT_DATABASE_URL,
    DEFAULT_QUEUE_URL,
    MIN_KEY_BYTES,
    ConfigError,
    MaskingKey,
    Settings,
    derived_key_id,
    parse_secret,
)

A, B = bytes(range(32)), bytes(range(50, 82))
HEX_A, HEX_B = A.hex(), B.hex()

# (variable, value, attribute, what the attribute becomes); every value differs from the default.
VARIABLES: list[tuple[str, str, str, Any]] = [
    ("LOGIN_ETL_QUEUE_URL", "http://127.0.0.1:9324/000000000000/q", "queue_url",
     "http://127.0.0.1:9324/000000000000/q"),
    ("LOGIN_ETL_DLQ_URL", "http://127.0.0.1:9324/000000000000/q-dlq", "dlq_url",
     "http://127.0.0.1:9324/000000000000/q-dlq"),
    ("LOGIN_ETL_DATABASE_URL", "postgresql://etl@db.internal:6432/logins", "database_url",
     "postgresql://etl@db.internal:6432/logins"),
    ("LOGIN_ETL_MASKING_MODE", "SIV", "masking_mode", "siv"),
    ("LOGIN_ETL_ENVELOPES", "None", "envelopes", "none"),
    ("LOGIN_ETL_BATCH_SIZE", "77", "batch_size", 77),
    ("LOGIN_ETL_BATCH_WINDOW_MS", "250", "batch_window_ms", 250),
    ("LOGIN_ETL_POLLERS", "9", "pollers", 9),
    ("LOGIN_ETL_WAIT_TIME_SECONDS", "3", "wait_time_seconds", 3),
    ("LOGIN_ETL_VISIBILITY_TIMEOUT", "120", "visibility_timeout", 120),
    ("LOGIN_ETL_HTTP_PORT", "9100", "http_port", 9100),
    ("LOGIN_ETL_LOG_FORMAT", "CONSOLE", "log_format", "console"),
    ("LOGIN_ETL_LOG_LEVEL", "DEBUG", "log_level", "debug"),
    ("LOGIN_ETL_SHUTDOWN_TIMEOUT", "2.5", "shutdown_timeout", 2.5),
    ("LOGIN_ETL_LEDGER_RETENTION_DAYS", "30", "ledger_retention_days", 30),
    ("LOGIN_ETL_DB_POOL_SIZE", "6", "pool_size", 6),
    ("LOGIN_ETL_SQS_CLIENT", "BOTO3", "sqs_client", "boto3"),
    ("LOGIN_ETL_STATEMENT_TIMEOUT_MS", "45000", "statement_timeout_ms", 45_000),
    ("LOGIN_ETL_LOCK_TIMEOUT_MS", "5000", "lock_timeout_ms", 5_000),
    ("LOGIN_ETL_IDLE_IN_TRANSACTION_TIMEOUT_MS", "90000", "idle_in_transaction_timeout_ms", 90_000),
    ("AWS_REGION", "eu-central-1", "aws_region", "eu-central-1"),
    ("AWS_DEFAULT_REGION", "ap-south-1", "aws_region", "ap-south-1"),
    ("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:9999", "aws_endpoint_url", "http://127.0.0.1:9999"),
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:8888", "aws_endpoint_url", "http://127.0.0.1:8888"),
    ("LOGIN_ETL_MASKING_KEY", HEX_A, "masking_keys", (MaskingKey(derived_key_id(A), A),)),
    ("LOGIN_ETL_MASKING_KEYS", f"new:{HEX_B},{HEX_A}", "masking_keys",
     (MaskingKey("new", B), MaskingKey(derived_key_id(A), A))),
]
# (name, lowest accepted, highest accepted)
BOUNDS = [("BATCH_SIZE", 1, 10_000), ("BATCH_WINDOW_MS", 0, 60_000), ("POLLERS", 1, 64),
          ("WAIT_TIME_SECONDS", 0, 20), ("VISIBILITY_TIMEOUT", 5, 43_200),
          ("HTTP_PORT", 0, 65_535), ("LEDGER_RETENTION_DAYS", 0, 3650),
          ("STATEMENT_TIMEOUT_MS", 10, 3_600_000), ("LOCK_TIMEOUT_MS", 10, 3_600_000),
          ("IDLE_IN_TRANSACTION_TIMEOUT_MS", 10, 3_600_000)]


def load(**env: str) -> Settings:
    return Settings.from_env({"LOGIN_ETL_LOG_FORMAT": "json", **env})


def refused(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("name", "value", "attribute", "expected"), VARIABLES,
                         ids=[v[0] for v in VARIABLES])
def test_each_variable_takes_effect(name: str, value: str, attribute: str, expected: Any) -> None:
    default = getattr(load(), attribute)
    assert default != expected
    assert getattr(load(**{name: value}), attribute) == expected
    if name.startswith("LOGIN_ETL_"):
        # surrounding blanks are trimmed, and a blank value is no value
        assert getattr(load(**{name: f"  {value}\t"}), attribute) == expected
        assert getattr(load(**{name: "   "}), attribute) == default


def test_the_defaults() -> None:
    s = load()
    assert (s.queue_url, s.dlq_url, s.database_url) == (DEFAULT_QUEUE_URL, None, DEFAULT_DATABASE_URL)
    assert s.queue_url == "http://localhost:4566/000000000000/login-queue"
    assert s.database_url == "postgresql://postgres:postgres@localhost:5432/postgres"
    assert (s.masking_keys, s.masking_mode, s.sqs_client) == ((), "hmac", "lean")
    assert (s.batch_size, s.batch_window_ms, s.pollers, s.wait_time_seconds) == (500, 100, 4, 20)
    assert (s.visibility_timeout, s.http_port, s.shutdown_timeout) == (60, 8000, 25.0)
    assert (s.ledger_retention_days, s.pool_size, s.db_pool_size) == (0, 0, 2)
    assert (s.log_format, s.log_level, s.aws_region, s.aws_endpoint_url) == ("json", "info", None, None)
    assert s.region == "us-east-1" and s.endpoint_url == "http://localhost:4566"
    assert (s.statement_timeout_ms, s.lock_timeout_ms, s.idle_in_transaction_timeout_ms) == (
        30_000, 10_000, 60_000)


def test_the_class_defaults_are_the_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() (built by code, not read) must mean what an empty environment means."""
    monkeypatch.setattr("os.isatty", lambda fd: False)
    assert Settings() == Settings.from_env({})


def test_the_specific_aws_variables_win() -> None:
    s = load(AWS_REGION="eu-west-3", AWS_DEFAULT_REGION="us-west-2",
             AWS_ENDPOINT_URL_SQS="http://127.0.0.1:1", AWS_ENDPOINT_URL="http://127.0.0.1:2")
    assert (s.region, s.endpoint_url) == ("eu-west-3", "http://127.0.0.1:1")
    empty = load(AWS_REGION="", AWS_ENDPOINT_URL_SQS="")
    assert (empty.aws_region, empty.aws_endpoint_url) == (None, None)


def test_log_format_follows_the_terminal_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.isatty", lambda fd: fd == 2)
    assert Settings.from_env({}).log_format == "console"
    assert Settings.from_env({"LOGIN_ETL_LOG_FORMAT": "json"}).log_format == "json"
    monkeypatch.setattr("os.isatty", lambda fd: False)
    assert Settings.from_env({}).log_format == "json"


def test_the_database_url_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_text(" postgresql://etl@db:5432/x \n")
    assert load(LOGIN_ETL_DATABASE_URL_FILE=str(path)).database_url == "postgresql://etl@db:5432/x"
    # the variable itself wins over its file
    assert load(LOGIN_ETL_DATABASE_URL_FILE=str(path),
                LOGIN_ETL_DATABASE_URL="postgresql://a@b/c").database_url == "postgresql://a@b/c"
    message = refused({"LOGIN_ETL_DATABASE_URL_FILE": str(tmp_path / "missing")})
    assert message == (f"LOGIN_ETL_DATABASE_URL_FILE: cannot read {tmp_path / 'missing'}: "
                       "No such file or directory")


@pytest.mark.parametrize(("name", "low", "high"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_each_bound_at_both_edges(name: str, low: int, high: int) -> None:
    variable = f"LOGIN_ETL_{name}"
    attribute = name.lower()
    # the lock timeout may not exceed the statement timeout, and the statement timeout may not
    # go under the lock timeout: each is tested with the other out of the way
    other = ({"LOGIN_ETL_STATEMENT_TIMEOUT_MS": "3600000"} if name == "LOCK_TIMEOUT_MS" else
             {"LOGIN_ETL_LOCK_TIMEOUT_MS": "10"} if name == "STATEMENT_TIMEOUT_MS" else {})
    assert getattr(load(**other, **{variable: str(low)}), attribute) == low
    assert getattr(load(**other, **{variable: str(high)}), attribute) == high
    for outside in (low - 1, high + 1):
        assert refused({**other, variable: str(outside)}) == (
            f"{variable} must be between {low} and {high}, got {outside}")
    assert refused({variable: "1.5"}) == f"{variable} must be an integer, got '1.5'"


def test_the_lock_timeout_may_not_exceed_the_statement_timeout() -> None:
    s = load(LOGIN_ETL_STATEMENT_TIMEOUT_MS="20000", LOGIN_ETL_LOCK_TIMEOUT_MS="20000")
    assert s.lock_timeout_ms == s.statement_timeout_ms == 20_000
    assert refused({"LOGIN_ETL_STATEMENT_TIMEOUT_MS": "20000",
                    "LOGIN_ETL_LOCK_TIMEOUT_MS": "20001"}) == (
        "LOGIN_ETL_LOCK_TIMEOUT_MS (20001) must not exceed LOGIN_ETL_STATEMENT_TIMEOUT_MS (20000)")
    assert refused({"LOGIN_ETL_STATEMENT_TIMEOUT_MS": "9999"}) == (
        "LOGIN_ETL_LOCK_TIMEOUT_MS (10000) must not exceed LOGIN_ETL_STATEMENT_TIMEOUT_MS (9999)")


def test_the_shutdown_timeout_bounds() -> None:
    assert load(LOGIN_ETL_SHUTDOWN_TIMEOUT="0.001").shutdown_timeout == 0.001
    assert load(LOGIN_ETL_SHUTDOWN_TIMEOUT="3600").shutdown_timeout == 3600
    for outside in ("0", "-1", "3600.01"):
        assert refused({"LOGIN_ETL_SHUTDOWN_TIMEOUT": outside}) == (
            "LOGIN_ETL_SHUTDOWN_TIMEOUT must be in (0, 3600] seconds")
    assert refused({"LOGIN_ETL_SHUTDOWN_TIMEOUT": "soon"}) == (
        "LOGIN_ETL_SHUTDOWN_TIMEOUT must be a number, got 'soon'")


def test_the_pool_size() -> None:
    assert load(LOGIN_ETL_DB_POOL_SIZE="6").db_pool_size == 6
    assert load().db_pool_size == 2


@pytest.mark.parametrize(("env", "message"), [
    ({"LOGIN_ETL_MASKING_MODE": "sha256"},
     "LOGIN_ETL_MASKING_MODE must be 'hmac' or 'siv', got 'sha256'"),
    ({"LOGIN_ETL_ENVELOPES": "sns"}, "LOGIN_ETL_ENVELOPES must be 'auto' or 'none', got 'sns'"),
    ({"LOGIN_ETL_SQS_CLIENT": "aiobotocore"},
     "LOGIN_ETL_SQS_CLIENT must be 'lean' or 'boto3', got 'aiobotocore'"),
    ({"LOGIN_ETL_LOG_FORMAT": "xml"}, "LOGIN_ETL_LOG_FORMAT must be 'json' or 'console'"),
    ({"LOGIN_ETL_LOG_LEVEL": "loud"},
     "LOGIN_ETL_LOG_LEVEL must be one of debug, info, warning, error, got 'loud'"),
    ({"LOGIN_ETL_DATABASE_URL": "postgres ql://p4ss@host"},
     "LOGIN_ETL_DATABASE_URL is not a PostgreSQL URL or connection string "
     "(postgresql://user@host:5432/db)"),
    ({"LOGIN_ETL_QUEUE_URL": "ftp://h/1/q"},
     "LOGIN_ETL_QUEUE_URL must be an http(s) queue URL, got 'ftp://h/1/q'"),
    ({"LOGIN_ETL_QUEUE_URL": "http:///1/q"},
     "LOGIN_ETL_QUEUE_URL must be an http(s) queue URL, got 'http:///1/q'"),
    ({"LOGIN_ETL_QUEUE_URL": "http://h"}, "LOGIN_ETL_QUEUE_URL must be an http(s) queue URL, got 'http://h'"),
    ({"LOGIN_ETL_QUEUE_URL": "https://h/"},
     "LOGIN_ETL_QUEUE_URL must be an http(s) queue URL, got 'https://h/'"),
    ({"LOGIN_ETL_DLQ_URL": "h/1/q-dlq"}, "LOGIN_ETL_DLQ_URL must be an http(s) queue URL, got 'h/1/q-dlq'"),
])
def test_invalid_values_are_one_exact_line(env: dict[str, str], message: str) -> None:
    assert refused({"LOGIN_ETL_LOG_FORMAT": "json", **env}) == message


@pytest.mark.parametrize("env", [
    {"LOGIN_ETL_MASKING_MODE": "siv"}, {"LOGIN_ETL_MASKING_MODE": "hmac"},
    {"LOGIN_ETL_SQS_CLIENT": "lean"}, {"LOGIN_ETL_LOG_FORMAT": "console"},
    {"LOGIN_ETL_DATABASE_URL": "host=db dbname=logins"},
    {"LOGIN_ETL_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/q"},
    {"LOGIN_ETL_DLQ_URL": "http://h:1/000000000000/q-dlq"},
])
def test_each_accepted_spelling(env: dict[str, str]) -> None:
    load(**env)


@pytest.mark.parametrize(("queue_url", "region", "endpoint"), [
    ("https://sqs.eu-west-1.amazonaws.com/123456789012/q", "eu-west-1", None),
    ("https://sqs.us-gov-west-1.amazonaws.com/1/q", "us-gov-west-1", None),
    ("https://queue.amazonaws.com/1/q", "us-east-1", None),
    ("http://localhost:4566/000000000000/q", "us-east-1", "http://localhost:4566"),
    ("https://sqs.eu-west-1.localhost.localstack.cloud:4566/1/q", "us-east-1",
     "https://sqs.eu-west-1.localhost.localstack.cloud:4566"),
])
def test_region_and_endpoint_follow_the_queue_url(queue_url: str, region: str,
                                                  endpoint: str | None) -> None:
    s = load(LOGIN_ETL_QUEUE_URL=queue_url)
    assert (s.region, s.endpoint_url) == (region, endpoint)
    # ... also when --queue-url replaces it later
    moved = load().with_overrides(queue_url=queue_url)
    assert (moved.region, moved.endpoint_url) == (region, endpoint)


def test_overrides_skip_none_and_are_checked() -> None:
    s = load(LOGIN_ETL_BATCH_SIZE="10")
    assert s.with_overrides(batch_size=None, pollers=2).batch_size == 10
    assert s.with_overrides(pollers=2).pollers == 2
    with pytest.raises(ConfigError, match="LOGIN_ETL_POLLERS must be between 1 and 64, got 0"):
        s.with_overrides(pollers=0)


# -- keys -----------------------------------------------------------------------------------------


def test_siv_mode_with_a_key_list() -> None:
    s = load(LOGIN_ETL_MASKING_MODE="siv", LOGIN_ETL_MASKING_KEYS=f"k2:{HEX_B}")
    assert s.masking_mode == "siv" and s.writing_key == MaskingKey("k2", B)


@pytest.mark.parametrize("keys", [
    f"a:{HEX_A},,b:{HEX_B}", f",a:{HEX_A},b:{HEX_B},", f"a:{HEX_A}\n\nb:{HEX_B}\n",
    f" a:{HEX_A} ,\n , b:{HEX_B}", f"a:{HEX_A},\t,b:{HEX_B}",
])
def test_empty_entries_in_a_key_list_are_skipped(keys: str) -> None:
    assert load(LOGIN_ETL_MASKING_KEYS=keys).masking_keys == (MaskingKey("a", A), MaskingKey("b", B))


def test_entries_are_numbered_by_position_empty_ones_included() -> None:
    message = refused({"LOGIN_ETL_MASKING_KEYS": f"a:{HEX_A},,{HEX_B[:10]}zz"})
    assert message == ("LOGIN_ETL_MASKING_KEYS entry 3 must be hex (64+ hex characters) or "
                       "base64:<data>; it is neither")
    assert refused({"LOGIN_ETL_MASKING_KEYS": f"\n{'x' * 17}:{HEX_A}"}) == (
        "LOGIN_ETL_MASKING_KEYS entry 2 must be [<id>:]<secret> with an id of 1-16 letters, "
        "digits, '-' or '_'")


@pytest.mark.parametrize(("keys", "message"), [
    (" , \n ", "LOGIN_ETL_MASKING_KEYS is set but lists no key"),
    (f"a:{HEX_A},a:{HEX_B}", "LOGIN_ETL_MASKING_KEYS names key id 'a' twice"),
    (f"{HEX_A},{HEX_A}", f"LOGIN_ETL_MASKING_KEYS names key id '{derived_key_id(A)}' twice"),
    (f"a:{HEX_A[:62]}", "LOGIN_ETL_MASKING_KEYS[a] is 31 bytes; at least 32 are required"),
    ("a:base64:!!!!", "LOGIN_ETL_MASKING_KEYS[a] must be hex (64+ hex characters) or base64:<data>; "
                      "it is neither"),
    ("a:", "LOGIN_ETL_MASKING_KEYS[a] is 0 bytes; at least 32 are required"),
    (f":{HEX_A}", "LOGIN_ETL_MASKING_KEYS entry 1 must be [<id>:]<secret> with an id of 1-16 "
                  "letters, digits, '-' or '_'"),
])
def test_key_list_errors(keys: str, message: str) -> None:
    assert refused({"LOGIN_ETL_MASKING_KEYS": keys}) == message


def test_key_ids_of_every_allowed_shape() -> None:
    for key_id in ("a", "A-_9", "x" * 16):
        assert load(LOGIN_ETL_MASKING_KEYS=f"{key_id}:{HEX_A}").writing_key.key_id == key_id


@pytest.mark.parametrize(("text", "secret"), [
    (HEX_A, A), (HEX_A.upper(), A), (f"  {HEX_A}\n", A), (A.hex() + "ff", A + b"\xff"),
    ("base64:" + base64.b64encode(A).decode(), A),
    ("base64:" + base64.b64encode(B + b"xyz").decode(), B + b"xyz"),
])
def test_secrets_in_hex_and_base64(text: str, secret: bytes) -> None:
    assert parse_secret(text, "X") == secret


@pytest.mark.parametrize(("text", "message"), [
    (HEX_A[:62], "X is 31 bytes; at least 32 are required"),
    ("base64:" + base64.b64encode(A[:31]).decode(), "X is 31 bytes; at least 32 are required"),
    ("base64:" + base64.b64encode(A).decode()[:-1], "X must be hex (64+ hex characters) or "
                                                   "base64:<data>; it is neither"),
    ("base64:" + base64.b64encode(A).decode().replace("A", "*", 1),
     "X must be hex (64+ hex characters) or base64:<data>; it is neither"),
    ("base64:" + base64.urlsafe_b64encode(b"\xfb" * 33).decode(),
     "X must be hex (64+ hex characters) or base64:<data>; it is neither"),
    (HEX_A[:63], "X must be hex (64+ hex characters) or base64:<data>; it is neither"),
    ("zz" * 32, "X must be hex (64+ hex characters) or base64:<data>; it is neither"),
    ("Base64:" + base64.b64encode(A).decode(), "X must be hex (64+ hex characters) or "
                                              "base64:<data>; it is neither"),
])
def test_bad_secrets(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_secret(text, "X")
    assert str(info.value) == message
    assert MIN_KEY_BYTES == 32


def test_a_bare_base64_entry_in_a_list() -> None:
    entry = "base64:" + base64.b64encode(A).decode()
    keys = load(LOGIN_ETL_MASKING_KEYS=f"b:{HEX_B},{entry}").masking_keys
    assert keys == (MaskingKey("b", B), MaskingKey(derived_key_id(A), A))
    assert load(LOGIN_ETL_MASKING_KEY=entry).masking_keys == (MaskingKey(derived_key_id(A), A),)


@pytest.mark.parametrize("name", ["MASKING_KEY", "MASKING_KEYS"])
def test_keys_from_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / "k"
    path.write_text(f"\n{HEX_A}\n")
    keys = load(**{f"LOGIN_ETL_{name}_FILE": str(path)}).masking_keys
    assert keys == (MaskingKey(derived_key_id(A), A),)
    assert refused({f"LOGIN_ETL_{name}": HEX_B, f"LOGIN_ETL_{name}_FILE": str(path)}) == (
        f"set LOGIN_ETL_{name} or LOGIN_ETL_{name}_FILE, not both")
    # a blank variable is no variable: its file is used
    assert load(**{f"LOGIN_ETL_{name}": " ", f"LOGIN_ETL_{name}_FILE": str(path)}).masking_keys == keys
    path.write_text(" \n")
    assert refused({f"LOGIN_ETL_{name}_FILE": str(path)}) == (
        f"LOGIN_ETL_{name}_FILE ({path}) is empty")


def test_one_key_and_a_list_are_not_both_allowed(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(HEX_A)
    expected = ("set LOGIN_ETL_MASKING_KEYS or LOGIN_ETL_MASKING_KEY (or their _FILE), not both: "
                "list every key in MASKING_KEYS, the writing key first")
    assert refused({"LOGIN_ETL_MASKING_KEYS": HEX_B, "LOGIN_ETL_MASKING_KEY": HEX_A}) == expected
    assert refused({"LOGIN_ETL_MASKING_KEYS_FILE": str(path),
                    "LOGIN_ETL_MASKING_KEY": HEX_B}) == expected


def test_a_missing_key_is_an_error_only_when_needed() -> None:
    with pytest.raises(ConfigError) as info:
        _ = load().writing_key
    assert str(info.value) == ("LOGIN_ETL_MASKING_KEY (or _FILE, or LOGIN_ETL_MASKING_KEYS) is "
                               "required; `login-etl keygen` prints one")


@pytest.mark.parametrize(("value", "message"), [
    (HEX_A[:62], "LOGIN_ETL_MASKING_KEY is 31 bytes; at least 32 are required"),
    ("zz" * 32, "LOGIN_ETL_MASKING_KEY must be hex (64+ hex characters) or base64:<data>; "
                "it is neither"),
])
def test_a_bad_single_key_names_its_variable(value: str, message: str) -> None:
    assert refused({"LOGIN_ETL_MASKING_KEY": value}) == message
