"""Masking properties: deterministic per field and key, unrelated across them, reversible in siv.

Hypothesis generates the values; each property is checked against an independent notion
(the `ipaddress` module for normalisation, a second key for separation), never a fixed token.
"""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st

from login_etl.cli import cli
from login_etl.masking import (
    FIELDS,
    TOKEN_MAX,
    Masker,
    TokenTooLong,
    UnmaskError,
    normalise_ip,
)
from login_etl.messages import Received, Rejection, parse
from login_etl.settings import ConfigError, MaskingKey, Settings, derived_key_id

SECRET_A = bytes(range(32))
SECRET_B = bytes(range(100, 132))
KEY_A = MaskingKey("a", SECRET_A)
KEY_B = MaskingKey("b", SECRET_B)
MODES = ("hmac", "siv")
TOKEN = re.compile(r"^(h1|s1)\.([A-Za-z0-9_-]{1,16})\.([A-Za-z0-9_-]+)$")

keys = st.binary(min_size=32, max_size=64)
key_ids = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
fields = st.sampled_from(FIELDS)
modes = st.sampled_from(MODES)
# Device ids as they arrive: any Unicode text without NUL or a lone surrogate (parsing rejects
# both), already trimmed, short enough for the column (parsing rejects longer ones as too_long:
# 160 UTF-8 bytes is what an siv token with the longest key id still fits in varchar(256)).
values = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)),
                 min_size=1, max_size=128).map(str.strip).filter(
    lambda v: bool(v) and len(v.encode("utf-8")) <= 160)
ips = st.ip_addresses()


@given(secret=keys, key_id=key_ids, mode=modes, field=fields, value=values)
def test_tokens_are_deterministic_per_field_and_key(secret: bytes, key_id: str, mode: str,
                                                    field: str, value: str) -> None:
    one = Masker([MaskingKey(key_id, secret)], mode)
    other_instance = Masker([MaskingKey(key_id, secret)], mode)
    token = one.mask(field, value)
    assert token == one.mask(field, value) == other_instance.mask(field, value)
    match = TOKEN.match(token)
    assert match, token
    assert match.group(1) == ("h1" if mode == "hmac" else "s1")
    assert match.group(2) == key_id
    assert len(token) <= TOKEN_MAX


@given(mode=modes, value=values)
def test_same_text_in_two_fields_gives_unrelated_tokens(mode: str, value: str) -> None:
    masker = Masker([KEY_A], mode)
    ip_token, device_token = masker.mask("ip", value), masker.mask("device_id", value)
    assert ip_token != device_token
    # Unrelated, not merely different: no shared run of the payload either.
    assert _payload(ip_token)[:8] != _payload(device_token)[:8]


@given(mode=modes, field=fields, value=values, a=keys, b=keys)
def test_different_keys_give_different_tokens(mode: str, field: str, value: str, a: bytes,
                                              b: bytes) -> None:
    assume(a != b)
    token_a = Masker([MaskingKey("k", a)], mode).mask(field, value)
    token_b = Masker([MaskingKey("k", b)], mode).mask(field, value)
    assert _payload(token_a) != _payload(token_b)


@given(mode=modes, field=fields, x=values, y=values)
def test_different_values_give_different_tokens(mode: str, field: str, x: str, y: str) -> None:
    assume(x != y)
    masker = Masker([KEY_A], mode)
    assert masker.mask(field, x) != masker.mask(field, y)


def test_modes_give_different_tokens_for_the_same_key() -> None:
    hmac_token = Masker([KEY_A], "hmac").mask("ip", "192.0.2.1")
    siv_token = Masker([KEY_A], "siv").mask("ip", "192.0.2.1")
    assert hmac_token.startswith("h1.a.") and siv_token.startswith("s1.a.")
    assert _payload(hmac_token) != _payload(siv_token)[: len(_payload(hmac_token))]


@given(field=fields, value=values)
def test_siv_unmask_inverts_mask(field: str, value: str) -> None:
    masker = Masker([KEY_A], "siv")
    assume(masker.fits(value))
    assert masker.unmask(masker.mask(field, value), field) == value


