"""Privacy end to end: the real worker, real LocalStack, real Postgres, real CLI.

- Generated events (hypothesis) through the worker with its HTTP port on: no input ip or
  device_id, nor any 8-character piece of one, in any stored column, log line or /metrics.
- The real sample in both modes; siv tokens unmask (login-etl unmask) back to the sample.
- Rotation: key A, then MASKING_KEYS=B,A: new rows carry B's id, A's tokens still open.
- Missing or ambiguous key: exit 2 with one line, before any connection is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from login_etl.settings import derived_key_id
from tests.integration.stack import (
    Stack,
    create_database,
    create_queues,
    drop_database,
    free_port,
    sample_events,
    wait_until,
)

WINDOW = 8  # the bar: no 8+ character piece of an input value anywhere


# -- generated events -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    body: dict[str, Any]
    valid: bool  # known by construction, not by asking the code under test
    pii: tuple[str, ...]  # every spelling of the ip and device_id that must not leak


def _spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> st.SearchStrategy[str]:
    forms = [str(address), address.exploded]
    if isinstance(address, ipaddress.IPv4Address):
        mapped = ipaddress.IPv6Address(f"::ffff:{address}")
        forms += [f"::ffff:{address}", mapped.exploded, mapped.compressed]
    else:
        forms += [address.exploded.upper()]
    return st.tuples(st.sampled_from(forms), st.sampled_from(["", " ", "  "]),
                     st.sampled_from(["", " ", "\t"])).map(lambda t: f"{t[1]}{t[0]}{t[2]}")


# Public addresses only: loopback and private ranges legitimately appear in the worker's own
# output (the queue URL is http://127.0.0.1:4566/...), so they could not show a leak.
# (Built from integers: filtering st.ip_addresses() for is_global costs ~40 ms an address.)
_ipv4 = st.integers(1 << 24, (224 << 24) - 1).map(ipaddress.IPv4Address)
_ipv6 = st.integers(0x2000 << 112, (0x4000 << 112) - 1).map(ipaddress.IPv6Address)
valid_ips = st.one_of(_ipv4, _ipv6).filter(lambda a: a.is_global).flatmap(_spellings)
# Not addresses (first part over 255), yet shaped like one: they must go to the DLQ unlogged.
invalid_ips = st.tuples(st.integers(256, 999), st.integers(10, 255), st.integers(0, 255),
                        st.integers(100, 999)).map(lambda t: ".".join(map(str, t)))
# Device ids: uuids, the sample's ddd-dd-dddd shape, hex, and mixed-script text. Lowercase
# ASCII and '_' are left out of the free text because hypothesis seeds text with string
# constants of the code under test (metric and log event names), which would be false alarms.
device_ids = st.one_of(
    st.uuids().map(str),
    st.from_regex(r"\A[0-9]{3}-[0-9]{2}-[0-9]{4}\Z"),
    st.binary(min_size=4, max_size=24).map(bytes.hex),
    st.text(st.sampled_from("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-.:/ÄÖéßøΩЖж漢字😀"),
            min_size=8, max_size=64).map(str.strip).filter(lambda s: len(s) >= 8),
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    valid = draw(st.integers(0, 9)) != 9  # about one in ten carries a bad ip (goes to the DLQ)
    ip = draw(valid_ips if valid else invalid_ips)
    device_id = draw(device_ids)
    body = {"user_id": str(draw(st.uuids())), "app_version": draw(st.sampled_from(
        ["2.3.0", "0.96", "5.0.12"])), "device_type": draw(st.sampled_from(["android", "ios"])),
        "ip": ip, "locale": draw(st.sampled_from([None, "RU", "PT"])), "device_id": device_id}
    pii = {ip, ip.strip(), device_id, device_id.strip()}
    if valid:
        address = ipaddress.ip_address(ip.strip())
        pii |= {str(address), address.exploded}
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            pii |= {str(address.ipv4_mapped)}
    return Event(body, valid, tuple(sorted(pii)))


# -- the leak detector ----------------------------------------------------------------------------


def pieces(value: str) -> set[str]:
    """The value itself if short, else every 8-character window that carries information.

    Windows of fewer than 4 distinct characters ("00000000", ":0000:00") are skipped: they
    carry next to nothing about a person and occur in ordinary output (the queue URL's account
    id 000000000000, float digits in /metrics).
    """
    if len(value) < WINDOW:
        return {value}
    windows = {value[i:i + WINDOW] for i in range(len(value) - WINDOW + 1)}
    return {w for w in windows if len(set(w)) >= 4}


def leaks(haystacks: dict[str, str], values: Iterable[str]) -> list[str]:
    windows = {where: {text[i:i + WINDOW] for i in range(len(text) - WINDOW + 1)}
               for where, text in haystacks.items()}
    found = []
    for value in values:
        for piece in pieces(value):
            for where, text in haystacks.items():
                if piece in windows[where] if len(piece) == WINDOW else piece in text:
                    found.append(f"{piece!r} (from {value!r}) in {where}")
    return found


def decoded_log(text: str) -> str:
    """Log lines as written and with JSON escapes undone (\\u00e9 would hide an é)."""
    out = [text]
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.dumps(json.loads(line), ensure_ascii=False))
    return "\n".join(out)


def every_stored_value(stack: Stack) -> str:
    """Every row of every table in the test's database, as text."""
    tables = [r[0] for r in stack.query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    assert "user_logins" in tables
    lines = []
    for table in tables:
        lines += [r[0] for r in stack.query(f'SELECT t::text FROM "{table}" t')]
    return "\n".join(lines)


def http_text(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:  # a 503 page is output too
        return str(exc.read().decode())


@contextlib.contextmanager
def fresh_stack(sqs: Any) -> Iterator[Stack]:
    """A queue pair and database per hypothesis example (fixtures are per test, not example)."""
    queue_url, dlq_url = create_queues(sqs)
    database_url = create_database()
    try:
        yield Stack(sqs, queue_url, dlq_url, database_url)
    finally:
        for url in (queue_url, dlq_url):
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=url)
        drop_database(database_url)


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_the_detector_finds_what_it_looks_for() -> None:
    """The check below could fail: planted values and pieces of them are found."""
    assert leaks({"log": '{"event": "x", "ip": "203.0.113.9"}'}, ["203.0.113.9"])
    assert leaks({"db": "(u1,ios,h1.ab.xyz,XX-593-47-5928-YY)"}, ["593-47-5928"])
    assert leaks({"log": decoded_log('{"d": "\\u00c4\\u00d6\\u00e9\\u00df-1234"}')},
                 ["ÄÖéß-1234"])
    assert not leaks({"log": "queue 000000000000 at 0.000000000001"}, ["00000000-0000"])


@pytest.mark.parametrize("mode", ["hmac", "siv"])
@settings(max_examples=3, deadline=None, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(batch=st.lists(events(), min_size=30, max_size=50))
def test_no_input_ip_or_device_id_leaks_anywhere(sqs: Any, postgres: str, mode: str,
                                                  batch: list[Event]) -> None:
    valid = sum(e.valid for e in batch)
    with fresh_stack(sqs) as stack, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = Path(tmp) / "worker.log"
        env = stack.env(LOGIN_ETL_MASKING_MODE=mode, LOGIN_ETL_HTTP_PORT=str(port),
                        LOGIN_ETL_LOG_LEVEL="debug", LOGIN_ETL_POLLERS="2",
                        LOGIN_ETL_WAIT_TIME_SECONDS="1")  # SIGTERM waits out a long poll
        stack.send([json.dumps(e.body) for e in batch])
        worker = stack.start(env=env, log=log)
        try:
            wait_until(lambda: stack.count_rows() == valid and
                       stack.depth(dlq=True)["visible"] == len(batch) - valid,
                       timeout=60, what=f"{valid} rows and {len(batch) - valid} DLQ messages")
            wait_until(lambda: f'outcome="stored"}} {float(valid)}' in http_text(port, "/metrics"),
                       timeout=10, what="the stored counter on /metrics")
            pages = {path: http_text(port, path) for path in  # "/" and /status.json: the
                     ("/metrics", "/healthz", "/readyz", "/", "/status.json")}  # status page
        finally:
            code = stop(worker)
        assert code == 0
        stored = every_stored_value(stack)
        logged = decoded_log(log.read_text())
        assert '"batch_settled"' in logged  # the log was written and is being searched
        tokens = stack.query("SELECT masked_ip, masked_device_id FROM user_logins")
        prefix = "h1." if mode == "hmac" else "s1."
        assert all(ip.startswith(prefix) and dev.startswith(prefix) for ip, dev in tokens)
        haystacks = {"database": stored, "log": logged, **pages}
        found = leaks(haystacks, [v for e in batch for v in e.pii])
        assert not found, found[:10]
        # The DLQ keeps rejected bodies unchanged by design: the detector sees them there.
        dlq_bodies = "\n".join(m["Body"] for m in stack.receive_all(dlq=True))
        for event in batch:
            assert event.valid or leaks({"dlq": dlq_bodies}, [event.body["ip"]]), event


# -- the real sample in both modes ---------------------------------------------------------------


def _canonical(ip: str) -> str:
    address = ipaddress.ip_address(ip.strip())
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _expected_hmac(secret: bytes, key_id: str, field: str, value: str) -> str:
    """An independent computation of the documented h1 format."""
    subkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"login-etl masking v1",
                  info=f"hmac/{field}".encode()).derive(secret)
    import base64

    digest = hmac.new(subkey, value.encode(), hashlib.sha256).digest()
    return f"h1.{key_id}." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _run_sample(stack: Stack, env: dict[str, str]) -> list[tuple[str, str, str]]:
    stack.cli("clear-db", "--yes", env=env)
    stack.cli("load", "--sample", env=env)
    stack.cli("run", "--until-empty", env=env)
    return [tuple(r) for r in stack.query(  # type: ignore[misc]
        "SELECT user_id, masked_ip, masked_device_id FROM user_logins")]


def _unmask(stack: Stack, env: dict[str, str], field: str, tokens: list[str]) -> list[str]:
    """One `login-etl unmask` call for all tokens, as a key holder would run it."""
    values = stack.cli("unmask", "--field", field, *tokens, env=env).stdout.splitlines()
    assert len(values) == len(tokens)
    return values


def test_real_sample_in_both_modes(stack: Stack) -> None:
    secret = bytes.fromhex(stack.key)
    key_id = derived_key_id(secret)
    sample = [e for e in sample_events() if {"ip", "device_id"} <= set(e)]
    assert len(sample) == 99
    hmac_rows = _run_sample(stack, stack.env(LOGIN_ETL_MASKING_MODE="hmac"))
    siv_rows = _run_sample(stack, stack.env(LOGIN_ETL_MASKING_MODE="siv"))
    assert len(hmac_rows) == len(siv_rows) == 99
    assert stack.depth(dlq=True)["visible"] == 2  # the malformed event, once per run

    hmac_values = {v for _, ip, dev in hmac_rows for v in (ip, dev)}
    siv_values = {v for _, ip, dev in siv_rows for v in (ip, dev)}
    assert not hmac_values & siv_values
    assert all(v.startswith(f"h1.{key_id}.") for v in hmac_values)
    assert all(v.startswith(f"s1.{key_id}.") for v in siv_values)
    # Deterministic in both modes: as many distinct tokens as distinct sample values.
    for column in (1, 2):
        field = "ip" if column == 1 else "device_id"
        distinct = len({e[field] for e in sample})
        assert len({r[column] for r in hmac_rows}) == len({r[column] for r in siv_rows}) == distinct

    # hmac: exactly the keyed tokens of the sample's values, computed independently here.
    expected = Counter((e["user_id"], _expected_hmac(secret, key_id, "ip", _canonical(e["ip"])),
                        _expected_hmac(secret, key_id, "device_id", e["device_id"].strip()))
                       for e in sample)
    assert Counter(hmac_rows) == expected

    # siv: login-etl unmask gives back the sample's ips and device ids, row by row.
    env = stack.env()
    ips = _unmask(stack, env, "ip", [r[1] for r in siv_rows])
    devices = _unmask(stack, env, "device_id", [r[2] for r in siv_rows])
    recovered = Counter(zip((r[0] for r in siv_rows), ips, devices, strict=True))
    assert recovered == Counter((e["user_id"], _canonical(e["ip"]), e["device_id"].strip())
                                for e in sample)


# -- rotation -------------------------------------------------------------------------------------


def test_rotation_end_to_end(stack: Stack) -> None:
    sample = [e for e in sample_events() if {"ip", "device_id"} <= set(e)]
    first, second = sample[:50], sample[50:]
    old_id = derived_key_id(bytes.fromhex(stack.key))
    env_a = stack.env(LOGIN_ETL_MASKING_MODE="siv")
    stack.send([json.dumps(e) for e in first])
    stack.cli("run", "--until-empty", env=env_a)
    old_rows = stack.query("SELECT user_id, masked_ip, masked_device_id FROM user_logins")
    assert len(old_rows) == 50 and all(r[1].startswith(f"s1.{old_id}.") for r in old_rows)

    new_entry = stack.cli("keygen", "--id", "b2026").stdout.strip()
    rotated = stack.env(LOGIN_ETL_MASKING_MODE="siv", LOGIN_ETL_MASKING_KEY="",
                        LOGIN_ETL_MASKING_KEYS=f"{new_entry},{stack.key}")
    stack.send([json.dumps(e) for e in second])
    stack.cli("run", "--until-empty", env=rotated)
    rows = stack.query("SELECT user_id, masked_ip, masked_device_id FROM user_logins")
    new_rows = [r for r in rows if r not in old_rows]
    assert len(rows) == 99 and len(new_rows) == 49
    assert all(r[1].startswith("s1.b2026.") and r[2].startswith("s1.b2026.") for r in new_rows)
    # An ip seen before and after the rotation gets a different token: joins across it need
    # unmasking (siv) or the old key kept for recomputation (hmac) — see docs/privacy.md.

    # Old and new tokens both open with the rotated configuration.
    ips = _unmask(stack, rotated, "ip", [r[1] for r in rows])
    devices = _unmask(stack, rotated, "device_id", [r[2] for r in rows])
    assert Counter(zip((r[0] for r in rows), ips, devices, strict=True)) == Counter(
        (e["user_id"], _canonical(e["ip"]), e["device_id"].strip()) for e in sample)

    # Once the old key is dropped, its tokens are refused with one line naming the key id.
    only_new = stack.env(LOGIN_ETL_MASKING_KEY="", LOGIN_ETL_MASKING_KEYS=new_entry)
    refused = stack.cli("unmask", "--field", "ip", old_rows[0][1], env=only_new, check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert old_id in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert stack.key not in refused.stderr and new_entry.split(":")[1] not in refused.stderr


# -- refusals and configuration ------------------------------------------------------------------


def test_unmask_refusals_are_one_line_and_non_zero(stack: Stack) -> None:
    stack.send([json.dumps(e) for e in sample_events()[:3]])
    stack.cli("run", "--until-empty", env=stack.env(LOGIN_ETL_MASKING_MODE="siv"))
    siv_token = stack.query("SELECT masked_ip FROM user_logins LIMIT 1")[0][0]
    other_key = stack.cli("keygen").stdout.strip()
    kid = siv_token.split(".")[1]
    cases = {
        "wrong key": (siv_token, stack.env(LOGIN_ETL_MASKING_KEY="",
                                           LOGIN_ETL_MASKING_KEYS=f"{kid}:{other_key}")),
        "altered": (siv_token[:-3] + ("AAA" if not siv_token.endswith("AAA") else "BBB"),
                    stack.env()),
        "one-way": (f"h1.{kid}.{'A' * 43}", stack.env()),
    }
    for fragment, (token, env) in cases.items():
        result = stack.cli("unmask", "--field", "ip", token, env=env, check=False)
        assert result.returncode == 1, result
        assert result.stdout == "" and "Traceback" not in result.stderr
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert stack.key not in result.stderr and other_key not in result.stderr


def test_missing_or_ambiguous_key_exits_2_with_one_line(stack: Stack, tmp_path: Path) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:1/postgres"  # exit 2 comes before connecting
    base = {k: v for k, v in stack.env(LOGIN_ETL_DATABASE_URL=unreachable).items()
            if k != "LOGIN_ETL_MASKING_KEY"}
    empty = tmp_path / "key"
    empty.write_text("")
    cases = [
        ({}, "keygen"),
        ({"LOGIN_ETL_MASKING_KEY_FILE": str(empty)}, "is empty"),
        ({"LOGIN_ETL_MASKING_KEY": stack.key, "LOGIN_ETL_MASKING_KEYS": f"b:{stack.key}"},
         "not both"),
        ({"LOGIN_ETL_MASKING_KEY": stack.key[:40]}, "at least 32 are required"),
    ]
    for extra, fragment in cases:
        result = stack.cli("run", "--until-empty", env={**base, **extra}, check=False, timeout=60)
        assert result.returncode == 2, result.stderr
        assert fragment in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert stack.key[:40] not in result.stderr


def test_a_lone_surrogate_goes_to_the_dlq_not_the_worker_down(stack: Stack) -> None:
    good = sample_events()[0]
    bad = '{"user_id": "u", "app_version": "1.0", "device_type": "ios", "ip": "192.0.2.1", ' \
          '"locale": null, "device_id": "dev-\\ud800-1"}'
    stack.send([bad, json.dumps(good)])
    stack.cli("run", "--until-empty", env=stack.env(LOGIN_ETL_MASKING_MODE="siv"), timeout=60)
    assert stack.count_rows() == 1
    [message] = stack.receive_all(dlq=True)
    assert message["Body"] == bad
    assert message["MessageAttributes"]["reason"]["StringValue"] == "invalid_unicode:device_id"
