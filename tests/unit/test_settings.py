"""Configuration: validated once, one clear line for anything wrong, secrets never echoed."""

from __future__ import annotations

import pytest

from login_etl.settings import ConfigError, Settings, derived_key_id

KEY = "ab" * 32


def test_defaults_and_endpoint_derived_from_a_local_queue_url() -> None:
    s = Settings.from_env({"LOGIN_ETL_MASKING_KEY": KEY, "LOGIN_ETL_LOG_FORMAT": "json"})
    assert s.queue_url == "http://localhost:4566/000000000000/login-queue"
    assert s.endpoint_url == "http://localhost:4566"
    assert s.writing_key.secret == bytes.fromhex(KEY)
    assert s.writing_key.key_id == derived_key_id(bytes.fromhex(KEY))


def test_aws_queue_url_uses_the_regional_endpoint() -> None:
    s = Settings.from_env({"LOGIN_ETL_QUEUE_URL":
                           "https://sqs.eu-west-1.amazonaws.com/123456789012/login-queue"})
    assert s.endpoint_url is None and s.region == "eu-west-1"


def test_several_keys_first_writes() -> None:
    s = Settings.from_env({"LOGIN_ETL_MASKING_KEYS": f"new:{KEY}, old:base64:{'A' * 44}"})
    assert [k.key_id for k in s.masking_keys] == ["new", "old"]


@pytest.mark.parametrize(("env", "fragment"), [
    ({"LOGIN_ETL_BATCH_SIZE": "ten"}, "LOGIN_ETL_BATCH_SIZE must be an integer"),
    ({"LOGIN_ETL_BATCH_SIZE": "0"}, "LOGIN_ETL_BATCH_SIZE must be between"),
    ({"LOGIN_ETL_POLLERS": "1000"}, "LOGIN_ETL_POLLERS must be between"),
    ({"LOGIN_ETL_MASKING_MODE": "sha256"}, "LOGIN_ETL_MASKING_MODE"),
    ({"LOGIN_ETL_QUEUE_URL": "login-queue"}, "LOGIN_ETL_QUEUE_URL must be an http(s) queue URL"),
    ({"LOGIN_ETL_MASKING_KEY": "ab" * 16}, "at least 32 are required"),
    ({"LOGIN_ETL_MASKING_KEY": "not-hex-secret-" * 5}, "must be hex"),
    ({"LOGIN_ETL_MASKING_KEYS": f"bad id:{KEY}"}, "MASKING_KEYS entry 1"),
    ({"LOGIN_ETL_MASKING_KEYS": f"a:{KEY},a:{KEY}"}, "twice"),
    ({"LOGIN_ETL_MASKING_KEY_FILE": "/nonexistent/key"}, "cannot read"),
    ({"LOGIN_ETL_STATEMENT_TIMEOUT_MS": "0"}, "LOGIN_ETL_STATEMENT_TIMEOUT_MS must be between"),
    ({"LOGIN_ETL_LOCK_TIMEOUT_MS": "soon"}, "LOGIN_ETL_LOCK_TIMEOUT_MS must be an integer"),
    ({"LOGIN_ETL_IDLE_IN_TRANSACTION_TIMEOUT_MS": "-1"}, "IDLE_IN_TRANSACTION_TIMEOUT_MS must be"),
    ({"LOGIN_ETL_STATEMENT_TIMEOUT_MS": "1000", "LOGIN_ETL_LOCK_TIMEOUT_MS": "2000"},
     "must not exceed"),
])
def test_bad_settings_fail_with_one_line(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    for value in env.values():
        if len(value) >= 32:
            assert value not in message, "a secret was echoed"


def test_missing_key_is_reported_when_needed() -> None:
    s = Settings.from_env({})
    with pytest.raises(ConfigError, match="keygen"):
        _ = s.writing_key


def test_key_from_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    s = Settings.from_env({"LOGIN_ETL_MASKING_KEY_FILE": str(path)})
    assert s.writing_key.secret == bytes.fromhex(KEY)


def test_short_database_bounds_are_accepted() -> None:
    s = Settings.from_env({"LOGIN_ETL_STATEMENT_TIMEOUT_MS": "500",
                           "LOGIN_ETL_LOCK_TIMEOUT_MS": "200",
                           "LOGIN_ETL_IDLE_IN_TRANSACTION_TIMEOUT_MS": "1000"})
    assert (s.statement_timeout_ms, s.lock_timeout_ms, s.idle_in_transaction_timeout_ms) == (
        500, 200, 1000)