@given(address=ips)
def test_siv_unmask_of_a_masked_ip_is_its_normalised_form(address: ipaddress._BaseAddress) -> None:
    masker = Masker([KEY_A], "siv")
    normalised = normalise_ip(f"  {address.exploded} ")
    assert normalised is not None
    assert masker.unmask(masker.mask("ip", normalised), "ip") == normalised == normalise_ip(
        str(address))


# -- IP normalisation -------------------------------------------------------------------------


@given(address=st.ip_addresses(v=4), left=st.sampled_from(["", " ", "\t", "  "]),
       right=st.sampled_from(["", " ", "\n", "   "]))
def test_ipv4_with_surrounding_spaces_is_one_form(address: ipaddress.IPv4Address, left: str,
                                                  right: str) -> None:
    assert normalise_ip(f"{left}{address}{right}") == str(address)
    # ... and the IPv4-mapped IPv6 spellings of it are the same address.
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    for spelling in (f"::ffff:{address}", mapped.compressed, mapped.exploded,
                     mapped.exploded.upper()):
        assert normalise_ip(spelling) == str(address), spelling


@given(address=st.ip_addresses(v=6))
def test_ipv6_compressed_and_expanded_spellings_are_one_form(address: ipaddress.IPv6Address) -> None:
    expected = str(address.ipv4_mapped) if address.ipv4_mapped else address.compressed
    spellings = {address.compressed, address.exploded, address.exploded.upper(),
                 address.compressed.upper(), f" {address.exploded}\t"}
    assert {normalise_ip(s) for s in spellings} == {expected}
    for mode in MODES:
        masker = Masker([KEY_A], mode)
        assert len({masker.mask("ip", normalise_ip(s) or "") for s in spellings}) == 1


@pytest.mark.parametrize("text", [
    "", " ", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.4/24", "fe80::1%eth0",
    "::ffff:1.2.3.4%eth0", "::ffff:102:304%1", "::FFFF:1.2.3.4%0",
    "::ffff:1.2.3.256", "1:2:3:4:5:6:7:8:9", "gggg::1", "localhost", "1.2.3.4 5", "١.2.3.4",
])
def test_what_ipaddress_refuses_is_not_an_ip(text: str) -> None:
    assert normalise_ip(text) is None


@given(text=st.text(max_size=45))
def test_normalise_ip_agrees_with_ipaddress(text: str) -> None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        assert normalise_ip(text) is None
        return
    result = normalise_ip(text)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        assert result is None
    else:
        assert result is not None and ipaddress.ip_address(result) in (
            address, getattr(address, "ipv4_mapped", None))
        assert normalise_ip(result) == result  # canonical: idempotent


# -- rotation -----------------------------------------------------------------------------------


@given(field=fields, value=values)
def test_rotation_old_siv_tokens_still_open_and_new_tokens_carry_the_new_id(field: str,
                                                                            value: str) -> None:
    before = Masker([KEY_A], "siv")
    assume(before.fits(value))
    old_token = before.mask(field, value)
    after = Masker([KEY_B, KEY_A], "siv")  # B added as the writing key, A kept for reading
    new_token = after.mask(field, value)
    assert old_token.startswith("s1.a.") and new_token.startswith("s1.b.")
    assert after.unmask(old_token, field) == value == after.unmask(new_token, field)
    with pytest.raises(UnmaskError, match="'a', which is not configured"):
        Masker([KEY_B], "siv").unmask(old_token, field)


def test_rotation_in_hmac_mode_writes_the_new_id_and_changes_tokens() -> None:
    old = Masker([KEY_A], "hmac").mask("ip", "192.0.2.1")
    new = Masker([KEY_B, KEY_A], "hmac").mask("ip", "192.0.2.1")
    assert old.startswith("h1.a.") and new.startswith("h1.b.") and _payload(old) != _payload(new)


def test_rotating_from_a_single_key_keeps_its_derived_id() -> None:
    """MASKING_KEY=A then MASKING_KEYS=new:B,A: A's tokens keep opening under A's derived id."""
    a_hex, b_hex = SECRET_A.hex(), SECRET_B.hex()
    first = Settings.from_env({"LOGIN_ETL_MASKING_KEY": a_hex})
    token = Masker(first.masking_keys, "siv").mask("device_id", "dev-1")
    assert token.startswith(f"s1.{derived_key_id(SECRET_A)}.")
    rotated = Settings.from_env({"LOGIN_ETL_MASKING_KEYS": f"new:{b_hex}, {a_hex}"})
    assert [k.key_id for k in rotated.masking_keys] == ["new", derived_key_id(SECRET_A)]
    masker = Masker(rotated.masking_keys, "siv")
    assert masker.unmask(token, "device_id") == "dev-1"
    assert masker.mask("device_id", "dev-1").startswith("s1.new.")


# -- refusals: one clear line, never a secret -----------------------------------------------------


def _refusal(masker: Masker, token: str, field: str = "ip") -> str:
    with pytest.raises(UnmaskError) as info:
        masker.unmask(token, field)
    message = str(info.value)
    assert "\n" not in message
    for secret in (SECRET_A, SECRET_B):
        assert secret.hex() not in message and repr(secret) not in message
    return message


def test_unmask_refuses_hmac_tokens_wrong_keys_fields_and_tampering() -> None:
    siv = Masker([KEY_A], "siv")
    token = siv.mask("ip", "192.0.2.1")
    assert "one-way" in _refusal(siv, Masker([KEY_A], "hmac").mask("ip", "192.0.2.1"))
    assert "wrong key" in _refusal(Masker([MaskingKey("a", SECRET_B)], "siv"), token)
    assert "wrong --field" in _refusal(siv, token, "device_id")
    assert "not a login-etl siv token" in _refusal(siv, "192.0.2.1")
    assert "not a login-etl siv token" in _refusal(siv, "s1.a.")
    for position in range(len("s1.a."), len(token)):
        flipped = "A" if token[position] != "A" else "B"
        assert "altered" in _refusal(siv, token[:position] + flipped + token[position + 1:])
    assert "altered" in _refusal(siv, token[:-4])
    assert "altered" in _refusal(siv, token + "!")


@given(token=st.text(max_size=300))
def test_unmask_of_any_text_is_a_value_or_an_unmask_error(token: str) -> None:
    try:
        Masker([KEY_A], "siv").unmask(token, "ip")
    except UnmaskError as exc:
        assert "\n" not in str(exc)


def test_secrets_are_not_in_reprs() -> None:
    masker = Masker([KEY_A, KEY_B], "siv")
    settings_ = Settings.from_env({"LOGIN_ETL_MASKING_KEYS": f"a:{SECRET_A.hex()}"})
    for text in (repr(masker), str(masker), repr(KEY_A), repr(settings_)):
        assert SECRET_A.hex() not in text and str(SECRET_A) not in text and "\\x00\\x01" not in text
    assert repr(masker) == "Masker(mode='siv', key_ids=('a', 'b'))"


def test_siv_tokens_that_would_not_fit_are_refused_not_truncated() -> None:
    masker = Masker([MaskingKey("k" * 16, SECRET_A)], "siv")
    longest = max(n for n in range(400) if masker.fits("x" * n))
    assert len(masker.mask("device_id", "x" * longest)) <= TOKEN_MAX
    assert not masker.fits("x" * (longest + 1))
    with pytest.raises(TokenTooLong) as info:
        masker.mask("device_id", "x" * (longest + 1))
    assert "x" * 8 not in str(info.value)
    # Every 128-character ASCII device_id (the column limit used by parsing) fits.
    assert longest >= 128
    assert Masker([KEY_A], "hmac").fits("é" * 500)


@pytest.mark.parametrize("field", ["device_id", "user_id", "locale", "device_type", "ip"])
def test_a_lone_surrogate_is_a_rejection_not_a_crash(field: str) -> None:
    """JSON can spell "\\ud800"; such text can be neither masked nor stored as UTF-8."""
    body = {"user_id": "u", "app_version": "1.0", "device_type": "ios", "ip": "192.0.2.1",
            "locale": "DE", "device_id": "d-123456789", field: "dev\ud800ice"}
    for mode in MODES:
        result = parse(Received("m-1", "rh", json.dumps(body), 1_700_000_000_000),
                       Masker([KEY_A], mode))
        assert result == Rejection("m-1", f"invalid_unicode:{field}")
        with pytest.raises(ValueError, match="not valid Unicode") as info:
            Masker([KEY_A], mode).mask("device_id", "dev\ud800ice")
        assert "dev" not in str(info.value).replace("device_id", "")


def test_masker_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Masker([], "hmac")
    with pytest.raises(ValueError, match="mode"):
        Masker([KEY_A], "sha256")
    with pytest.raises(ValueError, match="unique"):
        Masker([KEY_A, MaskingKey("a", SECRET_B)], "siv")
    with pytest.raises(ValueError, match="field"):
        Masker([KEY_A], "hmac").mask("user_id", "x")


# -- key settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("env", "fragment"), [
    ({"LOGIN_ETL_MASKING_KEY": SECRET_A.hex(), "LOGIN_ETL_MASKING_KEYS": f"b:{SECRET_B.hex()}"},
     "not both"),
    ({"LOGIN_ETL_MASKING_KEYS": " , "}, "lists no key"),
    ({"LOGIN_ETL_MASKING_KEYS": f"new:{SECRET_B.hex()},{SECRET_A.hex()[:40]}"}, "entry 2"),
])
def test_key_settings_errors_are_one_line_without_secrets(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert SECRET_A.hex()[:40] not in message and SECRET_B.hex() not in message


def test_empty_key_file_is_an_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "key"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Settings.from_env({"LOGIN_ETL_MASKING_KEY_FILE": str(path)})


def test_bare_base64_entry_gets_a_derived_id() -> None:
    import base64

    entry = "base64:" + base64.b64encode(SECRET_A).decode()
    s = Settings.from_env({"LOGIN_ETL_MASKING_KEYS": f"new:{SECRET_B.hex()},{entry}"})
    assert [k.key_id for k in s.masking_keys] == ["new", derived_key_id(SECRET_A)]
    assert s.masking_keys[1].secret == SECRET_A


# -- the CLI ------------------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env={"LOGIN_ETL_LOG_FORMAT": "json", **env}, input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_keygen_prints_a_usable_key_and_an_id_form() -> None:
    code, out, _ = _run(["keygen"], {})
    assert code == 0 and re.fullmatch(r"[0-9a-f]{64}\n", out)
    assert Settings.from_env({"LOGIN_ETL_MASKING_KEY": out}).writing_key.secret == bytes.fromhex(out)
    code, second, _ = _run(["keygen", "--id", "k2026"], {})
    assert code == 0 and re.fullmatch(r"k2026:[0-9a-f]{64}\n", second) and second[6:] != out
    assert Settings.from_env({"LOGIN_ETL_MASKING_KEYS": second}).writing_key.key_id == "k2026"
    code, _, err = _run(["keygen", "--id", "bad id"], {})
    assert code == 2 and "--id" in err


def test_cli_unmask_one_line_errors_and_batch_from_stdin() -> None:
    env = {"LOGIN_ETL_MASKING_KEYS": f"a:{SECRET_A.hex()}"}
    siv = Masker([KEY_A], "siv")
    tokens = [siv.mask("ip", ip) for ip in ("192.0.2.1", "2001:db8::1")]
    assert _run(["unmask", "--field", "ip", *tokens], env)[:2] == (0, "192.0.2.1\n2001:db8::1\n")
    assert _run(["unmask", "--field", "ip", "-"], env, "\n".join(tokens))[:2] == (
        0, "192.0.2.1\n2001:db8::1\n")
    wrong = {"LOGIN_ETL_MASKING_KEYS": f"a:{SECRET_B.hex()}"}
    cases = [
        (["unmask", "--field", "ip", tokens[0]], wrong, "wrong key"),
        (["unmask", "--field", "device_id", tokens[0]], env, "wrong --field"),
        (["unmask", "--field", "ip", tokens[0][:-2] + "AA"], env, "altered"),
        (["unmask", "--field", "ip", Masker([KEY_A], "hmac").mask("ip", "192.0.2.1")], env,
         "one-way"),
        (["unmask", "--field", "ip", tokens[0], "s1.zz.AAAA"], env, "token 2: "),
    ]
    for args, case_env, fragment in cases:
        code, out, err = _run(args, case_env)
        assert code == 1, (args, err)
        assert out == "" and fragment in err and len(err.strip().splitlines()) == 1, err
        assert SECRET_A.hex() not in err and SECRET_B.hex() not in err
    code, out, err = _run(["unmask", "--field", "ip", tokens[0]], {})
    assert code == 2 and "keygen" in err and len(err.strip().splitlines()) == 1


def _payload(token: str) -> str:
    return token.rsplit(".", 1)[1]
